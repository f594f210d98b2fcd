"""Shared test setup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio.testing


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers more than the usable cores. About a third of the default run's
    time is real time spent waiting (whole sessions and bot processes on 127.0.0.1: a kill -9
    and restart, two journal sessions, the dead man's switch), which extra workers fill with
    CPU-bound tests. On 2 cores, one after the other: 3 workers 190 s, 4 workers 161 s."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores + 2


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


@pytest.fixture
def fast_clock() -> trio.testing.MockClock:
    """Trio time three times as fast as the wall clock, for whole sessions on real sockets.

    Every timer of the bot and of the simulator (quote loop, pings, stall and pong limits,
    funding, token buckets, the session's duration) runs on `trio.current_time()`, so a 45 s
    session passes in 15 s of wall time with every limit in the same proportion to every
    other. Unlike `autojump_clock`, time never jumps while a task waits on a socket: real
    I/O on 127.0.0.1 only looks three times slower than it is."""
    return trio.testing.MockClock(rate=3.0)
