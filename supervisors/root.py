"""The root supervisor: every market under one roof, and the account-wide safety nets.

Startup (`supervisors.root_startup`): markets and fees from the venue, the account's open
orders listed once (foreign ones refuse the start, our leftovers are cancelled and
confirmed gone), leverage, the markets with a valid book. Then two supervisors of the same
kind (`supervisors.supervisor.Supervisor`):

- "services" (`supervisors.root_children`): the root's own loops — journal,
  supervision events, the dead man's switch heartbeat (arms the switch before anything
  quotes; re-armed every third of the countdown), request outcomes, the circuit breaker
  (429 bursts, REST errors or latency, DMS failures, escalations, drawdown, operator) and
  the shared account stream — each restarted under its declared policy while quoting
  goes on;
- "root": one market supervisor per market (ONE_FOR_ONE: markets are independent). A
  market that escalates is HALTED — its orders are cancelled (shielded, bounded) and the
  others keep quoting.

Trading state — quoting, size share, halted markets, the switch — is one value owned by
`self.trading` (`supervisors.trading.TradingControl`). When either supervisor gives up,
the bot stops through cancel and confirm (`supervisors.root_shutdown`) and `run` raises;
a heartbeat that could not be restarted leaves the switch armed. `shutdown()` stops
quoting, cancels everything, confirms, and disarms the DMS last.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import trio
from loguru import logger

from extmm.config import BotConfig
from extmm.domain.breaker import CircuitBreaker
from extmm.domain.risk import ExposureBoard
from extmm.domain.trading import HaltMarket, ReviveMarket, StopQuoting
from extmm.journal.actor import Journal
from extmm.ops.telemetry import AccountStats, ExecStats, Telemetry, TelemetryView
from extmm.venue.cancel import CancelOutcome
from extmm.venue.port import ExchangePort
from extmm.venue.reconnects import StreamReconnects
from extmm.venue.shared_account import SharedAccountStream, SharingPort
from extmm.venue.signing import ExternalIdFactory
from extmm.venue.types import MarketInfo
from supervisors.breaker import BreakerShell, settings_from_config
from supervisors.events import EventHub, SupervisionEvent, describe_error
from supervisors.heartbeat import DeadMansSwitch
from supervisors.market import (
    STREAM_RECONNECT,
    MarketContext,
    MarketWiring,
    market_supervisor_spec,
    reconnect_delay,
)
from supervisors.root_children import HEARTBEAT, services_spec
from supervisors.root_shutdown import SHUTDOWN_BUDGET_S, UNCONFIRMED_DMS_S, RootShutdown, RunSummary
from supervisors.root_startup import RootStartup, StartupError
from supervisors.root_status import RootStatus
from supervisors.spec import ChildSpec, EscalationDecision, Strategy, SupervisorSpec
from supervisors.supervisor import Escalation, Supervisor
from supervisors.trading import TradingControl

__all__ = ["SHUTDOWN_BUDGET_S", "UNCONFIRMED_DMS_S", "RootSupervisor", "RunSummary", "StartupError"]


class RootSupervisor(RootStartup, RootShutdown, RootStatus):
    def __init__(
        self,
        *,
        cfg: BotConfig,
        port: ExchangePort,
        network: str,
        epoch_ms: Callable[[], int],
        rng: random.Random | None = None,
        request_outcomes: trio.MemoryReceiveChannel[Any] | None = None,
        warnings: Callable[[], tuple[str, ...]] = lambda: (),
        market_intensity: int = 5,
        market_period: float = 30.0,
        allow_foreign_orders: bool = False,
        journal: Journal | None = None,
        send_alerts: bool = False,
    ) -> None:
        self.journal = journal or Journal.disabled()
        # The alert webhook (cfg.alerts) runs as a services child only when asked (`run`):
        # a backtest, a chaos run or a benchmark with the same config posts nothing.
        self.send_alerts = send_alerts
        self.cfg = cfg
        self.port = port
        self.network = network
        self.epoch_ms = epoch_ms
        self.rng = rng or random.Random()
        # Every market's Account reads one shared account-stream connection.
        self.account_hub = SharedAccountStream(port, reconnect_delay=reconnect_delay(STREAM_RECONNECT, self.rng))
        self.market_port = SharingPort(port, self.account_hub)
        self.events = EventHub()
        self.view = TelemetryView()
        # Account-wide net exposure, shared by the markets' Risk actors (#16).
        self.exposure = ExposureBoard([m.name for m in cfg.enabled_markets], cfg.risk.max_net_position_usd)
        self.request_outcomes = request_outcomes
        self.warnings = warnings
        self.market_intensity = market_intensity
        self.market_period = market_period
        self.allow_foreign_orders = allow_foreign_orders
        self.exit_result: CancelOutcome | None = None  # set by shutdown: what the venue confirmed
        self.markets: dict[str, MarketInfo] = {}
        self.leverage: dict[str, Decimal] = {}
        self.stream_reconnects = StreamReconnects()
        self.left_out: dict[str, str] = {}  # markets without a valid book at startup, and why
        self.book_probe_port: ExchangePort = port  # what the startup book check reads (backtests: uncounted)
        self.halt_left: dict[str, int | None] = {}  # orders still open after each market's halt cancel
        self.restarts: Counter[str] = Counter()
        # The one owner of quoting / size / halted markets / the switch's state.
        self.trading = TradingControl(cfg.dead_mans_switch_sec)
        self.breaker = CircuitBreaker(settings_from_config(cfg.breaker))
        self.switch = DeadMansSwitch(port, self.trading, self.breaker)
        self.breaker_shell = BreakerShell(
            self.breaker,
            trading=self.trading,
            switch=self.switch,
            events=self.events,
            cancel_ours=lambda timeout_s: self._cancel_ours(self.markets, timeout_s=timeout_s),
            drawdown_usd=self._drawdown_usd,
            max_drawdown_usd=cfg.risk.max_drawdown_usd,
            normal_countdown_s=cfg.dead_mans_switch_sec,
        )
        self.supervisor: Supervisor | None = None  # the markets
        self.services: Supervisor | None = None  # the root's own loops
        self.fatal: Escalation | None = None  # why the bot stopped by itself
        self.started_at = 0.0
        self.ready = False
        self.book_silence_s = max(30.0, cfg.risk.stale_book_ms / 1000.0 * 10)
        self.telemetry = Telemetry(self.view)
        self.peak_net = Decimal(0)
        self._supervisor_done = trio.Event()
        self._wake = trio.Event()  # stop requested, or a supervisor gave up
        self._heartbeat_failed = False
        self._services_up = False

    # -- the trading state (read-only views; changes go through self.trading) ------------------
    @property
    def quoting(self) -> bool:
        return self.trading.state.quoting

    @property
    def size_fraction(self) -> float:
        return self.trading.state.size_fraction

    @property
    def halted(self) -> frozenset[str]:
        return self.trading.state.halted

    @property
    def breaker_trips(self) -> int:
        return self.breaker_shell.trips

    def operator_trip(self, detail: str = "operator signal") -> None:
        self.breaker.trip(trio.current_time(), detail)

    # -- markets ---------------------------------------------------------------------------
    def _market_child(self, name: str, fees: tuple[float, float], ids: ExternalIdFactory) -> ChildSpec:
        market_cfg = next(m for m in self.cfg.enabled_markets if m.name == name)

        async def run_market(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            wiring = MarketWiring.create()
            self.trading.attach(name, wiring)
            self.trading.apply(ReviveMarket(name))
            self.halt_left.pop(name, None)
            ctx = MarketContext(
                bot=self.cfg,
                market=market_cfg,
                spec=self.markets[name].spec,
                port=self.market_port,
                maker_fee_rate=fees[0],
                taker_fee_rate=fees[1],
                ids=ids,
                epoch_ms=self.epoch_ms,
                telemetry=self.telemetry,
                intensity=self.market_intensity,
                period=self.market_period,
                rng=self.rng,
                trading_active=lambda: self.trading.quotes(name),
                on_reconnect=self.stream_reconnects.recorder(name),
                journal=self.journal,
                exposure=self.exposure,
            )
            await Supervisor(market_supervisor_spec(ctx, wiring), events=self.events, rng=self.rng).run(
                task_status=task_status
            )

        async def on_escalation(_escalation: Any) -> EscalationDecision:
            logger.error("{}: market escalated; halting it and cancelling its orders", name)
            self.trading.apply(HaltMarket(name))
            result = await self._cancel_ours([name], timeout_s=8.0)
            self.halt_left[name] = result.left
            if not result.confirmed_none:
                logger.error(
                    "{}: {} of our orders still open after halt; the DMS is the backstop",
                    name, "UNKNOWN (venue did not confirm)" if result.left is None else result.left,
                )
            else:
                # The dead Executor's last report may still list orders the halt cancelled;
                # say what the venue confirmed (through the same channel, so it comes last).
                last = self.view.get(name, ExecStats)
                if last is not None:
                    self.telemetry.publish(attrs.evolve(last, open_orders=(), at=trio.current_time()))
            self.breaker.record_escalation(trio.current_time(), name)
            return EscalationDecision.HALT

        return ChildSpec(id=name, start=run_market, shutdown_timeout=15.0, on_escalation=on_escalation)

    def kill(self, path: str, exc: BaseException | None = None) -> bool:
        """Fault injection: make the actor at "MARKET/actor", a market, or one of the root's
        own loops ("heartbeat", "breaker", "events", ...) fail now."""
        head = path.partition("/")[0]
        if self.services is not None and head in {c.id for c in self.services.spec.children}:
            return self.services.kill(path, exc)
        if self.supervisor is None:
            return False
        return self.supervisor.kill(path, exc)

    def _drawdown_usd(self) -> float:
        """Peak-to-now loss of the whole account's net PnL this session."""
        net = Decimal(0)
        for name in self.markets:
            acc = self.view.get(name, AccountStats)
            if acc is not None:
                net += acc.pnl.get("net", Decimal(0))
        self.peak_net = max(self.peak_net, net)
        return float(self.peak_net - net)

    # -- the run --------------------------------------------------------------------------------
    async def run(
        self,
        *,
        stop: trio.Event,
        task_status: trio.TaskStatus[RootSupervisor] = trio.TASK_STATUS_IGNORED,
    ) -> RunSummary:
        """Start everything, report ready, run until `stop` is set (or a supervisor gives
        up: then raise after the same cancel and confirm), then shut down cleanly."""
        self.started_at = trio.current_time()
        fees = await self._startup()
        names = list(self.markets)
        # The run id comes from the root's rng: random live, derived from the seed in a backtest.
        ids = ExternalIdFactory(self.cfg.external_id_prefix, run_id=f"{self.rng.getrandbits(24):06x}")
        spec = SupervisorSpec(
            id="root",
            children=[self._market_child(n, fees[n], ids) for n in names],
            strategy=Strategy.ONE_FOR_ONE,
            intensity=max(len(names) * 3, 3),
            period=60.0,
        )
        self.supervisor = Supervisor(spec, events=self.events, rng=self.rng)
        events: trio.MemoryReceiveChannel[SupervisionEvent] = self.events.subscribe(1024)
        self.services = Supervisor(
            services_spec(
                journal=self.journal,
                events=events,
                restarts=self.restarts,
                switch=self.switch,
                countdown_s=self.cfg.dead_mans_switch_sec,
                breaker=self.breaker,
                breaker_shell=self.breaker_shell,
                outcomes=self.request_outcomes,
                port=self.port,
                account_hub=self.account_hub,
                alerts=self.cfg.alerts if self.send_alerts else None,
                # The alerts judge the running bot (as when they started after ready).
                status=lambda: self.status() if self.ready else None,
            ),
            events=self.events,
            rng=self.rng,
        )
        async with events, trio.open_nursery() as nursery:
            nursery.start_soon(self._wake_on, stop)
            try:
                # The services arm the switch (the heartbeat is ready once the venue took it).
                await nursery.start(self._run_services)
                self._services_up = True
                await nursery.start(self._run_markets)
            except Escalation as exc:
                # A loop or a market that cannot start: the switch may be armed already.
                logger.error("stopping on a failure: cancelling our orders before exiting")
                await self.shutdown(heartbeat_failed=self._heartbeat_failed)
                self.fatal = exc
                nursery.cancel_scope.cancel()
            else:
                summary = await self._run_until_woken(task_status)
                nursery.cancel_scope.cancel()
        if not self.ready:
            raise StartupError(f"the bot could not start: {self.fatal}")
        if self.fatal is not None:
            raise self.fatal
        return summary

    async def _run_until_woken(self, task_status: trio.TaskStatus[RootSupervisor]) -> RunSummary:
        self.ready = True
        logger.info("all markets ready: {}", ", ".join(self.markets))
        task_status.started(self)
        try:
            await self._wake.wait()
        except BaseException:
            # A failure (or cancellation) after the switch was armed still goes through
            # cancel, confirm, disarm before it propagates.
            logger.error("stopping on a failure: cancelling our orders before exiting")
            await self.shutdown(heartbeat_failed=self._heartbeat_failed)
            raise
        if self.fatal is not None:
            logger.error("{}: stopping the bot; cancelling our orders before exiting", self.fatal)
        summary = await self.shutdown(heartbeat_failed=self._heartbeat_failed)
        with trio.CancelScope(shield=True):
            await self._stop_loops_but_the_journal()
            await self.journal.close(summary.to_json())
        return summary

    async def _stop_loops_but_the_journal(self) -> None:
        """The services in reverse start order, the journal (the first) left to take their
        last events and the session's end."""
        assert self.services is not None
        for child in reversed(self.services.spec.children[1:]):
            try:
                await self.services.terminate_child(child.id)
            except RuntimeError:
                return  # the services are not running any more

    async def _wake_on(self, stop: trio.Event) -> None:
        await stop.wait()
        self._wake.set()

    def _gave_up(self, escalation: Escalation) -> None:
        """A supervisor gave up while the bot runs: wake `run`, which stops the bot."""
        if self.fatal is None:
            self.fatal = escalation
        if escalation.supervisor == "services" and escalation.child == HEARTBEAT:
            self._heartbeat_failed = True
            # Never quote without a heartbeat: stop at once, before the shutdown even starts.
            self.trading.apply(StopQuoting(f"heartbeat failed: {describe_error(escalation.last_error)}"))
        self._wake.set()

    async def _run_services(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        assert self.services is not None
        try:
            await self.services.run(task_status=task_status)
        except Escalation as exc:
            if not self._services_up:
                self._heartbeat_failed = exc.child == HEARTBEAT
                raise  # from nursery.start: the start fails
            self._gave_up(exc)

    async def _run_markets(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        assert self.supervisor is not None
        try:
            assert self.supervisor is not None  # set by run() before it starts this
            await self.supervisor.run(task_status=task_status)
        except Escalation as exc:
            if not self.ready:
                raise
            self._gave_up(exc)
        finally:
            self._supervisor_done.set()
