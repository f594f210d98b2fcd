"""The operator view model: one immutable snapshot of the bot that the dashboard, the
Prometheus metrics and `/healthz` all read, so the three always agree and can be tested
without running the bot. The root builds an `AppStatus` a few times per second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import attrs

from extmm.ops.telemetry import (
    AccountStats,
    BookStats,
    ExecStats,
    LiveOrderView,
    ModelEstimate,
    QuoteStats,
    TelemetryView,
)

NETWORKS = ("paper", "testnet", "mainnet", "custom")
BREAKER_STATES = ("CLOSED", "HALF_OPEN", "OPEN")
MARKET_STATES = ("STARTING", "ACTIVE", "REDUCING", "OFF", "HALTED")
PNL_COMPONENTS = ("spread", "inventory", "fees", "funding", "net")
MAX_WARNINGS = 5
DEFAULT_STALE_AFTER_S = 3.0  # RiskConfig.stale_book_ms default


@attrs.frozen(kw_only=True)
class QuoteSide:
    """One side of a quote or of a resting order: price and size, wire units."""

    price: Decimal
    size: Decimal


@attrs.frozen(kw_only=True)
class ActorStatus:
    name: str
    state: str  # free text from the supervisor, e.g. "running", "restarting", "stopped"
    restarts: int = 0


@attrs.frozen(kw_only=True)
class PnlSplit:
    """PnL in the quote currency (USD); spread + inventory + fees + funding == net."""

    spread: Decimal = Decimal(0)
    inventory: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    funding: Decimal = Decimal(0)
    net: Decimal = Decimal(0)

    @classmethod
    def from_mapping(cls, pnl: dict[str, Decimal]) -> PnlSplit:
        """From AccountStats.pnl; missing parts are 0 and a missing net is their sum."""
        parts = {name: _decimal(pnl.get(name)) for name in PNL_COMPONENTS[:-1]}
        net = pnl.get("net")
        return cls(**parts, net=_decimal(net) if net is not None else sum(parts.values(), Decimal(0)))

    def items(self) -> tuple[tuple[str, Decimal], ...]:
        return tuple((name, getattr(self, name)) for name in PNL_COMPONENTS)


def _decimal(value: object) -> Decimal:
    if value is None:
        return Decimal(0)
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _as_actor(actor: ActorStatus | tuple[str, str, int]) -> ActorStatus:
    if isinstance(actor, ActorStatus):
        return actor
    name, state, restarts = actor
    return ActorStatus(name=name, state=state, restarts=restarts)


@attrs.frozen(kw_only=True)
class MarketStatus:
    name: str
    state: str  # one of MARKET_STATES (unknown values are shown as they are)
    # top of book; None while there is no valid book
    bid: Decimal | None = None
    ask: Decimal | None = None
    bid_qty: Decimal | None = None
    ask_qty: Decimal | None = None
    mid: float | None = None
    spread_bps: float | None = None
    book_age_s: float | None = None
    book_stale: bool = True  # no book, an invalid one, or older than the stale threshold
    sigma: float | None = None
    # what the Quoter wants (after rounding), and the best resting order per side
    quote_bid: QuoteSide | None = None
    quote_ask: QuoteSide | None = None
    quote_reasons: tuple[str, ...] = ()
    model: str | None = None
    recalibrated: str | None = None  # the online σ, A, k the Quoter uses (model.recalibrate)
    live_bid: QuoteSide | None = None
    live_ask: QuoteSide | None = None
    # inventory: contracts (base asset) and USD at the mid
    position: Decimal = Decimal(0)
    position_usd: float = 0.0
    pnl: PnlSplit = PnlSplit()
    # cumulative counters since the market started
    open_orders: int = 0
    fills: int = 0
    quotes_published: int = 0
    orders_sent: int = 0
    replaces: int = 0
    cancels: int = 0
    rejects: int = 0
    reject_reasons: tuple[tuple[str, int], ...] = ()
    book_gaps: int = 0
    feed_reconnects: int = 0
    malformed_frames: int = 0
    actors: tuple[ActorStatus, ...] = ()
    latency_p50_ms: float | None = None  # order round trip (Executor)
    latency_p99_ms: float | None = None

    @property
    def restarts(self) -> int:
        return sum(a.restarts for a in self.actors)

    @classmethod
    def from_telemetry(
        cls,
        name: str,
        view: TelemetryView,
        *,
        state: str,
        actors: Iterable[ActorStatus | tuple[str, str, int]] = (),
        now: float,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        quotes_published: int = 0,
    ) -> MarketStatus:
        """Fill every market field from the latest telemetry of `name`.

        `now` is on the same clock as the telemetry timestamps (`trio.current_time()`);
        `actors` are (name, state, restart count) from the market supervisor. Kinds
        that have not reported yet leave their fields at the defaults.
        """
        book: BookStats | None = view.get(name, BookStats)
        quote: QuoteStats | None = view.get(name, QuoteStats)
        execution: ExecStats | None = view.get(name, ExecStats)
        account: AccountStats | None = view.get(name, AccountStats)
        fields: dict[str, Any] = {}
        if book is not None:
            age = max(0.0, now - book.updated_at)
            fields.update(
                bid=book.bid,
                ask=book.ask,
                bid_qty=book.bid_qty,
                ask_qty=book.ask_qty,
                mid=book.mid,
                spread_bps=spread_bps(book.bid, book.ask),
                book_age_s=age,
                book_stale=not book.valid or age > stale_after_s,
                sigma=book.sigma,
                book_gaps=book.gaps,
                feed_reconnects=book.reconnects,
                malformed_frames=book.malformed,
            )
        if quote is not None:
            fields.update(
                quote_bid=_side(quote.bid, quote.bid_qty),
                quote_ask=_side(quote.ask, quote.ask_qty),
                quote_reasons=quote.reasons,
                model=quote.model,
                recalibrated=_estimate_text(quote.estimate),
            )
        if execution is not None:
            fields.update(
                live_bid=_best(execution.open_orders, "BUY"),
                live_ask=_best(execution.open_orders, "SELL"),
                open_orders=len(execution.open_orders),
                orders_sent=execution.orders_sent,
                replaces=execution.replaces,
                cancels=execution.cancels,
                rejects=execution.rejects,
                reject_reasons=execution.reject_reasons,
                latency_p50_ms=execution.latency_p50_ms,
                latency_p99_ms=execution.latency_p99_ms,
            )
        if account is not None:
            fields.update(
                position=account.position,
                position_usd=account.position_usd,
                pnl=PnlSplit.from_mapping(account.pnl),
                fills=account.fills,
            )
        return cls(
            name=name,
            state=state,
            actors=tuple(_as_actor(a) for a in actors),
            quotes_published=quotes_published or (quote.published if quote is not None else 0),
            **fields,
        )


def spread_bps(bid: Decimal | None, ask: Decimal | None) -> float | None:
    """Quoted spread over the mid in basis points; None without both sides."""
    if bid is None or ask is None:
        return None
    mid = (bid + ask) / 2
    if mid <= 0:
        return None
    return float((ask - bid) / mid * 10_000)


def _side(price: Decimal | None, size: Decimal | None) -> QuoteSide | None:
    if price is None or size is None or size <= 0:
        return None
    return QuoteSide(price=price, size=size)


def _best(orders: tuple[LiveOrderView, ...], side: str) -> QuoteSide | None:
    mine = [o for o in orders if o.side.upper() == side]
    if not mine:
        return None
    # The best bid is the highest, the best ask the lowest.
    best = max(mine, key=lambda o: o.price) if side == "BUY" else min(mine, key=lambda o: o.price)
    return QuoteSide(price=best.price, size=best.qty)


def _last_warnings(lines: Iterable[str]) -> tuple[str, ...]:
    return tuple(lines)[-MAX_WARNINGS:]


@attrs.frozen(kw_only=True)
class AppStatus:
    network: str  # one of NETWORKS
    uptime_s: float
    breaker_state: str = "CLOSED"  # one of BREAKER_STATES
    breaker_trips: int = 0
    breaker_last_reason: str | None = None
    dms_countdown_s: float | None = None  # configured countdown; None if not used
    dms_remaining_s: float | None = None  # until the venue would cancel; None while disarmed
    rate_tokens: float = 0.0  # request budget left now (may dip below 0 after a 429)
    rate_capacity: float = 0.0
    rest_latency_p50_ms: float | None = None
    rest_latency_p99_ms: float | None = None
    rest_requests: int = 0
    rest_429s: int = 0
    rest_errors: int = 0
    balance: Decimal | None = None
    equity: Decimal | None = None
    warnings: tuple[str, ...] = attrs.field(default=(), converter=_last_warnings)  # newest last
    markets: tuple[MarketStatus, ...] = ()
    healthy: bool = False
    ready: bool = False
    stream_reconnects: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)  # market → topic → n
    lifetime_net: Decimal | None = None  # all sessions of this network and account (journal)
    journal: Any = None  # extmm.journal.actor.JournalStats; None without a journal

    @property
    def dms_armed(self) -> bool:
        return self.dms_remaining_s is not None

    @property
    def net_pnl(self) -> Decimal:
        return sum((m.pnl.net for m in self.markets), Decimal(0))

    def market(self, name: str) -> MarketStatus | None:
        return next((m for m in self.markets if m.name == name), None)


def example_status() -> AppStatus:
    """A realistic two-market snapshot (BTC-USD quoting, ETH-USD halted and flat), built
    through `MarketStatus.from_telemetry`; for the README picture, tests and demos."""
    now = 11_525.0
    view = TelemetryView()
    view.update(
        BookStats(
            market="BTC-USD",
            bid=Decimal("84077"),
            ask=Decimal("84078"),
            bid_qty=Decimal("0.51234"),
            ask_qty=Decimal("1.20480"),
            mid=84077.5,
            sigma=0.000412,
            valid=True,
            updated_at=now - 0.27,
            frames=412_337,
            gaps=1,
            reconnects=2,
            malformed=0,
        )
    )
    view.update(
        QuoteStats(
            market="BTC-USD",
            bid=Decimal("84043"),
            bid_qty=Decimal("0.00060"),
            ask=Decimal("84109"),
            ask_qty=Decimal("0.00058"),
            model="avellaneda_stoikov",
            reasons=(),
            at=now - 0.2,
        )
    )
    view.update(
        ExecStats(
            market="BTC-USD",
            open_orders=(
                LiveOrderView(
                    side="BUY", price=Decimal("84043"), qty=Decimal("0.00060"), external_id="extmm-b-1"
                ),
                LiveOrderView(
                    side="SELL", price=Decimal("84111"), qty=Decimal("0.00058"), external_id="extmm-a-1"
                ),
            ),
            orders_sent=3_184,
            replaces=2_517,
            cancels=371,
            rejects=2,
            reject_reasons=(("post_only_would_cross", 2),),
            orphans_cancelled=0,
            latency_p50_ms=38.0,
            latency_p99_ms=142.0,
            at=now - 0.4,
        )
    )
    view.update(
        AccountStats(
            market="BTC-USD",
            position=Decimal("0.00180"),
            position_usd=151.34,
            pnl={
                "spread": Decimal("12.41"),
                "inventory": Decimal("-3.27"),
                "fees": Decimal("-0.62"),
                "funding": Decimal("-0.04"),
                "net": Decimal("8.48"),
            },
            fills=42,
            balance=Decimal("9991.52"),
            equity=Decimal("10008.48"),
            drift_corrections=0,
            at=now - 1.0,
        )
    )
    view.update(
        BookStats(
            market="ETH-USD",
            bid=Decimal("2001.3"),
            ask=Decimal("2001.4"),
            bid_qty=Decimal("14.210"),
            ask_qty=Decimal("9.870"),
            mid=2001.35,
            sigma=0.000655,
            valid=True,
            updated_at=now - 14.2,
            frames=388_120,
            gaps=0,
            reconnects=1,
            malformed=3,
        )
    )
    view.update(
        ExecStats(
            market="ETH-USD",
            open_orders=(),
            orders_sent=1_902,
            replaces=1_433,
            cancels=455,
            rejects=9,
            reject_reasons=(("post_only_would_cross", 4), ("rate_limited", 5)),
            orphans_cancelled=1,
            latency_p50_ms=44.0,
            latency_p99_ms=611.0,
            at=now - 12.0,
        )
    )
    view.update(
        AccountStats(
            market="ETH-USD",
            position=Decimal("0.000"),
            position_usd=0.0,
            pnl={
                "spread": Decimal("6.02"),
                "inventory": Decimal("-4.87"),
                "fees": Decimal("-0.31"),
                "funding": Decimal("0.02"),
                "net": Decimal("0.86"),
            },
            fills=27,
            balance=Decimal("9991.52"),
            equity=Decimal("10008.48"),
            drift_corrections=1,
            at=now - 12.0,
        )
    )
    running = ("feed", "book", "quoter", "risk", "executor", "account")
    btc = MarketStatus.from_telemetry(
        "BTC-USD",
        view,
        state="ACTIVE",
        actors=[(name, "running", 1 if name == "feed" else 0) for name in running],
        now=now,
        quotes_published=9_812,
    )
    eth = MarketStatus.from_telemetry(
        "ETH-USD",
        view,
        state="HALTED",
        actors=[
            (name, "failed" if name == "executor" else "stopped", 5 if name == "executor" else 0)
            for name in running
        ],
        now=now,
        quotes_published=7_305,
    )
    return AppStatus(
        network="paper",
        uptime_s=now,
        breaker_state="CLOSED",
        breaker_trips=1,
        breaker_last_reason="429 burst: 6 responses in 60s (limit 5)",
        dms_countdown_s=120.0,
        dms_remaining_s=87.0,
        rate_tokens=941.0,
        rate_capacity=1000.0,
        rest_latency_p50_ms=41.0,
        rest_latency_p99_ms=188.0,
        rest_requests=12_904,
        rest_429s=6,
        rest_errors=3,
        balance=Decimal("9991.52"),
        equity=Decimal("10008.48"),
        warnings=(
            "03:11:52 WARNING ETH-USD: place failed: RateLimited (429), retry after 1.0s",
            "03:11:58 ERROR ETH-USD executor crashed (RuntimeError: order state out of sync)",
            "03:12:04 ERROR ETH-USD: 5 restarts in 60s, market halted",
            "03:12:05 WARNING ETH-USD: mass cancel by market done, 0 orders left",
        ),
        markets=(btc, eth),
        healthy=True,
        ready=True,
        stream_reconnects={
            "BTC-USD": {"orderbook": 1, "trades": 0, "funding": 0, "mark": 0, "account": 0},
            "ETH-USD": {"orderbook": 0, "trades": 0, "funding": 0, "mark": 0, "account": 0},
        },
    )


def _estimate_text(estimate: ModelEstimate | None) -> str | None:
    if estimate is None:
        return None

    def g(value: float | None) -> str:
        return "–" if value is None else f"{value:.3g}"

    return f"recal σ {g(estimate.sigma)} A {g(estimate.A)} k {g(estimate.k)} ({estimate.covered_s:.0f}s)"
