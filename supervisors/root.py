"""The root supervisor: every market under one roof, and the account-wide safety nets.

Startup: markets and fees from the venue, reconciliation (our leftover orders are
cancelled), dead man's switch armed; then one market supervisor per enabled market
(ONE_FOR_ONE: markets are independent). A market that escalates is HALTED — its
orders are cancelled (shielded, bounded) and the others keep quoting. Alongside run the
DMS heartbeat (re-armed every third of the countdown), the circuit breaker (429 bursts,
REST errors or latency, DMS failures, escalations, drawdown, operator) and the
telemetry collector. `shutdown()` stops quoting, cancels everything, confirms, and
disarms the DMS last.
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

from actors.messages import TradingMode
from extmm.config import BotConfig
from extmm.domain.risk import ExposureBoard
from extmm.journal.actor import Journal
from extmm.journal.hooks import event_row, record_final_marks
from extmm.ops.status import ActorStatus, AppStatus, MarketStatus
from extmm.ops.telemetry import (
    AccountStats,
    BookStats,
    ExecStats,
    RiskStats,
    Telemetry,
    TelemetryMsg,
    TelemetryView,
)
from extmm.venue.errors import AuthError, VenueError
from extmm.venue.port import MAX_IDS_PER_CANCEL, ExchangePort
from extmm.venue.reconnects import StreamReconnects
from extmm.venue.shared_account import SharedAccountStream, SharingPort
from extmm.venue.signing import ExternalIdFactory, is_ours
from extmm.venue.types import MarketInfo
from supervisors.breaker import BreakerAction, CircuitBreaker
from supervisors.events import ChildRestarting, EventHub
from supervisors.market import (
    ACTORS,
    STREAM_RECONNECT,
    MarketContext,
    MarketWiring,
    market_supervisor_spec,
    reconnect_delay,
)
from supervisors.spec import ChildSpec, EscalationDecision, Strategy, SupervisorSpec
from supervisors.supervisor import Supervisor


class StartupError(Exception):
    """The bot cannot start safely (unknown market, venue unreachable...)."""


# Shutdown without the venue's confirmation that none of ours is open: the switch stays
# armed with this short countdown so the venue cancels whatever is left soon after we exit.
UNCONFIRMED_DMS_S = 10
# Worst case of shutdown(): listing ours (2 s), stopping the actors (20 s), cancel and
# confirm (15 s), positions and the final switch call (a few s). Deployment stop timeouts
# (systemd TimeoutStopSec, docker stop_grace_period) must be longer.
SHUTDOWN_BUDGET_S = 2 + 20 + 15 + 8


@attrs.frozen(kw_only=True)
class CancelResult:
    """What `_cancel_ours` achieved. Unknown is a state: `left` is None unless the venue's
    list of open orders, read after cancelling, was seen."""

    cancelled: int  # ours seen open and then confirmed gone
    left: int | None  # ours still open at the end; None = not confirmed
    seen: frozenset[str] = frozenset()  # external ids of ours seen open

    @property
    def confirmed_none(self) -> bool:
        return self.left == 0


@attrs.frozen(kw_only=True)
class RunSummary:
    network: str
    markets: tuple[str, ...]
    orders_sent: int
    fills: int
    pnl: dict[str, Decimal]
    position: dict[str, Decimal]
    open_orders_at_exit: int | None  # None: the venue never confirmed (UNKNOWN)
    restarts: dict[str, dict[str, int]]
    breaker_trips: int
    dms: str = "disarmed"  # or e.g. "armed 10s, open orders unconfirmed"
    cancelled_at_exit: int | None = 0
    stream_reconnects: dict[str, dict[str, int]] = attrs.Factory(dict)
    lifetime_pnl: Decimal | None = None  # net, all sessions of this network and account (journal)

    @property
    def clean(self) -> bool:
        """Zero of ours open (venue-confirmed) and the switch disarmed."""
        return self.open_orders_at_exit == 0 and self.dms == "disarmed"

    def to_json(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "markets": list(self.markets),
            "orders_sent": self.orders_sent,
            "fills": self.fills,
            "pnl": {k: str(v) for k, v in self.pnl.items()},
            "position": {k: str(v) for k, v in self.position.items()},
            "open_orders_at_exit": "UNKNOWN" if self.open_orders_at_exit is None else self.open_orders_at_exit,
            "restarts": self.restarts,
            "breaker_trips": self.breaker_trips,
            "dms": self.dms,
            "stream_reconnects": self.stream_reconnects,
        } | ({} if self.lifetime_pnl is None else {"lifetime_pnl": str(self.lifetime_pnl)})


class RootSupervisor:
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
    ) -> None:
        self.journal = journal or Journal.disabled()
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
        self._dms_scope = trio.CancelScope()  # the heartbeat; cancelled before the final DMS call
        self.exit_result: CancelResult | None = None  # set by shutdown: what the venue confirmed
        self.markets: dict[str, MarketInfo] = {}
        self.leverage: dict[str, Decimal] = {}
        self.stream_reconnects = StreamReconnects()
        self.wirings: dict[str, MarketWiring] = {}
        self.halted: set[str] = set()
        self.left_out: dict[str, str] = {}  # markets without a valid book at startup, and why
        self.book_probe_port: ExchangePort = port  # what the startup book check reads (backtests: uncounted)
        self.halt_left: dict[str, int | None] = {}  # orders still open after each market's halt cancel
        self.restarts: Counter[str] = Counter()
        self.breaker = CircuitBreaker(cfg.breaker)
        self.breaker_trips = 0
        self.supervisor: Supervisor | None = None
        self.started_at = 0.0
        self.ready = False
        self.quoting = True
        self.size_fraction = 1.0
        self.book_silence_s = max(30.0, cfg.risk.stale_book_ms / 1000.0 * 10)
        self.dms_expires_at: float | None = None
        self.dms_countdown: int = cfg.dead_mans_switch_sec
        self.telemetry_send, self._telemetry_recv = trio.open_memory_channel[TelemetryMsg](1024)
        self.telemetry = Telemetry(self.telemetry_send)
        self.last_heartbeat = 0.0
        self.peak_net = Decimal(0)
        self._supervisor_done = trio.Event()

    # -- startup ---------------------------------------------------------------------------
    async def _prepare(self) -> dict[str, tuple[float, float]]:
        names = [m.name for m in self.cfg.enabled_markets]
        infos = {m.name: m for m in await self.port.get_markets(names)}
        problems = []
        for name in names:
            info = infos.get(name)
            if info is None:
                problems.append(f"unknown market {name}: the venue does not have it")
            elif not info.active or info.status not in ("ACTIVE", ""):
                problems.append(f"market {name} is not active (status {info.status})")
        if problems:
            existing = sorted(m.name for m in await self.port.get_markets())
            raise StartupError("; ".join(problems) + f" (the venue has: {', '.join(existing)})")
        self.markets = {n: infos[n] for n in names}
        fees: dict[str, tuple[float, float]] = {}
        need_account_fees = []
        for market in self.cfg.enabled_markets:
            override = self.cfg.fees_for(market)
            if (
                override is not None
                and override.makerFeeRate is not None
                and override.takerFeeRate is not None
            ):
                fees[market.name] = (float(override.makerFeeRate), float(override.takerFeeRate))
            else:
                need_account_fees.append(market.name)
        if need_account_fees:
            account = {f.market: f for f in await self.port.get_fees(need_account_fees)}
            for market in self.cfg.enabled_markets:
                if market.name not in need_account_fees:
                    continue
                rates = account.get(market.name)
                override = self.cfg.fees_for(market)
                maker = float(rates.maker) if rates else 0.0
                taker = float(rates.taker) if rates else 0.00025
                if override is not None and override.makerFeeRate is not None:
                    maker = float(override.makerFeeRate)
                if override is not None and override.takerFeeRate is not None:
                    taker = float(override.takerFeeRate)
                fees[market.name] = (maker, taker)
        return fees

    async def _align_leverage(self) -> None:
        """Each market's account leverage read, and set where the config names another (SPEC §4.7)."""
        from extmm.venue.leverage import LeverageError, align_leverage

        try:
            statuses = await align_leverage(self.port, {m.name: m.leverage for m in self.cfg.enabled_markets})
        except LeverageError as exc:
            raise StartupError(str(exc)) from None
        for status in statuses:
            logger.info(status.describe())
        self.leverage = {s.market: s.leverage for s in statuses}

    async def _cancel_ours(self, markets: list[str], *, timeout_s: float = 10.0) -> CancelResult:
        """Cancel every open order of ours in `markets` and wait until the venue lists none.

        Ours only: selected by our external_id_prefix and cancelled by external id (SPEC
        §4.10 `externalOrderIds`), so a manual or another bot's order on the sub-account is
        never touched. `left` is None when the last attempt to list failed: a failure to
        read is not zero open."""
        prefix = self.cfg.external_id_prefix
        left: int | None = None
        seen: set[str] = set()
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    open_orders = [
                        o
                        for o in await self.port.get_open_orders()
                        if o.market in markets and is_ours(o.external_id, prefix)
                    ]
                except VenueError as exc:
                    logger.warning("listing open orders failed: {}", exc)
                    left = None
                    await trio.sleep(0.5)
                    continue
                left = len(open_orders)
                ids = [o.external_id for o in open_orders if o.external_id]
                seen.update(ids)
                if not open_orders:
                    break
                for start in range(0, len(ids), MAX_IDS_PER_CANCEL):
                    try:
                        await self.port.mass_cancel(external_ids=ids[start : start + MAX_IDS_PER_CANCEL])
                    except VenueError as exc:
                        logger.warning("cancelling our orders failed: {}", exc)
                await trio.sleep(0.25)
        return CancelResult(cancelled=len(seen) - (left or 0), left=left, seen=frozenset(seen))

    async def _foreign_orders(self) -> list[Any]:
        """Open orders on the sub-account that are not ours (any market)."""
        prefix = self.cfg.external_id_prefix
        return [o for o in await self.port.get_open_orders() if not is_ours(o.external_id, prefix)]

    # -- markets ---------------------------------------------------------------------------
    def _market_child(self, name: str, fees: tuple[float, float], ids: ExternalIdFactory) -> ChildSpec:
        market_cfg = next(m for m in self.cfg.enabled_markets if m.name == name)

        async def run_market(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            wiring = MarketWiring.create()
            self.wirings[name] = wiring
            self.halted.discard(name)
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
                trading_active=lambda: self.quoting and name not in self.halted,
                on_reconnect=self.stream_reconnects.recorder(name),
                journal=self.journal,
                exposure=self.exposure,
            )
            await Supervisor(market_supervisor_spec(ctx, wiring), events=self.events, rng=self.rng).run(
                task_status=task_status
            )

        async def on_escalation(_escalation: Any) -> EscalationDecision:
            logger.error("{}: market escalated; halting it and cancelling its orders", name)
            self.halted.add(name)
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
        """Fault injection: make the actor at "MARKET/actor" (or a market) fail now."""
        if self.supervisor is None:
            return False
        return self.supervisor.kill(path, exc)

    # -- background loops ----------------------------------------------------------------------
    async def _telemetry_loop(self) -> None:
        async for msg in self._telemetry_recv:
            self.view.update(msg)

    async def _events_loop(self, events: trio.MemoryReceiveChannel[Any]) -> None:
        async with events:
            async for event in events:
                self.journal.record(event_row(self.journal, event))
                if isinstance(event, ChildRestarting):
                    self.restarts[event.path] += 1

    async def _dms_loop(self) -> None:
        with self._dms_scope:
            await self._dms_heartbeat()

    async def _dms_heartbeat(self) -> None:
        failures = 0
        while True:
            countdown = self.dms_countdown
            try:
                await self.port.set_dead_mans_switch(countdown)
                self.dms_expires_at = trio.current_time() + countdown
                self.breaker.record_dms_success(trio.current_time())
                failures = 0
            except VenueError as exc:
                failures += 1
                logger.warning("dead man's switch heartbeat failed ({} in a row): {}", failures, exc)
                self.breaker.record_dms_failure(trio.current_time())
            self.last_heartbeat = trio.current_time()
            await trio.sleep(max(countdown / 3.0, 0.5) if failures == 0 else 1.0)

    async def _outcomes_loop(self) -> None:
        if self.request_outcomes is not None:
            async for outcome in self.request_outcomes:
                self.breaker.record_request(outcome.at, outcome.outcome, outcome.latency_s)
            return
        # A port without per-request outcomes: feed the breaker from its counters.
        last = self.port.statistics()
        while True:
            await trio.sleep(0.25)
            now = trio.current_time()
            stats = self.port.statistics()
            limited = stats.rate_limited - last.rate_limited
            failed = stats.server_errors - last.server_errors
            ok = max(stats.requests - last.requests - limited - failed, 0)
            for outcome, count in (("rate_limited", limited), ("server_error", failed), ("ok", ok)):
                for _ in range(count):
                    self.breaker.record_request(now, outcome)
            last = stats

    async def _breaker_loop(self) -> None:
        while True:
            await trio.sleep(0.25)
            now = trio.current_time()
            drawdown = self._drawdown_usd()
            limit = self.cfg.risk.max_drawdown_usd
            if limit is not None and drawdown >= limit:
                self.breaker.record_drawdown(now, drawdown)
            action = self.breaker.poll(now)
            await self._apply_breaker(action)
            fraction = self.breaker.quote_fraction(now)
            if self.quoting and abs(fraction - self.size_fraction) >= 0.05:
                self.set_quoting(True, f"breaker {self.breaker.state_name}", fraction)

    async def _apply_breaker(self, action: BreakerAction | None) -> None:
        if action is None:
            return
        for event in action.events:
            self.events.publish(event)
        if action.stop_quoting:
            self.breaker_trips += 1
            logger.error("circuit breaker OPEN: {}; stopping quotes and cancelling everything", action.reason)
            self.set_quoting(False, f"breaker: {action.reason}")
            self.dms_countdown = action.dms_countdown_s or self.cfg.breaker.dms_backstop_sec
            with trio.CancelScope(shield=True):
                result = await self._cancel_ours(list(self.markets), timeout_s=10.0)
                try:
                    await self.port.set_dead_mans_switch(self.dms_countdown)
                    self.dms_expires_at = trio.current_time() + self.dms_countdown
                except VenueError as exc:
                    logger.warning("shortening the DMS failed: {}", exc)
            if not result.confirmed_none:
                logger.error(
                    "{} of our orders still open after the breaker's cancel",
                    "UNKNOWN (venue did not confirm)" if result.left is None else result.left,
                )
        elif action.resume_quoting:
            logger.warning("circuit breaker {}: resuming quotes at {:.0%} size", action.state,
                           action.quote_fraction)
            self.dms_countdown = self.cfg.dead_mans_switch_sec
            self.set_quoting(True, f"breaker {action.state}", action.quote_fraction)

    def set_quoting(self, active: bool, reason: str, size_fraction: float = 1.0) -> None:
        self.quoting = active
        self.size_fraction = size_fraction
        for name, wiring in self.wirings.items():
            if name not in self.halted:
                wiring.set_trading_mode(TradingMode(active=active, reason=reason, size_fraction=size_fraction))

    def operator_trip(self, detail: str = "operator signal") -> None:
        self.breaker.trip(trio.current_time(), detail)

    def _drawdown_usd(self) -> float:
        """Peak-to-now loss of the whole account's net PnL this session."""
        net = Decimal(0)
        for name in self.markets:
            acc = self.view.get(name, AccountStats)
            if acc is not None:
                net += acc.pnl.get("net", Decimal(0))
        self.peak_net = max(self.peak_net, net)
        return float(self.peak_net - net)

    # -- status ---------------------------------------------------------------------------------
    def actor_statuses(self, market: str) -> list[ActorStatus]:
        out: dict[str, ActorStatus] = {a: ActorStatus(name=a, state="stopped", restarts=0) for a in ACTORS}
        if self.supervisor is not None:
            nested = None
            try:
                nested = self.supervisor.nested(market)
            except LookupError:
                nested = None
            if nested is not None:
                for child in nested.children():
                    out[child.id] = ActorStatus(name=child.id, state=str(child.state), restarts=0)
        for name in ACTORS:
            out[name] = attrs.evolve(out[name], restarts=self.restarts.get(f"{market}/{name}", 0))
        return list(out.values())

    def market_state(self, name: str) -> str:
        if name in self.halted:
            return "HALTED"
        if not self.quoting:
            return "OFF"
        if not self.ready:
            return "STARTING"
        risk = self.view.get(name, RiskStats)
        if risk is not None and risk.reducing:
            return "REDUCING"  # over a position limit: only orders that reduce it (#16)
        return "ACTIVE"

    def status(self) -> AppStatus:
        now = trio.current_time()
        stats = self.port.statistics()
        markets = tuple(
            MarketStatus.from_telemetry(
                name,
                self.view,
                state=self.market_state(name),
                actors=self.actor_statuses(name),
                now=now,
                stale_after_s=self.cfg.risk.stale_book_ms / 1000.0,
            )
            for name in self.markets
        )
        if self.exit_result is not None and self.exit_result.confirmed_none:
            # After shutdown the venue's confirmed answer, not the stopped Executors' last
            # report: the panel's last frame agrees with the summary.
            markets = tuple(attrs.evolve(m, open_orders=0, live_bid=None, live_ask=None) for m in markets)
        accounts = [self.view.get(n, AccountStats) for n in self.markets]
        balance = next((a.balance for a in accounts if a is not None and a.balance is not None), None)
        equity = next((a.equity for a in accounts if a is not None and a.equity is not None), None)
        return AppStatus(
            network=self.network,
            uptime_s=now - self.started_at,
            breaker_state=self.breaker.state_name,
            breaker_trips=self.breaker_trips,
            breaker_last_reason=self.breaker.last_reason,
            dms_countdown_s=float(self.dms_countdown),
            dms_remaining_s=None if self.dms_expires_at is None else max(self.dms_expires_at - now, 0.0),
            rate_tokens=stats.tokens_available,
            rate_capacity=self._rate_capacity(),
            rest_latency_p50_ms=stats.latency_p50_ms,
            rest_latency_p99_ms=stats.latency_p99_ms,
            rest_requests=stats.requests,
            rest_429s=stats.rate_limited,
            rest_errors=stats.errors,
            balance=balance,
            equity=equity,
            warnings=self.warnings(),
            markets=markets,
            healthy=self.healthy(),
            ready=self.ready,
            stream_reconnects=self.reconnect_counts(),
            lifetime_net=self.journal.lifetime_net(sum((m.pnl.net for m in markets), Decimal(0))),
            journal=self.journal.statistics() if self.journal.enabled else None,
        )

    def _rate_capacity(self) -> float:
        limiter = getattr(self.port, "limiter", None)  # NetworkVenue; in-process ports have none
        return float(limiter.statistics().capacity) if limiter is not None else 0.0

    def healthy(self) -> bool:
        """Every market quoting normally or safely halted, and the loops alive."""
        if not self.ready:
            return False
        now = trio.current_time()
        if now - self.last_heartbeat > max(self.dms_countdown, 3):
            return False
        for name in self.markets:
            if name in self.halted:
                # Safe when the halt's cancel was confirmed at the venue (0 left).
                if self.halt_left.get(name) != 0:
                    return False
                continue
            book = self.view.get(name, BookStats)
            # A feed that has been silent for long is not healthy (the Risk actor has
            # already pulled the quotes after stale_book_ms; this is for the watchdog).
            if book is None or now - book.updated_at > self.book_silence_s:
                return False
        return True

    # -- the run --------------------------------------------------------------------------------
    async def run(
        self,
        *,
        stop: trio.Event,
        task_status: trio.TaskStatus[RootSupervisor] = trio.TASK_STATUS_IGNORED,
    ) -> RunSummary:
        """Start everything, report ready, run until `stop` is set, then shut down cleanly."""
        self.started_at = trio.current_time()
        try:
            fees = await self._prepare()
            foreign = await self._foreign_orders()
        except AuthError as exc:
            raise StartupError(f"the venue refused the API key ({exc}); nothing was sent") from None
        except VenueError as exc:
            raise StartupError(f"cannot reach or read the venue ({exc}); nothing was sent") from None
        if foreign and not self.allow_foreign_orders:
            counts = Counter(o.market for o in foreign)
            raise StartupError(
                f"{len(foreign)} open orders on this sub-account are not ours (externalId without "
                f"{self.cfg.external_id_prefix}-: "
                + ", ".join(f"{m}: {n}" for m, n in sorted(counts.items()))
                + "); the dead man's switch is account-wide and would cancel them. Run one bot per "
                "sub-account, or pass --allow-foreign-orders to accept that; nothing was sent"
            )
        if foreign:
            logger.warning("{} open orders on this sub-account are not ours; leaving them alone "
                           "(the dead man's switch would still cancel them)", len(foreign))
        names = list(self.markets)
        result = await self._cancel_ours(names)
        if not result.confirmed_none:
            raise StartupError(
                "open orders of ours could not be cancelled at startup ("
                + ("the venue did not confirm" if result.left is None else f"{result.left} left")
                + ")"
            )
        await self._align_leverage()  # after our leftovers are gone: their margin may block a change
        names = await self._markets_with_books(names)
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
        events = self.events.subscribe(1024)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.journal.run)
            nursery.start_soon(self._telemetry_loop)
            nursery.start_soon(self._events_loop, events)
            await self.port.set_dead_mans_switch(self.dms_countdown)
            self.dms_expires_at = trio.current_time() + self.dms_countdown
            nursery.start_soon(self._dms_loop)
            nursery.start_soon(self._outcomes_loop)
            nursery.start_soon(self._breaker_loop)
            await nursery.start(self.account_hub.run)
            await nursery.start(self._run_supervisor)
            self.ready = True
            logger.info("all markets ready: {}", ", ".join(names))
            task_status.started(self)
            try:
                await stop.wait()
            except BaseException:
                # A failure (or cancellation) after the switch was armed still goes through
                # cancel, confirm, disarm before it propagates.
                logger.error("stopping on a failure: cancelling our orders before exiting")
                await self.shutdown()
                raise
            summary = await self.shutdown()
            await self.journal.close(summary.to_json())
            nursery.cancel_scope.cancel()
        return summary

    async def _markets_with_books(self, names: list[str]) -> list[str]:
        """The markets whose book is valid within the deadline; the others left out or fatal."""
        from supervisors.readiness import wait_for_books

        timeout = self.cfg.book_ready_timeout_s
        missing = await wait_for_books(
            self.book_probe_port, {n: self.markets[n].spec for n in names}, timeout_s=timeout
        )
        if not missing:
            return names
        text = "; ".join(f"{n} ({why})" for n, why in missing.items())
        if self.cfg.on_missing_book == "fail" or len(missing) == len(names):
            raise StartupError(f"no valid order book within {timeout:g}s for {text}")
        logger.error("left out, no valid order book within {:g}s: {}", timeout, text)
        self.left_out.update(missing)
        for name in missing:
            del self.markets[name]
        return [n for n in names if n not in missing]

    async def _run_supervisor(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            assert self.supervisor is not None  # set by run() before it starts this
            await self.supervisor.run(task_status=task_status)
        finally:
            self._supervisor_done.set()

    async def shutdown(self) -> RunSummary:
        """Stop quoting, stop the actors, cancel everything, confirm, disarm the DMS."""
        with trio.CancelScope(shield=True):
            logger.info("shutting down: cancelling all orders")
            self.set_quoting(False, "shutdown")
            # Ours open as shutdown begins (the Executors cancel their own as they stop):
            # the "cancelled N" of the last log line.
            at_start: set[str] = set()
            with trio.move_on_after(2.0):
                try:
                    prefix = self.cfg.external_id_prefix
                    at_start = {o.external_id for o in await self.port.get_open_orders()
                                if o.external_id and is_ours(o.external_id, prefix)}
                except VenueError as exc:
                    logger.warning("listing open orders failed: {}", exc)
            if self.supervisor is not None:
                self.supervisor.stop()
                with trio.move_on_after(20):
                    await self._supervisor_done.wait()
            result = await self._cancel_ours(list(self.markets), timeout_s=15.0)
            if result.confirmed_none:
                result = attrs.evolve(result, cancelled=len(at_start | result.seen))
            self.exit_result = result
            positions: dict[str, Decimal] = {n: Decimal(0) for n in self.markets}
            try:
                for p in await self.port.get_positions():
                    if p.market in positions:
                        positions[p.market] += p.signed_size
            except VenueError as exc:
                logger.warning("could not read positions at exit: {}", exc)
            # The heartbeat must not re-arm the switch after our last word on it.
            self._dms_scope.cancel()
            if result.confirmed_none:
                try:
                    await self.port.set_dead_mans_switch(0)
                    self.dms_expires_at = None
                    dms = "disarmed"
                    logger.info(
                        "cancelled {}, 0 of ours open (confirmed), dead man's switch disarmed",
                        result.cancelled,
                    )
                except VenueError as exc:
                    dms = f"armed {self.dms_countdown}s, disarm failed"
                    logger.error("cancelled {}, 0 of ours open (confirmed), but disarming the dead "
                                 "man's switch failed: {}", result.cancelled, exc)
            else:
                what = ("open orders unconfirmed" if result.left is None
                        else f"{result.left} of ours still open")
                try:
                    await self.port.set_dead_mans_switch(UNCONFIRMED_DMS_S)
                    self.dms_expires_at = trio.current_time() + UNCONFIRMED_DMS_S
                    dms = f"armed {UNCONFIRMED_DMS_S}s, {what}"
                except VenueError as exc:
                    logger.warning("shortening the DMS failed: {}", exc)
                    dms = f"armed {self.dms_countdown}s, {what}"
                logger.error("{}; the dead man's switch stays {} as the backstop", what, dms.split(",")[0])
            summary = self.summary(result.left, positions, dms=dms, cancelled=result.cancelled)
        return summary

    def summary(
        self,
        open_left: int | None,
        positions: dict[str, Decimal],
        *,
        dms: str = "disarmed",
        cancelled: int | None = 0,
    ) -> RunSummary:
        pnl = {k: Decimal(0) for k in ("spread", "inventory", "fees", "funding", "net")}
        record_final_marks(self.journal, {n: getattr(self.view.get(n, AccountStats), "ledger", None)
                                          for n in self.markets})
        orders_sent = fills = 0
        for name in self.markets:
            acc = self.view.get(name, AccountStats)
            ex = self.view.get(name, ExecStats)
            if acc is not None:
                fills += acc.fills
                for k in pnl:
                    pnl[k] += acc.pnl.get(k, Decimal(0))
            if ex is not None:
                orders_sent += ex.orders_sent
        restarts = {
            name: {actor: self.restarts.get(f"{name}/{actor}", 0) for actor in ACTORS}
            for name in self.markets
        }
        return RunSummary(
            network=self.network,
            markets=tuple(self.markets),
            orders_sent=orders_sent,
            fills=fills,
            pnl=pnl,
            position=positions,
            open_orders_at_exit=open_left,
            restarts=restarts,
            breaker_trips=self.breaker_trips,
            dms=dms,
            cancelled_at_exit=cancelled,
            stream_reconnects=self.reconnect_counts(),
            lifetime_pnl=self.journal.lifetime_net(pnl["net"]),
        )

    def reconnect_counts(self) -> dict[str, dict[str, int]]:
        """`{market: {topic: n}}`, the shared account stream's count under every market."""
        return self.stream_reconnects.snapshot(self.markets, account=self.account_hub.failures)
