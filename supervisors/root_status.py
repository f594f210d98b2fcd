"""What the root shows (`RootStatus`, a part of `supervisors.root.RootSupervisor`): the
panel's `AppStatus`, each market's state and actors, and the watchdog's `healthy()`."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import attrs
import trio

from extmm.domain.breaker import CircuitBreaker
from extmm.ops.status import ActorStatus, AppStatus, MarketStatus
from extmm.ops.telemetry import AccountStats, BookStats, RiskStats
from extmm.venue.reconnects import StreamReconnects
from extmm.venue.shared_account import SharedAccountStream
from supervisors.market import ACTORS
from supervisors.root_fields import RootFields


class RootStatus(RootFields):
    breaker: CircuitBreaker
    halt_left: dict[str, int | None]
    stream_reconnects: StreamReconnects
    account_hub: SharedAccountStream
    warnings: Callable[[], tuple[str, ...]]
    started_at: float
    ready: bool
    book_silence_s: float

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
        state = self.trading.state
        if name in state.halted:
            return "HALTED"
        if not state.quoting:
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
        switch = self.trading.state.switch
        return AppStatus(
            network=self.network,
            uptime_s=now - self.started_at,
            breaker_state=self.breaker.state_name,
            breaker_trips=self.breaker_shell.trips,
            breaker_last_reason=self.breaker.last_reason,
            dms_countdown_s=float(switch.countdown_s),
            dms_remaining_s=switch.remaining(now),
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
        """Every market quoting normally or safely halted, and the heartbeat alive."""
        if not self.ready:
            return False
        now = trio.current_time()
        state = self.trading.state
        if now - self.switch.last_beat > max(state.switch.countdown_s, 3):
            return False
        for name in self.markets:
            if name in state.halted:
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

    def reconnect_counts(self) -> dict[str, dict[str, int]]:
        """`{market: {topic: n}}`, the shared account stream's count under every market."""
        return self.stream_reconnects.snapshot(self.markets, account=self.account_hub.failures)
