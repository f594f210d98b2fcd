"""Fixtures of the integration tests."""

from __future__ import annotations

import pytest
import trio.testing


@pytest.fixture
def fast_clock() -> trio.testing.MockClock:
    """Trio time three times as fast as the wall clock, for whole sessions on real sockets.

    Every timer of the bot and of the simulator (quote loop, pings, stall and pong limits,
    funding, the session's duration) runs on `trio.current_time()`, so a 45 s session passes
    in 15 s of wall time with every limit in the same proportion to every other. Unlike
    `autojump_clock`, time never jumps while a task waits on a socket: real I/O on
    127.0.0.1 only looks three times slower than it is."""
    return trio.testing.MockClock(rate=3.0)
