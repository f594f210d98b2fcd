"""The simulated exchange's state, shared by the engine's concerns (`extmm.sim.engine`).

`World` holds what every part of the engine reads and writes — the clock, the outbox,
the id counters, the accounts, the markets and the timers' queues — plus the snapshots
all of them report (`order_state`, `position_state`, `balance_state`). It decides
nothing: order validation (`extmm.sim.admission`), order entry (`extmm.sim.order_entry`),
matching (`extmm.sim.matching`), accounts (`extmm.sim.registry`), leverage and margin
(`extmm.sim.margin`), timers (`extmm.sim.timers`), the synthetic crowd
(`extmm.sim.crowd`) and the market views (`extmm.sim.marketview`) act on it.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

import attrs

from extmm.domain.units import MarketSpec
from extmm.sim.account import AccountState, MarketTerms, to_decimal, to_plain_decimal
from extmm.sim.book import OrderBook
from extmm.sim.flow import FlowParams, MarketFlow
from extmm.sim.model import (
    BalanceEvent,
    BalanceState,
    FundingRatePoint,
    OrderState,
    PositionState,
    PublicTrade,
    SimEvent,
    SimOrder,
    SimReject,
)
from extmm.sim.signing import TESTNET_DOMAIN, L2Config, StarknetDomain

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


@attrs.frozen(kw_only=True)
class EngineConfig:
    """Venue rules and simulation settings; defaults follow the Starknet testnet venue."""

    seed: int = 0
    domain: StarknetDomain = TESTNET_DOMAIN
    verify_signatures: bool = True  # off for virtual-time backtests that send unsigned bodies
    maker_fee: Decimal = Decimal("0.0000")  # DOC26 flat schedule
    taker_fee: Decimal = Decimal("0.00025")
    synthetic_flow: bool = True
    flow_params: Mapping[str, FlowParams] = attrs.field(
        factory=dict
    )  # per market; else FlowParams.for_market
    step_ms: int = 100  # flow step; divides 1000
    flow_preset: str = "default"  # extmm.sim.flow.FLOW_PRESETS: "default" or "toxic" (#16)
    mark_interval_ms: int = 1000  # mark/index publication cadence
    funding_interval_ms: int = HOUR_MS
    funding_estimate_interval_ms: int = 60_000
    max_expiry_ms: int = 90 * DAY_MS  # 1135 beyond this (mainnet 90 d; testnet 28 d)
    strict_nonce: bool = True  # nonce in [1, 2^31] as DOC26 requires
    check_margin: bool = True  # 1140 when an order's initial margin exceeds equity
    default_leverage: Decimal = Decimal(10)
    history_limit: int = 10_000  # per account: closed orders, trades, funding payments
    public_trades_kept: int = 1_000

    def __attrs_post_init__(self) -> None:
        if self.step_ms <= 0 or 1000 % self.step_ms:
            raise ValueError("step_ms must divide 1000")
        for name in ("mark_interval_ms", "funding_estimate_interval_ms", "funding_interval_ms"):
            if getattr(self, name) % self.step_ms:
                raise ValueError(f"{name} must be a multiple of step_ms")


def rate_decimal(value: float) -> Decimal:
    """A float rate from the flow as the venue's 6-decimal rate."""
    return Decimal(f"{value:.6f}")


class SimMarket:
    """Everything the engine keeps per market."""

    def __init__(self, raw: dict[str, Any], spec: MarketSpec, flow: MarketFlow | None) -> None:
        self.raw = raw
        self.name = spec.name
        self.spec = spec
        self.terms = MarketTerms.from_spec(spec, raw.get("tradingConfig", {}).get("riskFactorConfig"))
        self.l2 = L2Config.from_market(raw)
        self.book = OrderBook(spec.name)
        self.flow = flow
        trading = raw.get("tradingConfig", {})
        self.max_market_value = Decimal(str(trading.get("maxMarketOrderValue", spec.max_limit_order_value)))
        self.funding_cap = Decimal(str(trading.get("hourlyFundingRateCap", "0.25")))
        self.active = bool(raw.get("active", True)) and raw.get("status", "ACTIVE") in (
            "ACTIVE",
            "REDUCE_ONLY",
        )
        stats = raw.get("marketStats", {})
        mark = Decimal(str(stats.get("markPrice") or 0))
        if flow is not None:
            mark = Decimal(f"{flow.mid:.6f}")
        self.mark = mark
        self.index = Decimal(str(stats.get("indexPrice") or mark))
        self.funding_rate = (
            Decimal(str(stats.get("fundingRate") or 0)) if flow is None else rate_decimal(flow.funding_rate)
        )
        self.public_trades: deque[PublicTrade] = deque()
        self.funding_points: deque[FundingRatePoint] = deque(maxlen=24 * 365)
        self.first_ticks: int | None = None
        self.last_ticks: int | None = None
        self.low_ticks: int | None = None
        self.high_ticks: int | None = None
        self.volume_units = 0  # ticks*lots
        self.volume_lots = 0

    @property
    def mark_fraction(self) -> Fraction:
        return Fraction(self.mark)


class World:
    """The engine's mutable state and the snapshots it reports; see the module docstring."""

    def __init__(self, config: EngineConfig, *, start_ms: int, markets: Mapping[str, SimMarket]) -> None:
        self.config = config
        self.now = start_ms
        self.events: list[SimEvent] = []  # the outbox, drained by the engine's owner
        self.order_ids: Iterator[int] = itertools.count(1_900_000_000_000_000_001)
        self.trade_ids: Iterator[int] = itertools.count(2_100_000_000_000_000_001)
        self.position_ids: Iterator[int] = itertools.count(1_000_001)
        self.funding_ids: Iterator[int] = itertools.count(1)
        self.account_ids: Iterator[int] = itertools.count(1)
        self.accounts: dict[int, AccountState] = {}
        self.api_keys: dict[str, int] = {}
        self.markets: dict[str, SimMarket] = dict(markets)
        self.terms: dict[str, MarketTerms] = {name: m.terms for name, m in self.markets.items()}
        # Order expiries, a heap of (expiry_ms, order id, order); stale entries are skipped.
        self.expiries: list[tuple[int, int, SimOrder]] = []
        interval = config.funding_interval_ms
        self.next_funding_ms = (start_ms // interval + 1) * interval
        # Our (non-crowd) resting orders' fills by how they came about (#16): "sweep" (a
        # crowd taker traded through our price), "queue" (it stopped at our price),
        # "crossed" (a crowd order placed across our stale quote as the mid moved), "other".
        self.maker_fills: Counter[str] = Counter()
        self.maker_fill_buffer: list[SimOrder] = []

    # -- lookups ---------------------------------------------------------------------------
    def market(self, name: str) -> SimMarket:
        market = self.markets.get(name)
        if market is None:
            raise SimReject(1001, f"market {name!r} not found", 404)
        return market

    def account(self, account_id: int) -> AccountState:
        account = self.accounts.get(account_id)
        if account is None:
            raise SimReject(401, f"unknown account {account_id}", 401)
        return account

    def fee_rates(self, account: AccountState, market: str) -> tuple[Decimal, Decimal]:
        """(maker, taker) for the account in the market: its override, else the venue's."""
        return account.fee_overrides.get(market, (self.config.maker_fee, self.config.taker_fee))

    def marks(self) -> dict[str, Fraction]:
        return {name: m.mark_fraction for name, m in self.markets.items()}

    # -- snapshots -------------------------------------------------------------------------
    def order_state(self, order: SimOrder) -> OrderState:
        spec = self.markets[order.market].spec
        average = None
        if order.filled_lots:
            average = to_plain_decimal(
                Fraction(order.filled_units, order.filled_lots) * Fraction(spec.tick_size)
            )
        return OrderState(
            id=order.id,
            account_id=order.account_id,
            external_id=order.external_id,
            market=order.market,
            type=order.type,
            side=order.side,
            status=order.status,
            status_reason=order.status_reason,
            price=spec.ticks_to_price(order.price_ticks),
            average_price=average,
            qty=spec.lots_to_qty(order.qty_lots),
            filled_qty=spec.lots_to_qty(order.filled_lots),
            cancelled_qty=spec.lots_to_qty(order.cancelled_lots),
            reduce_only=order.reduce_only,
            post_only=order.post_only,
            payed_fee=to_decimal(order.payed_fee),
            created_ms=order.created_ms,
            updated_ms=order.updated_ms,
            expiry_ms=order.expiry_ms,
            time_in_force=order.time_in_force,
            stp=order.stp,
        )

    def position_state(self, account: AccountState, market: str) -> PositionState:
        m = self.markets[market]
        return account.position_state(m.terms, m.mark_fraction, self.config.default_leverage)

    def balance_state(self, account: AccountState) -> BalanceState:
        return account.balance_state(self.terms, self.marks(), self.config.default_leverage, self.now)

    def emit_balance(self, account: AccountState) -> None:
        self.events.append(
            BalanceEvent(account_id=account.info.id, balance=self.balance_state(account), ts=self.now)
        )
