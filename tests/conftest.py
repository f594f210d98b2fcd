"""Shared test setup."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test (and every bot process it starts) gets its own default trading journal
    folder, so runs never write the operator's ~/.local/state nor collide on one journal."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


@pytest.fixture(autouse=True)
def _loguru_enabled():
    """Commands run in-process (`tune`, `bench replay`) silence loguru for the rest of their
    process with `logger.disable("")`; a later test in the same worker must still see logs."""
    from loguru import logger

    logger.enable("")
    yield
    logger.enable("")
