"""Run one virtual-time scenario: the whole bot against the in-process simulator.

The bot (root supervisor and every actor) trades through a `RecordingPort` around the
in-process venue while the scenario injects faults; every 100 ms of virtual time the
simulator's truth and the bot's view are sampled into the invariant checker. After the
scenario the faults are cleared, the bot settles, stops, and must leave nothing open.
Under `trio.testing.MockClock(autojump_threshold=0)` an hour passes in about a minute.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import trio
import trio.testing

from extmm.config import BotConfig, parse_config
from extmm.ops.telemetry import AccountStats, ExecStats
from extmm.research.chaos.invariants import (
    InvariantChecker,
    InvariantReport,
    MarketLimits,
    MarketObservation,
    Tolerances,
)
from extmm.research.chaos.recording import RecordingPort
from extmm.research.chaos.scenarios import SCENARIOS, ChaosContext, Scenario
from extmm.sim.inproc import inprocess_simulator
from extmm.sim.model import TradeEvent
from extmm.venue.port import ExchangePort
from extmm.venue.signing import is_ours
from supervisors.events import ChildFailed
from supervisors.root import RootSupervisor, RunSummary

START_MS = 1_790_000_000_000
SAMPLE_EVERY_S = 0.1
UNREACHABLE_AFTER_S = 1.0  # no request answered for this long, some refused: an outage
INJECTED = "InjectedFault"


def chaos_config_data(**overrides: Any) -> dict[str, Any]:
    """The drills' config as JSON data: both bundled markets, small quotes, tight limits."""
    data: dict[str, Any] = {
        "stp": "ACCOUNT",
        "quote_loop_ms": 250,
        "replace_coalesce_ms": 200,
        "dead_mans_switch_sec": 30,
        "risk": {"max_net_position_usd": 100, "max_open_orders": 4, "min_balance_usd": 50, "stale_book_ms": 3000},
        "markets": [
            {"name": "BTC-USD", "base_spread": 0.0002, "alpha": 0.2, "quote_notional_cap_usd": 50,
             "replace_threshold_bps": 2, "min_order_size": 0.0001},
            {"name": "ETH-USD", "base_spread": 0.0002, "alpha": 0.2, "quote_notional_cap_usd": 50,
             "replace_threshold_bps": 2, "min_order_size": 0.01},
        ],
    }
    data.update(overrides)
    return data


def chaos_config(**overrides: Any) -> BotConfig:
    return parse_config(chaos_config_data(**overrides))


def market_limits(cfg: BotConfig) -> dict[str, MarketLimits]:
    return {
        m.name: MarketLimits(
            max_net_position_usd=cfg.risk.max_net_position_usd,
            quote_notional_usd=m.quote_notional_cap_usd,
            max_open_orders=cfg.risk.max_open_orders,
            stale_after_s=cfg.risk.stale_book_ms / 1000.0,
        )
        for m in cfg.enabled_markets
    }


@attrs.frozen(kw_only=True)
class ScenarioResult:
    scenario: str
    seed: int
    duration_s: float
    report: InvariantReport
    restarts: int
    breaker_trips: int
    crashes: int  # unexpected exceptions out of the bot (root.run raised, process died)
    crash_details: tuple[str, ...] = ()
    kills: int = 0
    actor_failures: int = 0  # actor failures not injected by the drill, survived by supervision
    actor_failure_details: tuple[str, ...] = ()
    halted: tuple[str, ...] = ()
    clean_exit: bool = True  # stopped with nothing of ours open on the venue
    orders_sent: int = 0
    fills: int = 0
    faults: dict[str, int] = attrs.Factory(dict)
    extra: dict[str, Any] = attrs.Factory(dict)

    @property
    def passed(self) -> bool:
        return self.report.passed and self.crashes == 0 and self.clean_exit

    def to_json(self) -> dict[str, Any]:
        r = self.report
        out: dict[str, Any] = {
            "scenario": self.scenario,
            "passed": self.passed,
            "orphan_orders": r.orphan_orders,
            "duplicate_orders": r.duplicate_orders,
            "position_drift": r.position_drift,
            "max_net_notional_usd": r.max_net_notional_usd,
            "limit_usd": r.limit_usd,
            "restarts": self.restarts,
            "breaker_trips": self.breaker_trips,
            "crashes": self.crashes,
            "lost_cancels": r.lost_cancels,
            "seed": self.seed,
            "duration_s": self.duration_s,
            "kills": self.kills,
            "actor_failures": self.actor_failures,
            "halted": list(self.halted),
            "stale_quotes": r.stale_quotes,
            "max_open_orders": r.max_open_orders,
            "open_order_breaches": r.open_order_breaches,
            "notional_breaches": r.notional_breaches,
            "position_comparisons": r.comparisons,
            "quoting_share": r.quoting_share,
            "clean_exit": self.clean_exit,
            "orders_sent": self.orders_sent,
            "fills": self.fills,
            "faults": {k: v for k, v in self.faults.items() if v},
        }
        out.update(self.extra)
        if self.crash_details:
            out["crash_details"] = list(self.crash_details)
        if self.actor_failure_details:
            out["actor_failure_details"] = list(self.actor_failure_details)
        out["violations"] = list(r.violations)
        return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def _signed_position(engine: Any, account_id: int, market: str) -> Decimal:
    total = Decimal(0)
    for p in engine.positions(account_id, market):
        total += p.size if p.side == "LONG" else -p.size
    return total


class ChaosRun:
    """One bot against one in-process simulator, observed by the invariant checker.

    Use `run_scenario` for the whole drill; the parts are public for the soak test.
    """

    def __init__(
        self,
        *,
        cfg: BotConfig,
        seed: int,
        settle_s: float = 1.0,
        wrap_venue: Callable[[ExchangePort], ExchangePort] | None = None,
        wrap_port: Callable[[RecordingPort], ExchangePort] | None = None,
        flow: str = "default",
    ) -> None:
        """`wrap_venue` goes between the simulator and the recording port, `wrap_port`
        between the recording port and the bot (tests plant faults of the bot's own there)."""
        self.cfg = cfg
        self.wrap_venue = wrap_venue
        self.wrap_port = wrap_port
        self.seed = seed
        self.flow = flow  # the simulator's flow preset (extmm.sim.flow.FLOW_PRESETS)
        self.markets = tuple(m.name for m in cfg.enabled_markets)
        self.tolerances = Tolerances(settle_s=settle_s)
        self.checker = InvariantChecker(market_limits(cfg), self.tolerances)
        self.crashes: list[str] = []
        self.actor_failures: list[str] = []
        self.summary: RunSummary | None = None
        self.root: RootSupervisor | None = None
        self.port: RecordingPort | None = None
        self.runner: Any = None
        self.stop = trio.Event()
        self.stopped = trio.Event()
        self.last_fill_at: dict[str, float] = {}
        self.fills = 0
        self.account_id = 0

    # -- observation --------------------------------------------------------------------
    def observe(self) -> None:
        assert self.root is not None and self.port is not None
        now = trio.current_time()
        engine = self.runner.engine
        account_id = self.account_id
        prefix = self.cfg.external_id_prefix
        root, port = self.root, self.port
        active = [m for m in self.markets if m not in root.halted]
        # Every active market's Account has been receiving (from the one shared connection,
        # which the recording port sees upstream) for the settle time.
        streams_up = (
            port.account_streams_up(for_at_least_s=self.tolerances.settle_s) >= 1
            and root.account_hub.subscriptions_up(for_at_least_s=self.tolerances.settle_s) >= len(active)
        )
        observations = []
        for market in self.markets:
            venue_open = frozenset(
                o.external_id for o in engine.open_orders(account_id, market) if is_ours(o.external_id, prefix)
            )
            ex = root.view.get(market, ExecStats)
            acc = root.view.get(market, AccountStats)
            book_at = port.book_frame_at.get(market)
            observations.append(
                MarketObservation(
                    market=market,
                    venue_open=venue_open,
                    bot_open=frozenset(o.external_id for o in ex.open_orders) if ex else frozenset(),
                    cancel_requested_at={
                        e: at for e in venue_open if (at := port.cancel_requested_at(e)) is not None
                    },
                    market_cancel_at=port.market_cancel_at(market),
                    venue_position=_signed_position(engine, account_id, market),
                    bot_position=acc.position if acc is not None else None,
                    account_stream_up=streams_up and market not in root.halted,
                    since_fill_s=now - self.last_fill_at.get(market, float("-inf")),
                    mid=engine.mid(market),
                    book_age_s=None if book_at is None else now - book_at,
                )
            )
        self.checker.observe(now, observations, venue_reachable=not port.unreachable(for_s=UNREACHABLE_AFTER_S))
        self.checker.note_duplicates(now, port.duplicates)
        port.forget_cancels_before(now - 10 * self.tolerances.cancel_window_s)

    def _note_fills(self, engine: Any, account_id: int) -> None:
        """Note when the engine reports a fill of ours: every event passes its outbox, and
        the runner drains it as soon as anything happened."""
        drain = engine.drain_events

        def drain_and_note() -> list[Any]:
            events: list[Any] = drain()
            for event in events:
                if isinstance(event, TradeEvent) and event.account_id == account_id:
                    self.last_fill_at[event.trade.market] = trio.current_time()
                    self.fills += 1
            return events

        engine.drain_events = drain_and_note

    async def watch(self) -> None:
        while not self.stopped.is_set():
            self.observe()
            await trio.sleep(SAMPLE_EVERY_S)

    async def _failures(self, events: trio.MemoryReceiveChannel[Any]) -> None:
        async with events:
            async for event in events:
                if isinstance(event, ChildFailed) and not event.error.startswith(INJECTED):
                    self.actor_failures.append(f"{event.path}: {event.error}")

    # -- the bot --------------------------------------------------------------------------
    async def run_bot(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Simulator, recording port and root supervisor, until `stop` is set."""
        async with inprocess_simulator(
            start_ms=START_MS, markets=self.markets, seed=self.seed, flow=self.flow
        ) as (venue, runner):
            self.runner = runner
            self.account_id = venue.account_id
            self.port = RecordingPort(self.wrap_venue(venue) if self.wrap_venue else venue)
            self._note_fills(runner.engine, venue.account_id)
            self.root = RootSupervisor(
                cfg=self.cfg,
                port=self.wrap_port(self.port) if self.wrap_port else self.port,
                network="paper",
                epoch_ms=runner.now_ms,
                rng=random.Random(self.seed),
            )
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._failures, self.root.events.subscribe(1024))
                    try:
                        self.summary = await self._run_root(task_status)
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                self.stopped.set()

    async def _run_root(self, task_status: trio.TaskStatus[None]) -> RunSummary | None:
        """`root.run` until `stop`; an exception out of it is a crash, recorded, not raised."""
        root = self.root
        assert root is not None
        result: list[RunSummary] = []
        started = False

        async def run_root(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            result.append(await root.run(stop=self.stop, task_status=task_status))

        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(run_root)
                started = True
                task_status.started()
        except Exception as exc:  # the bot died: exactly what the drill must never see
            self.crashes.append(_describe(exc))
            if not started:
                task_status.started()
        return result[0] if result else None

    def venue_open(self) -> list[str]:
        prefix = self.cfg.external_id_prefix
        return [
            o.external_id for o in self.runner.engine.open_orders(self.account_id) if is_ours(o.external_id, prefix)
        ]


async def run_scenario_async(
    scenario: Scenario,
    *,
    duration_s: float,
    seed: int = 1,
    cfg: BotConfig | None = None,
    warmup_s: float = 10.0,
    settle_after_s: float = 20.0,
    during: Callable[[ChaosRun], Any] | None = None,
    **run_kw: Any,
) -> ScenarioResult:
    """Warm up, inject the scenario's faults for `duration_s`, clear them, settle, stop.

    `during` (optional) is started alongside the drive with the run, for extra probes;
    `run_kw` go to `ChaosRun` (`wrap_venue`, `wrap_port`).
    """
    if scenario.kind != "virtual" or scenario.drive is None:
        raise ValueError(f"{scenario.name} is not a virtual-time scenario")
    cfg = cfg or chaos_config()
    run = ChaosRun(cfg=cfg, seed=seed, settle_s=scenario.settle_s, **run_kw)
    rng = random.Random(seed * 7919 + 17)
    ctx: ChaosContext | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(run.run_bot)
        if not run.crashes:
            nursery.start_soon(run.watch)
            await trio.sleep(warmup_s)
            assert run.root is not None
            ctx = ChaosContext(root=run.root, runner=run.runner, rng=rng, markets=run.markets)
            with trio.move_on_after(duration_s):
                async with trio.open_nursery() as drills:
                    drills.start_soon(scenario.drive, ctx)
                    if during is not None:
                        drills.start_soon(during, run)
                    await run.stopped.wait()  # the bot died: no point in going on
                    drills.cancel_scope.cancel()
            run.runner.faults.clear()
            with trio.move_on_after(settle_after_s):
                await run.stopped.wait()
            run.stop.set()
            with trio.move_on_after(120.0):
                await run.stopped.wait()
        left = run.venue_open() if run.runner is not None else []
        nursery.cancel_scope.cancel()
    root = run.root
    summary = run.summary
    clean = not run.crashes and summary is not None and summary.open_orders_at_exit == 0 and not left
    return ScenarioResult(
        scenario=scenario.name,
        seed=seed,
        duration_s=duration_s,
        report=run.checker.report(),
        restarts=sum(root.restarts.values()) if root is not None else 0,
        breaker_trips=root.breaker_trips if root is not None else 0,
        crashes=len(run.crashes),
        crash_details=tuple(run.crashes),
        kills=sum(ctx.kills.values()) if ctx is not None else 0,
        actor_failures=len(run.actor_failures),
        actor_failure_details=tuple(run.actor_failures[:10]),
        halted=tuple(sorted(root.halted)) if root is not None else (),
        clean_exit=clean,
        orders_sent=sum(run.port.new_orders.values()) if run.port is not None else 0,
        fills=run.fills,
        faults=run.runner.faults.statistics() if run.runner is not None else {},
        extra={"kills_by_actor": dict(sorted(ctx.kills.items()))} if ctx is not None and ctx.kills else {},
    )


def run_scenario(name: str, *, duration_s: float | None = None, seed: int = 1, cfg: BotConfig | None = None,
                 **kw: Any) -> ScenarioResult:
    """Run a virtual-time scenario by name in its own trio run under an autojumping MockClock."""
    scenario = SCENARIOS[name]
    duration = scenario.default_duration_s if duration_s is None else duration_s
    return trio.run(
        lambda: run_scenario_async(scenario, duration_s=duration, seed=seed, cfg=cfg, **kw),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
