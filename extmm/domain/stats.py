"""Small statistics shared by the REST client, the circuit breaker, the Executor and benches."""

from __future__ import annotations

import math
from collections.abc import Sequence


def nearest_rank(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 1]) of an ascending sequence; None when empty."""
    if not sorted_values:
        return None
    rank = min(max(1, math.ceil(q * len(sorted_values))), len(sorted_values))
    return sorted_values[rank - 1]
