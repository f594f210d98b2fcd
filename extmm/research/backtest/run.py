"""Run the production bot against the in-process simulator in virtual time.

The actor tree and its supervisors are the production ones: `RootSupervisor` is built
exactly as the test harness (`tests/botharness.py`) builds it, over an in-process
`ExchangePort` — the simulator's synthetic flow, or a recording replayed with a
queue-position model (`extmm.sim.replay`). Under trio's `MockClock` (autojump) hours of
market time pass in seconds. A sampler task reads the root's telemetry every
`sample_s` of virtual time; an `ObservedPort` counts what the actors receive (market
events: L2 level updates, trade prints, marks, funding updates; and stream messages) and
records our fills. Nothing in the bot is changed or patched.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio.testing

from extmm.config import BotConfig, PosFloat
from extmm.domain.markouts import MarkoutDone, MarkoutTracker
from extmm.ops.telemetry import AccountStats, BookStats, ExecStats
from extmm.research.backtest.metrics import PNL_KEYS, MarketSample
from extmm.research.backtest.observe import ObservedFill, ObservedPort
from extmm.research.backtest.options import BacktestError, BacktestOptions, World
from extmm.research.backtest.result import BacktestResult
from extmm.venue.signing import is_ours
from supervisors.root import RootSupervisor, RunSummary, StartupError

# -- worlds ----------------------------------------------------------------------------------


@asynccontextmanager
async def synthetic_world(cfg: BotConfig, opts: BacktestOptions) -> AsyncIterator[World]:
    """The simulator's own synthetic flow for every enabled market, in this trio run."""
    from extmm.markets import bundled_markets
    from extmm.sim.inproc import InProcessVenue
    from extmm.sim.launch import build_engine
    from extmm.sim.runner import SimRunner

    names = [m.name for m in cfg.enabled_markets]
    unknown = [n for n in names if n not in bundled_markets()]
    if unknown:
        raise BacktestError(
            f"the simulator has no market {', '.join(unknown)} (bundled: {', '.join(sorted(bundled_markets()))}); "
            "replay a recording of it instead"
        )
    engine = build_engine(
        markets=names,
        seed=opts.seed,
        start_ms=opts.start_ms,
        verify_signatures=False,
        flow=opts.flow,
    )
    info = engine.create_account(balance=opts.balance_usd)
    runner = SimRunner(
        engine,
        seed=opts.seed,
        tick_s=opts.runner_tick_s,
        book_interval_s=opts.book_interval_s,
        market_data_latency_s=(opts.feed_latency_ms or 0.0) / 1000.0,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        venue = InProcessVenue(runner, info, latency_s=opts.order_latency_ms / 1000.0)
        details: dict[str, Any] = {"seed": opts.seed, "flow": opts.flow, "order_latency_ms": opts.order_latency_ms,
                                   "feed_latency_ms": opts.feed_latency_ms}
        yield World(
            port=venue,
            now_ms=runner.now_ms,
            finished=trio.Event(),
            mode="synthetic",
            details=details,
        )
        nursery.cancel_scope.cancel()
        # How our resting orders were filled (see SimEngine.maker_fills), as replays report it.
        details["fills_by_reason"] = dict(sorted(engine.maker_fills.items()))


@asynccontextmanager
async def replay_world(cfg: BotConfig, opts: BacktestOptions) -> AsyncIterator[World]:
    from extmm.sim.replay import replay_venue

    async with replay_venue(
        opts.replay,
        markets=[m.name for m in cfg.enabled_markets],
        balance=opts.balance_usd,
        order_latency_s=opts.order_latency_ms / 1000.0,
        feed_latency_s=None if opts.feed_latency_ms is None else opts.feed_latency_ms / 1000.0,
        # The replay's runner only serves timers (expiries, DMS, funding) and the account stream,
        # which order actions and fills publish at once; the recorded feed does not need its ticks.
        runner_tick_s=max(opts.runner_tick_s, 0.5),
        seed=opts.seed,
        from_ms=opts.replay_from_ms,
        book_interval_ms=int(round(opts.book_interval_s * 1000)),
    ) as replay:
        details: dict[str, Any] = {
            "replay": [str(p) for p in opts.replay],
            "order_latency_ms": opts.order_latency_ms,
            "feed_latency_ms": opts.feed_latency_ms,
        }
        def diagnose(market: str) -> str | None:
            bad = replay.engine.bad_book.get(market)
            if bad is not None:
                return f"the recording's book frames cannot be applied: {bad}"
            if not replay.driver.stats.market_frames.get(market):
                return "the recording has no book frames for it (in the data read so far)"
            return None

        yield World(
            port=replay.venue,
            now_ms=replay.now_ms,
            finished=replay.finished,
            mode="replay",
            details=details,
            diagnose=diagnose,
        )
        # After the run: how our fills came about, and what the recording held.
        details["fills_by_reason"] = dict(replay.engine.fills)
        details["replayed_frames"] = dict(replay.driver.stats.frames)
        details["replay_bad_frames"] = replay.driver.stats.bad_frames
        details["replay_book_gaps"] = replay.driver.stats.book_gaps
        details["replay_conflated_frames"] = replay.driver.stats.conflated_frames
        # A recorded book frame the engine could not apply leaves that market's book invalid
        # (no quotes) until the recording's next snapshot (`backtest` says so on stderr).
        details["replay_book_errors"] = dict(replay.engine.bad_book)


# -- the run ----------------------------------------------------------------------------------


class MarkoutProbe:
    """Settles every fill's markouts: reads the bot's book mid exactly at fill time + 1/10/60 s.

    One shared pure tracker per market (`extmm.domain.markouts`); times are virtual seconds
    from the bot's receipt of the fill. Fills whose horizon lies after the end stay unsettled.
    """

    def __init__(self, root: RootSupervisor, t0: float) -> None:
        self.root = root
        self.t0 = t0
        self.trackers: dict[str, MarkoutTracker] = {}
        self.done: list[MarkoutDone] = []
        self._due: list[tuple[float, str]] = []  # heap of (trio time, market)
        self._wake = trio.Event()

    def on_fill(self, fill: ObservedFill) -> None:
        tracker = self.trackers.setdefault(fill.market, MarkoutTracker())
        if not fill.price > 0:
            return
        t = fill.at - self.t0
        tracker.add_fill(fill.trade_id, t, 1 if fill.side == "BUY" else -1, float(fill.price))
        for horizon in tracker.horizons_s:
            heapq.heappush(self._due, (fill.at + horizon, fill.market))
        self._wake.set()

    async def run(self) -> None:
        while True:
            if not self._due:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            await trio.sleep_until(self._due[0][0])
            now = trio.current_time()
            markets: set[str] = set()
            while self._due and self._due[0][0] <= now:
                markets.add(heapq.heappop(self._due)[1])
            for market in sorted(markets):
                book = self.root.view.get(market, BookStats)
                if book is not None and book.valid and book.mid is not None:
                    self.done += self.trackers[market].observe_mid(now - self.t0, book.mid)


class Sampler:
    """Reads the root's telemetry for every market (no actor is touched)."""

    def __init__(self, root: RootSupervisor, markets: tuple[str, ...], t0: float) -> None:
        self.root = root
        self.markets = markets
        self.t0 = t0
        self.samples: list[MarketSample] = []

    def sample(self) -> None:
        t = trio.current_time() - self.t0
        if self.samples and self.samples[-1].t == t:
            del self.samples[-len(self.markets) :]  # one sample per instant: the newest wins
        view = self.root.view
        for market in self.markets:
            book = view.get(market, BookStats)
            ex = view.get(market, ExecStats)
            acc = view.get(market, AccountStats)
            bids = [float(o.price) for o in ex.open_orders if o.side == "BUY"] if ex else []
            asks = [float(o.price) for o in ex.open_orders if o.side == "SELL"] if ex else []
            position = float(acc.position) if acc else 0.0
            mid = book.mid if book is not None and book.valid else None
            self.samples.append(
                MarketSample(
                    t=t,
                    market=market,
                    mid=mid,
                    bid=max(bids) if bids else None,
                    ask=min(asks) if asks else None,
                    position=position,
                    position_usd=position * mid if mid is not None else (acc.position_usd if acc else 0.0),
                    pnl={k: float(acc.pnl.get(k, 0)) for k in PNL_KEYS}
                    if acc
                    else dict.fromkeys(PNL_KEYS, 0.0),
                )
            )

    async def run(self, interval_s: float) -> None:
        while True:
            self.sample()
            await trio.sleep(interval_s)


async def run_backtest(cfg: BotConfig, opts: BacktestOptions) -> BacktestResult:
    """Run the bot for `opts.hours` of virtual time (or until a replay ends); shut it down cleanly.

    Call under `MockClock(autojump_threshold=0)` (see `backtest`) for virtual time; under
    the real clock it runs in real time.
    """
    cfg = attrs.evolve(
        cfg,
        book_ready_timeout_s=PosFloat(opts.book_ready_timeout_s)
        if opts.book_ready_timeout_s is not None
        else cfg.book_ready_timeout_s,
        on_missing_book=opts.on_missing_book,
    )
    world_cm = replay_world(cfg, opts) if opts.replay else synthetic_world(cfg, opts)
    async with world_cm as world:
        port = ObservedPort(world.port)
        journal = _backtest_journal(cfg, opts, world)
        root = RootSupervisor(
            cfg=cfg, port=port, network="backtest", epoch_ms=world.now_ms, rng=random.Random(opts.seed),
            journal=journal,
        )
        root.book_probe_port = world.port  # the startup book check is not market data the bot traded on
        stop = trio.Event()
        done = trio.Event()
        ready = _Ready()
        result: list[RunSummary] = []
        began = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def run_root() -> None:
                try:
                    result.append(await root.run(stop=stop, task_status=ready))
                finally:
                    done.set()

            root_scope = trio.CancelScope()

            async def guarded_root_explained(inner: Callable[[], Any]) -> None:
                try:
                    await inner()
                except StartupError as exc:  # e.g. no market has a valid book: say why, per market
                    notes = [f"{m}: {n}" for m in (m.name for m in cfg.enabled_markets) if (n := world.diagnose(m))]
                    if not notes:
                        raise
                    raise StartupError(f"{exc} [{'; '.join(notes)}]") from exc

            async def guarded_root() -> None:
                with root_scope:
                    await run_root()

            nursery.start_soon(guarded_root_explained, guarded_root)
            # Startup races the end of the data and --hours: neither waits for a bot that
            # never becomes ready (a market without a valid book is settled by the root's
            # deadline; this is the backstop).
            with trio.move_on_after(opts.duration_s):
                await _first(ready.event.wait, world.finished.wait, done.wait)
            if not ready.event.is_set():
                root_scope.cancel()
                await done.wait()
                nursery.cancel_scope.cancel()
                why = "the data ended" if world.finished.is_set() else f"--hours {opts.hours:g} passed"
                raise BacktestError(
                    f"{why} {trio.current_time() - began:.1f} virtual seconds in, before the bot was ready "
                    f"(markets: {', '.join(m.name for m in cfg.enabled_markets)})"
                )
            t0 = trio.current_time()
            sampler = Sampler(root, tuple(root.markets), t0)
            nursery.start_soon(sampler.run, opts.sample_s)
            markouts = MarkoutProbe(root, t0)
            for fill in port.fills:  # (none yet: the bot quotes only once ready)
                markouts.on_fill(fill)
            port.on_fill = markouts.on_fill
            nursery.start_soon(markouts.run)
            with trio.move_on_after(opts.duration_s):  # --hours of trading, counted from ready
                await world.finished.wait()
            virtual_seconds = trio.current_time() - t0
            stop.set()
            await done.wait()
            sampler.sample()  # the final state, after shutdown
            nursery.cancel_scope.cancel()
        if root.left_out:
            world.details["markets_left_out"] = {m: _explained(world, m, why) for m, why in root.left_out.items()}
        # The venue's own word on what is left open, independent of the bot's bookkeeping.
        prefix = cfg.external_id_prefix
        venue_open = [o for o in await world.port.get_open_orders() if is_ours(o.external_id, prefix)]
        if journal is not None:
            journal.release()
    return BacktestResult(
        summary=result[0],
        samples=sampler.samples,
        fills=port.fills,
        market_events_by_kind=dict(port.market_events),
        messages_by_kind=dict(port.messages),
        orders_placed=port.orders_placed,
        virtual_seconds=virtual_seconds,
        started_at=t0,
        limit_usd=cfg.risk.max_net_position_usd,
        quote_cap_usd=max(m.quote_notional_cap_usd for m in cfg.enabled_markets),
        mode=world.mode,
        details=world.details,
        venue_open_orders=len(venue_open),
        markouts=markouts.done,
        order_latency_ms=opts.order_latency_ms,
        feed_latency_ms=opts.feed_latency_ms,
    )


def _backtest_journal(cfg: BotConfig, opts: BacktestOptions, world: World) -> Any:
    """The journal of a backtest: virtual timestamps, written inline (deterministic under MockClock)."""
    if opts.journal_path is None:
        return None
    from extmm.journal.session import SessionMeta, open_session

    meta = SessionMeta.for_config(cfg, kind="backtest", network="backtest", account=f"{world.mode} seed {opts.seed}")
    return open_session(opts.journal_path, meta, clock=lambda: world.now_ms() / 1000.0, on_thread=False, lock=False,
                        commit_every_s=5.0)


def _explained(world: World, market: str, why: str) -> str:
    note = world.diagnose(market)
    return why if note is None else f"{why}; {note}"


class _Ready:
    """A `task_status` for `RootSupervisor.run` that only records readiness."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def started(self, value: Any = None) -> None:
        self.event.set()


async def _first(*waits: Callable[[], Any]) -> None:
    """Return as soon as any of `waits` returns."""
    async with trio.open_nursery() as nursery:

        async def one(wait: Callable[[], Any]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(one, wait)


def backtest(cfg: BotConfig, opts: BacktestOptions) -> BacktestResult:
    """`run_backtest` in a fresh trio run under an autojumping `MockClock`."""
    from extmm.research.backtest.determinism import seeded_scheduling
    from extmm.sim.clock import VirtualClock

    clock = VirtualClock()
    with seeded_scheduling(opts.seed):
        return trio.run(run_backtest, cfg, opts, clock=clock)
