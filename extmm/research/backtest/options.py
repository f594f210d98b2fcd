"""How a backtest runs (`BacktestOptions`) and what it runs against (`World`).

`extmm.research.backtest.run` builds a `World` (synthetic flow or a replayed recording)
from the options and runs the production bot in it; `extmm.research.backtest.result`
holds what comes out.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import attrs
import trio

from extmm.venue.port import ExchangePort

START_MS = 1_790_000_000_000  # synthetic runs start here: results never depend on the wall clock


DEFAULT_ORDER_LATENCY_MS = 20.0
DEFAULT_FEED_LATENCY_MS = 50.0


class BacktestError(Exception):
    """The backtest cannot run as configured (e.g. a market the simulator does not know)."""


@attrs.frozen(kw_only=True)
class BacktestOptions:
    """How to run. `hours` bounds the virtual duration (a replay also ends with its data).

    Synthetic mode: `seed` drives the simulator's flow and the bot's jitter. Replay mode
    (`replay` = recording files). In both, `order_latency_ms` delays every order action on
    its way to the matching engine, and `feed_latency_ms` delivers market data that long
    after it happened (replay: after its exchange timestamp, None: at the recorded receive
    time; synthetic: every public stream message; account updates are not delayed).
    The defaults (20 ms order, 50 ms feed) are a realistic colocated-less setup: with 0 ms
    the bot re-quotes inside one aggressive sweep and is filled again and again, which
    inflates fills (issue #15: 48 of 70 fills in bursts at 0 ms, none at 20/50 ms).
    """

    hours: float = 1.0
    seed: int = 0
    sample_s: float = 1.0
    start_ms: int = START_MS
    balance_usd: Decimal = Decimal(100_000)
    replay: tuple[Path, ...] = ()
    order_latency_ms: float = DEFAULT_ORDER_LATENCY_MS
    feed_latency_ms: float | None = DEFAULT_FEED_LATENCY_MS
    replay_from_ms: int | None = None  # replay: start this late in the data (epoch ms; walk-forward)
    book_ready_timeout_s: float | None = None  # None: the config's book_ready_timeout_s
    on_missing_book: Literal["skip", "fail"] = "skip"  # a market without a valid book: "skip" it or "fail" the run
    flow: str = "default"  # synthetic mode: the simulator's flow preset (extmm.sim.flow.FLOW_PRESETS)
    runner_tick_s: float = 0.1  # how often the simulator advances its engine and publishes
    # Book frame cadence of the venue (Extended: 100 ms, SPEC §5.3): the simulator's push
    # interval; a replay merges the recorded deltas of each window into one (0: every frame).
    book_interval_s: float = 0.1
    journal_path: Path | None = None  # write the trading journal here (same schema as live)

    @property
    def duration_s(self) -> float:
        return self.hours * 3600.0


@attrs.frozen(kw_only=True)
class World:
    """What a backtest runs against: a port, the venue's epoch clock, when the data ends."""

    port: ExchangePort
    now_ms: Callable[[], int]
    finished: trio.Event  # set when a replay runs out of data (never for synthetic flow)
    mode: str  # synthetic | replay
    details: dict[str, Any] = attrs.Factory(dict)
    # Why a market's book may never have become valid, as the world saw it (None: no idea).
    diagnose: Callable[[str], str | None] = lambda _market: None
