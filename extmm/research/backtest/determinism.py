"""Deterministic trio scheduling for backtests: same inputs and seed, same run.

trio randomises the order in which tasks that became runnable together are stepped
(`trio._core._run`: each batch is reversed with probability ½ using the module's private
`random.Random` `_r`, or — when `_ALLOW_DETERMINISTIC_SCHEDULING` is set, the hook
pytest-trio/Hypothesis use — sorted by task creation order and shuffled with `_r`). The
order is legitimate concurrency, but it changes which actor sees what first, so two
backtests with one seed diverged (different orders, fills, PnL).

`seeded_scheduling(seed)` turns on trio's own deterministic mode and seeds `_r` from the
run's seed for the duration of one `trio.run`, then restores both. The schedule is still
shuffled (the bot is exercised under interleavings), but the shuffle is a function of the
seed: a batch is sorted by task creation order before `_r.shuffle`, and tasks are created
in the same order in every run. Only the backtest uses this; the live bot never does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import trio._core._run as _trio_run


@contextmanager
def seeded_scheduling(seed: int) -> Iterator[None]:
    """Make trio's task scheduling a function of `seed` while the block runs (not reentrant)."""
    saved_flag = _trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    saved_state = _trio_run._r.getstate()
    # A derived seed: the schedule does not replay the exact stream the flow's own Random uses.
    _trio_run._r.seed(random.Random(f"trio-schedule/{seed}").getrandbits(64))
    _trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    try:
        yield
    finally:
        _trio_run._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag  # type: ignore[misc]
        _trio_run._r.setstate(saved_state)
