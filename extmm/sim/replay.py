"""Replay a market-data recording as a venue: the port and its wiring.

The fill model is `extmm.sim.replay_engine.ReplayEngine` (our orders queued in the
recorded book); the walk through the recording is `extmm.sim.replay_driver.ReplayDriver`.
`replay_venue(...)` wires engine, runner, driver and an `ExchangePort` (`ReplayVenue`)
for `extmm.research.backtest`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import trio

from extmm.sim.engine import EngineConfig
from extmm.sim.inproc import InProcessStream, InProcessVenue, PublicStreams
from extmm.sim.recording import RecordingError, RecordingReader, expand_parts
from extmm.sim.replay_driver import ReplayDriver
from extmm.sim.replay_engine import ReplayEngine
from extmm.sim.runner import SimRunner
from extmm.venue.errors import OrderRejected


class ReplayVenue(PublicStreams):
    """`ExchangePort`: public streams from the recording, everything else from the engine."""

    def __init__(self, inner: InProcessVenue, driver: ReplayDriver) -> None:
        self._inner = inner
        self._driver = driver

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def account_id(self) -> int:
        return self._inner.account_id

    @asynccontextmanager
    async def _stream(self, kind: str, market: str, *, check_seq: bool) -> AsyncIterator[InProcessStream]:
        if market not in self._driver.markets:
            raise OrderRejected(1001, f"market {market!r} not found", 404)
        sub = self._driver.subscribe(kind, market)
        try:
            yield InProcessStream(sub, check_seq=check_seq)
        finally:
            self._driver.unsubscribe(sub)


@attrs.frozen(kw_only=True)
class Replay:
    venue: ReplayVenue
    engine: ReplayEngine
    runner: SimRunner
    driver: ReplayDriver
    reader: RecordingReader

    @property
    def finished(self) -> trio.Event:
        return self.driver.finished

    def now_ms(self) -> int:
        return self.runner.now_ms()


def _start_ms(reader: RecordingReader) -> int:
    for record in reader:
        t = record.get("t")
        if isinstance(t, int) and record.get("k") != "header":
            return t
    raise RecordingError(f"{reader.paths[0]}: the recording holds no frames")


@asynccontextmanager
async def replay_venue(
    paths: Sequence[Path | str],
    *,
    markets: Sequence[str] | None = None,
    balance: Decimal | int = Decimal(100_000),
    order_latency_s: float = 0.0,
    feed_latency_s: float | None = None,
    runner_tick_s: float = 0.1,
    seed: int = 0,
    maker_fee: Decimal = Decimal("0.0000"),
    taker_fee: Decimal = Decimal("0.00025"),
    from_ms: int | None = None,
    book_interval_ms: int = 0,
) -> AsyncIterator[Replay]:
    """Engine, runner, driver and port over a recording, running in this trio run's nursery."""
    files = expand_parts(paths)
    names = list(markets) if markets is not None else list(RecordingReader(files).markets)
    probe = RecordingReader(files)
    missing = [n for n in names if n not in probe.markets]
    if missing:
        raise RecordingError(
            f"market(s) {', '.join(missing)} not in the recording (it has {', '.join(sorted(probe.markets)) or 'none'})"
        )
    start_ms = _start_ms(probe)
    if from_ms is not None and from_ms > start_ms:
        # A later window (walk-forward): what comes before `from_ms` is applied at once (books,
        # marks, funding; nobody subscribed yet), and the run starts at `from_ms`.
        start_ms = from_ms
    config = EngineConfig(
        seed=seed,
        verify_signatures=False,
        strict_nonce=False,
        synthetic_flow=False,
        maker_fee=maker_fee,
        taker_fee=taker_fee,
    )
    engine = ReplayEngine(config, start_ms=start_ms, markets=[probe.markets[n] for n in names])
    info = engine.create_account(balance=balance)
    # The recorded book reaches the bot through the driver; the runner's own book flush has
    # no subscriber here (it only drains the engine's level changes of our orders), so it
    # need not wake the runner between its ticks.
    runner = SimRunner(engine, seed=seed, tick_s=runner_tick_s, book_interval_s=runner_tick_s)
    reader = RecordingReader(files)
    driver = ReplayDriver(
        engine, runner, reader, markets=names, start_ms=start_ms, feed_latency_s=feed_latency_s,
        book_interval_ms=book_interval_ms,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await nursery.start(driver.run)
        venue = ReplayVenue(InProcessVenue(runner, info, latency_s=order_latency_s), driver)
        yield Replay(venue=venue, engine=engine, runner=runner, driver=driver, reader=reader)
        nursery.cancel_scope.cancel()
