"""Paper trading on live market data: the embedded simulator driven by a venue's public side.

`serve_market_data_simulator(source=(REST_URL, STREAM_URL), ...)` builds a simulator whose
markets and trading configs come from the source's public `GET /info/markets` (SPEC §3.1)
— any market the venue lists, not only the bundled ones — and whose books, prints, mark
and funding come from the source's public v1 streams (SPEC §5.3–§5.7). Our orders rest in
the engine as usual (accounts, fees, margin, the account stream are the simulator's) and
are matched against the live flow with the replay's queue-position model
(`extmm.sim.replay_engine.ReplayEngine`: we join the back of the queue; prints at our price eat
the queue ahead first; prints through our price fill us; a crossing post-only is
rejected). The public streams the bot subscribes to carry the source's frames,
re-sequenced per connection, through `ReplayDriver`'s delivery (a new subscriber waits
for, or is given, a snapshot). Credentials are never needed: the source is only read.

Source streams reconnect with capped backoff; while a source book is down the local book
is invalid (no fills from it, no frames delivered) until its next snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import trio
from loguru import logger

from extmm.domain.backoff import Backoff
from extmm.sim.engine import EngineConfig
from extmm.sim.replay_driver import ReplayDriver
from extmm.sim.replay_engine import ReplayEngine
from extmm.sim.server import SimHandle, serve_simulator
from extmm.sim.subscription import Subscription
from extmm.venue.errors import RECOVERABLE_STREAM_ERRORS as RECOVERABLE
from extmm.venue.errors import VenueError
from extmm.venue.network import NetworkVenue

KINDS = ("orderbook", "trades", "mark", "funding")
SOURCE_RECONNECT = Backoff(initial=0.5, factor=2.0, cap=10.0, jitter=0.0)  # a source stream failed


class MarketDataError(Exception):
    """The source venue cannot supply what the paper run needs (markets unlisted, unreachable)."""


async def source_markets(source: NetworkVenue, names: Sequence[str]) -> list[dict[str, Any]]:
    """The source's market objects for `names`, in that order."""
    try:
        listed = {m.name: m for m in await source.get_markets()}
    except VenueError as exc:
        raise MarketDataError(f"GET {source.rest_url}/info/markets failed: {exc}") from None
    missing = [n for n in names if n not in listed]
    if missing:
        raise MarketDataError(
            f"market(s) {', '.join(missing)} not listed by {source.rest_url} "
            f"(it lists {', '.join(sorted(listed)[:12])}{' …' if len(listed) > 12 else ''})"
        )
    return [dict(listed[n].raw) for n in names]


class LiveDriver(ReplayDriver):
    """`ReplayDriver` fed frame by frame from live streams instead of walking a recording."""

    def subscribe(self, kind: str, market: str | None) -> Subscription:
        if market is None or market not in self.markets:
            sub = Subscription(kind, market=market, capacity=1)  # type: ignore[arg-type]
            sub.close(1008, "market-data mode serves one market per connection, listed markets only")
            return sub
        return super().subscribe(kind, market)

    def on_frame(self, kind: str, market: str, frame: dict[str, Any]) -> None:
        now_ms = self.runner.now_ms()
        self._last_world_ms = max(self._last_world_ms, now_ms)
        self._apply(kind, market, frame, now_ms, trio.current_time())
        self.stats.frames[kind] += 1
        self.stats.last_ms = now_ms

    def connection_lost(self, market: str) -> None:
        """The source book stream dropped: the local book is unknown until a new snapshot."""
        self._last_seq[market] = None
        self.engine.books[market].invalidate()


async def pump(source: NetworkVenue, driver: LiveDriver, kind: str, market: str) -> None:
    """One source stream into the driver, forever (reconnecting)."""
    opener = {
        "orderbook": source.orderbook_stream,
        "trades": source.public_trades_stream,
        "mark": source.mark_price_stream,
        "funding": source.funding_stream,
    }[kind]
    failures = 0
    while True:
        try:
            async with opener(market) as stream:
                if kind == "orderbook":
                    driver.connection_lost(market)  # a fresh connection starts with a snapshot
                while True:
                    msg = await stream.receive()
                    failures = 0
                    frame: dict[str, Any] = {"data": msg.data, "ts": msg.ts, "seq": msg.seq}
                    if msg.type is not None:
                        frame["type"] = msg.type
                    driver.on_frame(kind, market, frame)
        except RECOVERABLE as exc:
            failures += 1
            if kind == "orderbook":
                driver.connection_lost(market)
            delay = SOURCE_RECONNECT.delay(failures - 1)
            logger.warning("market data {}/{}: source stream failed ({}); again in {:.1f}s", kind, market, exc, delay)
            await trio.sleep(delay)


async def serve_market_data_simulator(
    *,
    source: tuple[str, str],
    markets: Sequence[str],
    seed: int = 0,
    balance: Decimal | int | str = Decimal(10_000),
    host: str = "127.0.0.1",
    port: int = 0,
    maker_fee: Decimal | None = None,
    taker_fee: Decimal | None = None,
    task_status: trio.TaskStatus[SimHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The embedded simulator over `source`'s live public data; `task_status.started(handle)`
    once it listens and every source stream of every market has been opened."""
    rest_url, stream_url = source
    async with NetworkVenue(rest_url, stream_url, None, user_agent="extmm-paper/market-data") as public:
        raws = await source_markets(public, markets)
        start_ms = int(time.time() * 1000)  # order expiries are wall-clock epoch times
        config = EngineConfig(seed=seed, synthetic_flow=False, strict_nonce=False)
        engine = ReplayEngine(config, start_ms=start_ms, markets=raws)
        async with trio.open_nursery() as nursery:
            handle: SimHandle = await nursery.start(
                lambda task_status: serve_simulator(
                    engine=engine, start_ms=start_ms, seed=seed, balance=balance, host=host, port=port,
                    maker_fee=maker_fee, taker_fee=taker_fee, task_status=task_status,
                )
            )
            driver = LiveDriver(engine, handle.runner, None, markets=list(markets), start_ms=start_ms)  # type: ignore[arg-type]
            handle.runner.public_feed = driver
            for market in markets:
                for kind in KINDS:
                    nursery.start_soon(pump, public, driver, kind, market)
            logger.info("paper trading on live market data from {} ({})", rest_url, ", ".join(markets))
            task_status.started(handle)
