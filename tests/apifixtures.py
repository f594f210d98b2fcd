"""The real Extended API payloads (copied from shared/extended-api/fixtures; see its README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "extended-api"


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())
