"""The simulated Extended exchange: matching, accounts, timers and synthetic flow, in one object.

`SimEngine` is pure: no I/O, no clock, no trio. Every mutating call takes the current
epoch time in ms and first brings the world up to it (`advance`): order expiries, dead
man's switches, hourly funding and the synthetic flow run in time order, so the same
seed and the same calls at the same times give the same results, in real or virtual
time. REST-level refusals raise `SimReject`; everything the venue would report on its
streams (order states, fills, positions, balances, public trades, marks, funding) is
appended to an outbox that the owner drains (`drain_events`, `drain_book_changes`).

Choices where the venue's behaviour is not documented (SPEC §11), in one place:
- post-only that would cross: status REJECTED, statusReason POST_ONLY_FAILED;
- self-trade protection: the taker's level decides (DISABLED / ACCOUNT: same account /
  CLIENT: same client id); on a conflict the taker's remainder is CANCELLED with
  SELF_TRADE_PROTECTION and the resting order stays;
- replace (`cancelId`): REST-level failures (codes below) leave the old order alone. A
  `cancelId` that names no open order of the account is an engine-level outcome: the new
  order is REJECTED/PREV_ORDER_NOT_FOUND (PREV_ORDER_CONFLICT if the old order is in
  another market). Otherwise the old order ends CANCELLED/ORDER_REPLACED first and the new
  one is then matched; if the new one is rejected by the engine (e.g. post-only cross),
  both are gone. The new order may not reuse an externalId the account has used (1134);
- IOC and MARKET remainders end CANCELLED with statusReason NO_LIQUIDITY (or FILLED);
- user cancels, mass cancels and DMS expiry give CANCELLED with no statusReason; expiry
  gives EXPIRED; cancelling an order that is already closed is acknowledged silently,
  an id the account never had is 404;
- HTTP statuses: 400 for every validation code, 401 for an unknown API key, 404 for an
  unknown order or market path;
- the signed `fee` must be at least the account's maker rate (post-only) or taker rate
  (otherwise), else 1128; fills charge the actual maker/taker rate, rounded up to 1e-6;
- signatures: `starkKey` other than the account's key → 1100, `collateralPosition` other
  than its vault → 1102, a signature that does not verify → 1101 (all REST-level);
  nonces outside [1, 2^31] → 1133 unless `strict_nonce=False`;
- reduce-only (simplified): at placement it must shrink the current position, else
  REJECTED/REDUCE_ONLY_FAILED; TOB/FOK and CONDITIONAL/TPSL/TWAP orders → 1133;
- events of one match, per account: the resting orders' ORDER and TRADE as each fills,
  then the taker's ORDER and its TRADEs, then POSITION and BALANCE of every account
  involved; the crowd (account 0) reports nothing.

The outbox has one consumer. Book changes accumulate per market until drained; drain a
market (`drain_book_delta`) before taking the snapshot for a new subscriber so that the
snapshot and the following deltas line up.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import attrs

from extmm.domain.units import MarketSpec, Side
from extmm.markets import bundled_markets, spec_from_market
from extmm.sim.account import (
    AccountState,
    MarketTerms,
    fee_amount,
    funding_amount,
    to_decimal,
    to_plain_decimal,
)
from extmm.sim.book import LevelUnits, OrderBook
from extmm.sim.flow import FlowParams, MarketFlow
from extmm.sim.model import (
    CANCELLED,
    CROWD_ACCOUNT_ID,
    EXPIRED,
    FILLED,
    NEW,
    PARTIALLY_FILLED,
    REJECTED,
    AccountInfo,
    BalanceEvent,
    BalanceState,
    BookDelta,
    BookLevel,
    BookSnapshot,
    FeeSchedule,
    Fill,
    FundingPaymentRecord,
    FundingRateEvent,
    FundingRatePoint,
    IndexPriceEvent,
    Ledger,
    LevelChange,
    MarketStats,
    MarkPriceEvent,
    OrderState,
    OrderStateEvent,
    PositionEvent,
    PositionState,
    PublicTrade,
    PublicTradesEvent,
    SimEvent,
    SimOrder,
    SimReject,
    TradeEvent,
)
from extmm.sim.signing import (
    TESTNET_DOMAIN,
    KeyPair,
    L2Config,
    SignatureError,
    StarknetDomain,
    generate_key_pair,
    verify_order_body,
)
from extmm.sim.validation import grid_units, parse_order_body
from extmm.venue.types import PlacedOrder

DAY_MS = 86_400_000
UNCHECKED = object()  # `place_order(signature=...)`: no verdict given, check it there
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


class _Market:
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
            Decimal(str(stats.get("fundingRate") or 0)) if flow is None else _rate(flow.funding_rate)
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


def _rate(value: float) -> Decimal:
    return Decimal(f"{value:.6f}")


def _stp_blocks(taker: SimOrder, maker: SimOrder) -> bool:
    if taker.stp == "ACCOUNT":
        return maker.account_id == taker.account_id
    if taker.stp == "CLIENT":
        return maker.client_id == taker.client_id
    return False


class SimEngine:
    """An Extended-compatible exchange in memory. See the module docstring for the rules."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        start_ms: int,
        markets: Iterable[Mapping[str, Any]] | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self._now = start_ms
        self._events: list[SimEvent] = []
        self._order_ids = itertools.count(1_900_000_000_000_000_001)
        self._trade_ids = itertools.count(2_100_000_000_000_000_001)
        self._position_ids = itertools.count(1_000_001)
        self._funding_ids = itertools.count(1)
        self._account_ids = itertools.count(1)
        self._accounts: dict[int, AccountState] = {}
        self._api_keys: dict[str, int] = {}
        self._expiries: list[tuple[int, int, SimOrder]] = []
        self._markets: dict[str, _Market] = {}
        # Our (non-crowd) resting orders' fills by how they came about (#16): "sweep" (a
        # crowd taker traded through our price), "queue" (it stopped at our price),
        # "crossed" (a crowd order placed across our stale quote as the mid moved), "other".
        self.maker_fills: Counter[str] = Counter()
        self._maker_fill_buffer: list[SimOrder] = []
        raw_markets = list(markets) if markets is not None else list(bundled_markets().values())
        for raw in raw_markets:
            raw = dict(raw)
            spec = spec_from_market(raw)
            flow = None
            if self.config.synthetic_flow:
                params = self.config.flow_params.get(spec.name) or FlowParams.for_market(
                    raw, preset=self.config.flow_preset
                )
                flow = MarketFlow(params, spec, random.Random(f"{self.config.seed}:flow:{spec.name}"))
            self._markets[spec.name] = _Market(raw, spec, flow)
        self._terms = {name: m.terms for name, m in self._markets.items()}
        step = self.config.step_ms
        self._next_step_ms = (start_ms // step + 1) * step
        interval = self.config.funding_interval_ms
        self._next_funding_ms = (start_ms // interval + 1) * interval
        for market in self._markets.values():
            if market.flow is not None:
                self._refresh_crowd(market)
        for market in self._markets.values():
            market.book.drain_changes()  # the opening book is the first snapshot, not a delta

    # == time ================================================================================
    @property
    def now_ms(self) -> int:
        return self._now

    @property
    def domain(self) -> StarknetDomain:
        return self.config.domain

    def advance(self, now_ms: int) -> None:
        """Run everything due up to `now_ms` (a time in the past is treated as the present)."""
        if now_ms <= self._now:
            return
        if any(m.flow is not None for m in self._markets.values()):
            step = self.config.step_ms
            t = self._next_step_ms
            while t <= now_ms:
                self._run_timers(t)
                self._now = t
                self._flow_step(t)
                t += step
            self._next_step_ms = t
        self._run_timers(now_ms)
        self._now = now_ms

    def _run_timers(self, until_ms: int) -> None:
        while True:
            due = until_ms + 1
            kind = ""
            if self._expiries and self._expiries[0][0] < due:
                due, kind = self._expiries[0][0], "expiry"
            for account in self._accounts.values():
                if account.dms_deadline_ms is not None and account.dms_deadline_ms < due:
                    due, kind = account.dms_deadline_ms, "dms"
            if self._next_funding_ms < due:
                due, kind = self._next_funding_ms, "funding"
            if not kind:
                return
            self._now = max(self._now, due)
            if kind == "expiry":
                _, _, order = heapq.heappop(self._expiries)
                if order.is_open and order.expiry_ms is not None and order.expiry_ms <= due:
                    self._close(order, EXPIRED, None)
            elif kind == "dms":
                self._fire_dms(due)
            else:
                self._apply_funding(due)
                self._next_funding_ms += self.config.funding_interval_ms

    def _fire_dms(self, due: int) -> None:
        for account in self._accounts.values():
            if account.dms_deadline_ms is not None and account.dms_deadline_ms <= due:
                account.dms_deadline_ms = None
                for order in list(account.open_orders.values()):
                    self._close(order, CANCELLED, None)

    # == accounts ============================================================================
    def create_account(
        self,
        *,
        balance: Decimal | int | str = Decimal(10_000),
        api_key: str | None = None,
        key_pair: KeyPair | None = None,
        public_key: int | None = None,
        vault: int | None = None,
        client_id: int | None = None,
        description: str = "",
    ) -> AccountInfo:
        """A new funded account; missing keys are generated deterministically from the seed.

        Give `key_pair`, or only `public_key` for an account whose orders are signed
        elsewhere (e.g. the SDK's public test key); `private_key` of the result is then None.
        """
        account_id = next(self._account_ids)
        rng = random.Random(f"{self.config.seed}:account:{account_id}")
        if key_pair is None and public_key is None:
            key_pair = generate_key_pair(rng)
        if api_key is None:
            api_key = f"{rng.getrandbits(128):032x}"
        if api_key in self._api_keys:
            raise ValueError("API key already in use")
        info = AccountInfo(
            id=account_id,
            client_id=client_id if client_id is not None else account_id,
            description=description or f"sim account {account_id}",
            vault=vault if vault is not None else 100_000 + account_id,
            public_key=key_pair.public_key if key_pair is not None else public_key,
            api_key=api_key,
            private_key=key_pair.private_key if key_pair is not None else None,
        )
        state = AccountState(info, history_limit=self.config.history_limit, created_ms=self._now)
        state.deposit(Fraction(Decimal(str(balance))), self._now)
        self._accounts[account_id] = state
        self._api_keys[api_key] = account_id
        return info

    def authenticate(self, api_key: str | None) -> AccountInfo:
        """The account of an `X-Api-Key`, or SimReject 401."""
        account_id = self._api_keys.get(api_key or "")
        if account_id is None:
            raise SimReject(401, "Unauthorized", 401)
        return self._accounts[account_id].info

    def account_by_api_key(self, api_key: str | None) -> AccountInfo | None:
        account_id = self._api_keys.get(api_key or "")
        return None if account_id is None else self._accounts[account_id].info

    def account_info(self, account_id: int) -> AccountInfo:
        return self._account(account_id).info

    def accounts(self) -> list[AccountInfo]:
        return [a.info for a in self._accounts.values()]

    def _account(self, account_id: int) -> AccountState:
        account = self._accounts.get(account_id)
        if account is None:
            raise SimReject(401, f"unknown account {account_id}", 401)
        return account

    def deposit(self, account_id: int, amount: Decimal, now_ms: int) -> None:
        self.advance(now_ms)
        account = self._account(account_id)
        account.deposit(Fraction(amount), self._now)
        self._emit_balance(account)

    def set_fee_rates(self, account_id: int, market: str, *, maker: Decimal, taker: Decimal) -> None:
        self._market(market)
        self._account(account_id).fee_overrides[market] = (maker, taker)

    def set_leverage(self, account_id: int, market: str, leverage: Decimal, now_ms: int) -> None:
        """`PATCH /user/leverage` (SPEC §4.7): refused when out of range, above what the
        margin tier of the current position and orders allows, or when the margin at the
        new leverage exceeds equity. The venue's codes are 1049–1053 without a documented
        mapping; ours: 1049 out of range, 1050 above the tier, 1051 margin short."""
        self.advance(now_ms)
        m = self._market(market)
        account = self._account(account_id)
        max_leverage = Decimal(str(m.raw.get("tradingConfig", {}).get("maxLeverage", "50")))
        if not 0 < leverage <= max_leverage:
            raise SimReject(1049, f"leverage must be in (0, {max_leverage}]")
        marks = self._marks()
        terms = m.terms
        book = account.open_book.get(market) or [0, 0]
        buys, sells = book[0], book[1]  # ticks×lots resting on each side
        position = account.positions.get(market)
        value = position.signed_value(terms.lot, marks[market]) if position and position.lots else Fraction(0)
        unit = terms.tick * terms.lot
        exposure = max(abs(value + buys * unit), abs(value - sells * unit))
        tier_max = 1 / terms.risk_factor(exposure)
        if Fraction(leverage) > tier_max:
            raise SimReject(1050, f"leverage {leverage} is above {float(tier_max):g}, the maximum for this position size")
        previous = account.leverage.get(market)
        account.leverage[market] = leverage
        equity = account.balance + account.unrealised(self._terms, marks)
        if account.initial_margin(self._terms, marks, self.config.default_leverage) > equity:
            if previous is None:
                del account.leverage[market]
            else:
                account.leverage[market] = previous
            raise SimReject(1051, f"margin at leverage {leverage} would exceed the account's equity")
        self._emit_balance(account)

    def leverage(self, account_id: int, market: str | None = None) -> list[tuple[str, Decimal]]:
        account = self._account(account_id)
        names = [market] if market else list(self._markets)
        return [(name, account.leverage_for(name, self.config.default_leverage)) for name in names]

    def set_dms(self, account_id: int, countdown_s: int, now_ms: int) -> None:
        """Arm or re-arm the dead man's switch; 0 disarms (SPEC §4.11)."""
        self.advance(now_ms)
        account = self._account(account_id)
        if countdown_s < 0:
            raise SimReject(400, "countdownTime must be a non-negative number of seconds", 400)
        account.dms_deadline_ms = None if countdown_s == 0 else self._now + countdown_s * 1000

    def dms_deadline(self, account_id: int) -> int | None:
        return self._account(account_id).dms_deadline_ms

    def fire_dms(self, account_id: int, now_ms: int) -> bool:
        """Expire an armed dead man's switch now (fault drills); False if it was not armed."""
        self.advance(now_ms)
        account = self._account(account_id)
        if account.dms_deadline_ms is None:
            return False
        account.dms_deadline_ms = self._now
        self._run_timers(self._now)
        return True

    def _fee_rates(self, account: AccountState, market: str) -> tuple[Decimal, Decimal]:
        return account.fee_overrides.get(market, (self.config.maker_fee, self.config.taker_fee))

    # == markets =============================================================================
    def market_names(self) -> list[str]:
        return list(self._markets)

    def _market(self, name: str) -> _Market:
        market = self._markets.get(name)
        if market is None:
            raise SimReject(1001, f"market {name!r} not found", 404)
        return market

    def market_object(self, name: str) -> dict[str, Any]:
        """The venue's market object (as served at start) — combine with `market_stats`."""
        return self._market(name).raw

    def market_spec(self, name: str) -> MarketSpec:
        return self._market(name).spec

    def l2_config(self, name: str) -> L2Config:
        return self._market(name).l2

    def flow_params(self, name: str) -> FlowParams | None:
        flow = self._market(name).flow
        return flow.params if flow else None

    def mid(self, name: str) -> float:
        """The flow's true (float) mid; without a flow, the mark."""
        m = self._market(name)
        return m.flow.mid if m.flow else float(m.mark)

    def mark_price(self, name: str) -> Decimal:
        return self._market(name).mark

    def index_price(self, name: str) -> Decimal:
        return self._market(name).index

    def funding_rate(self, name: str) -> Decimal:
        return self._market(name).funding_rate

    def set_mark_price(self, name: str, price: Decimal, now_ms: int | None = None) -> None:
        """Pin the mark (tests, markets without flow); a flow overwrites it on its next step."""
        if now_ms is not None:
            self.advance(now_ms)
        m = self._market(name)
        m.mark = Decimal(price)
        m.index = Decimal(price)
        self._events.append(MarkPriceEvent(market=name, price=m.mark, ts=self._now))

    def set_funding_rate(self, name: str, rate: Decimal) -> None:
        self._market(name).funding_rate = Decimal(rate)

    def market_stats(self, name: str) -> MarketStats:
        m = self._market(name)
        spec = m.spec
        best_bid = m.book.bids.best()
        best_ask = m.book.asks.best()
        last = m.last_ticks
        first = m.first_ticks
        change = (last - first) if last is not None and first is not None else 0
        long_lots = sum(
            a.positions[name].lots
            for a in self._accounts.values()
            if name in a.positions and a.positions[name].lots > 0
        )
        mark = m.mark
        zero_price = spec.ticks_to_price(0)
        return MarketStats(
            daily_volume=to_decimal(Fraction(m.volume_units) * m.terms.tick * m.terms.lot),
            daily_volume_base=spec.lots_to_qty(m.volume_lots),
            daily_price_change=spec.ticks_to_price(change),
            daily_price_change_percentage=(
                Decimal(change) / Decimal(first) if first else Decimal(0)
            ).quantize(Decimal("0.0001")),
            daily_low=spec.ticks_to_price(m.low_ticks) if m.low_ticks is not None else zero_price,
            daily_high=spec.ticks_to_price(m.high_ticks) if m.high_ticks is not None else zero_price,
            last_price=spec.ticks_to_price(last) if last is not None else zero_price,
            ask_price=spec.ticks_to_price(best_ask) if best_ask is not None else zero_price,
            bid_price=spec.ticks_to_price(best_bid) if best_bid is not None else zero_price,
            mark_price=mark,
            index_price=m.index,
            funding_rate=m.funding_rate,
            next_funding_ms=self._next_funding_ms,
            open_interest=to_decimal(long_lots * m.terms.lot * m.mark_fraction),
            open_interest_base=spec.lots_to_qty(long_lots),
        )

    def public_trades(self, name: str, limit: int = 50) -> list[PublicTrade]:
        """The latest prints, oldest first."""
        trades = self._market(name).public_trades
        return list(trades)[-limit:] if limit else []

    def funding_rates(
        self, name: str, start_ms: int = 0, end_ms: int | None = None
    ) -> list[FundingRatePoint]:
        """Hourly applied rates in [start, end], newest first."""
        points = self._market(name).funding_points
        end = self._now if end_ms is None else end_ms
        return [p for p in reversed(points) if start_ms <= p.ts <= end]

    def book_snapshot(self, name: str, depth: int | None = None) -> BookSnapshot:
        """Aggregated levels best-first. Drain book changes first when serving a new subscriber."""
        m = self._market(name)
        spec = m.spec
        return BookSnapshot(
            market=name,
            ts=self._now,
            bids=tuple(
                BookLevel(price=spec.ticks_to_price(p), qty=spec.lots_to_qty(q))
                for p, q in m.book.levels(True, depth)
            ),
            asks=tuple(
                BookLevel(price=spec.ticks_to_price(p), qty=spec.lots_to_qty(q))
                for p, q in m.book.levels(False, depth)
            ),
        )

    def book_levels(
        self, name: str, depth: int | None = None
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Integer (ticks, lots) levels best-first: bids, asks."""
        book = self._market(name).book
        return book.levels(True, depth), book.levels(False, depth)

    def drain_book_changes(self) -> list[BookDelta]:
        """Per market, the levels that changed since its last drain (unchanged markets left out)."""
        out = []
        for name in self._markets:
            delta = self.drain_book_delta(name)
            if delta.bids or delta.asks:
                out.append(delta)
        return out

    def drain_level_changes(self) -> list[tuple[str, list[LevelUnits], list[LevelUnits]]]:
        """`drain_book_changes` in integers, for publishers that render their own text:
        `(market, bids, asks)` of changed markets, levels `(ticks, Δlots, lots)` best first."""
        out = []
        for name, m in self._markets.items():
            bids, asks = m.book.drain_changes()
            if bids or asks:
                out.append((name, bids, asks))
        return out

    def drain_book_delta(self, name: str) -> BookDelta:
        """One market's level changes since its last drain (empty tuples: nothing changed).

        Changes accumulate per market until drained, so a stalled consumer gets them all
        at once later; the engine never drains on its own.
        """
        m = self._market(name)
        spec = m.spec
        bids, asks = m.book.drain_changes()
        return BookDelta(
            market=name,
            ts=self._now,
            bids=tuple(
                LevelChange(price=spec.ticks_to_price(p), delta=spec.lots_to_qty(d), qty=spec.lots_to_qty(q))
                for p, d, q in bids
            ),
            asks=tuple(
                LevelChange(price=spec.ticks_to_price(p), delta=spec.lots_to_qty(d), qty=spec.lots_to_qty(q))
                for p, d, q in asks
            ),
        )

    def drain_events(self) -> list[SimEvent]:
        """Everything reported since the last drain, in order."""
        events, self._events = self._events, []
        return events

    # == orders: writes ======================================================================
    def check_signature(self, account_id: int, body: Mapping[str, Any]) -> SignatureError | None:
        """The signature verdict for an order body (None: valid, or not checkable yet —
        an unknown market or account is refused by `place_order` itself). Reads only
        immutable configuration: safe to run in a worker thread."""
        market = body.get("market")
        m = self._markets.get(market) if isinstance(market, str) else None
        account = self._accounts.get(account_id)
        if m is None or account is None:
            return None
        try:
            verify_order_body(
                body, m.l2, self.config.domain, public_key=account.info.public_key, vault=account.info.vault
            )
        except SignatureError as exc:
            return exc
        return None

    def place_order(
        self,
        account_id: int,
        body: Mapping[str, Any],
        now_ms: int,
        *,
        force_reject: str | None = None,
        signature: SignatureError | None | object = UNCHECKED,
    ) -> PlacedOrder:
        """`POST /user/order`: validate, then accept and match. Returns the ack.

        `force_reject` (fault injection) accepts the order and rejects it in the engine
        with that status reason, like a matching-engine refusal after a 200 (a replaced
        order is cancelled all the same, as for a post-only cross).
        `signature`: the verdict of `check_signature` computed beforehand (the served
        simulator checks in a worker thread, as a venue's front end would not stall on
        it); by default the signature is checked here. Either way a bad signature is
        refused at the same point of the validation order.
        """
        self.advance(now_ms)
        now = self._now
        account = self._account(account_id)
        intent = parse_order_body(body, strict_nonce=self.config.strict_nonce)
        m = self._markets.get(intent.market)
        if m is None:
            raise SimReject(1001, f"market {intent.market!r} not found")
        if not m.active:
            raise SimReject(1002, f"market {intent.market} is disabled")
        spec = m.spec
        ticks, lots = grid_units(spec, intent)
        value = intent.price * intent.qty
        max_value = m.max_market_value if intent.type == "MARKET" else spec.max_limit_order_value
        if value > max_value:
            raise SimReject(1122, f"order value {value} exceeds the maximum {max_value}")
        self._check_price_band(m, intent.type, intent.side, intent.price)
        if intent.expiry_ms <= now or intent.expiry_ms > now + self.config.max_expiry_ms:
            raise SimReject(1135, "expiryEpochMillis must be in the future and within the maximum expiration")
        maker_rate, taker_rate = self._fee_rates(account, m.name)
        required_fee = maker_rate if intent.post_only else taker_rate
        if intent.fee < required_fee:
            raise SimReject(1128, f"fee {intent.fee} is below the applicable rate {required_fee}")
        if self.config.verify_signatures:
            if signature is UNCHECKED:
                signature = self.check_signature(account_id, body)
            if isinstance(signature, SignatureError):
                raise SimReject(signature.code, str(signature))
        if intent.external_id in account.orders_by_external:
            raise SimReject(1134, f"duplicate order id {intent.external_id!r}")
        previous = account.open_by_external.get(intent.cancel_id) if intent.cancel_id is not None else None
        open_count = account.open_count(m.name)
        if previous is not None and previous.market == m.name:
            open_count -= 1
        if open_count >= spec.max_num_orders:
            raise SimReject(1126, f"at most {spec.max_num_orders} open orders per market")
        if self.config.check_margin and not intent.reduce_only:
            self._check_margin(account, m, intent.side, ticks * lots, previous)

        order = SimOrder(
            id=next(self._order_ids),
            account_id=account.info.id,
            client_id=account.info.client_id,
            external_id=intent.external_id,
            market=m.name,
            side=intent.side,
            type=intent.type,
            time_in_force=intent.time_in_force,
            price_ticks=ticks,
            qty_lots=lots,
            post_only=intent.post_only,
            reduce_only=intent.reduce_only,
            stp=intent.stp,
            fee_rate=intent.fee,
            expiry_ms=intent.expiry_ms,
            created_ms=now,
            updated_ms=now,
        )
        account.remember(order)
        ack = PlacedOrder(id=order.id, external_id=order.external_id)
        if intent.cancel_id is not None:
            if previous is None:
                self._close(order, REJECTED, "PREV_ORDER_NOT_FOUND")
                return ack
            if previous.market != m.name:
                self._close(order, REJECTED, "PREV_ORDER_CONFLICT")
                return ack
            self._close(previous, CANCELLED, "ORDER_REPLACED")
        if force_reject is not None:
            self._close(order, REJECTED, force_reject)
            return ack
        if order.reduce_only and not self._reduces(account, order):
            self._close(order, REJECTED, "REDUCE_ONLY_FAILED")
            return ack
        self._submit(m, order)
        self._classify_maker_fills(lambda _maker: "other")
        return ack

    def _check_price_band(self, m: _Market, order_type: str, side: Side, price: Decimal) -> None:
        mark = m.mark
        if mark <= 0:
            return
        if order_type == "MARKET":
            cap = floor = Decimal("0.05")
        else:
            cap, floor = m.spec.limit_price_cap, m.spec.limit_price_floor
        if side is Side.BUY and price > mark * (1 + cap):
            raise SimReject(1141, f"buy price {price} is above mark {mark} × (1 + {cap})")
        if side is Side.SELL and price < mark * (1 - floor):
            raise SimReject(1141, f"sell price {price} is below mark {mark} × (1 − {floor})")

    def _check_margin(
        self, account: AccountState, m: _Market, side: Side, units: int, previous: SimOrder | None
    ) -> None:
        lev = self.config.default_leverage
        adjust: list[tuple[str, int, int]] = [(m.name, side.sign, units)]
        if previous is not None:
            adjust.append(
                (previous.market, previous.side.sign, -previous.price_ticks * previous.remaining_lots)
            )
        # Screen in floats first: far from the limit the exact rational check cannot differ.
        float_marks = {name: float(market.mark) for name, market in self._markets.items()}
        estimate, equity_estimate = account.margin_estimate(self._terms, float_marks, lev, extra=adjust)
        if estimate < 0.99 * equity_estimate:
            return
        marks = self._marks()
        before = account.initial_margin(self._terms, marks, lev)
        after = account.initial_margin(self._terms, marks, lev, extra=adjust)
        equity = account.balance + account.unrealised(self._terms, marks)
        if after > before and after > equity:
            raise SimReject(1140, "order cost exceeds the available balance")

    def _reduces(self, account: AccountState, order: SimOrder) -> bool:
        position = account.positions.get(order.market)
        held = position.lots if position else 0
        return held != 0 and (held > 0) != (order.side.sign > 0) and order.qty_lots <= abs(held)

    def cancel_order(self, account_id: int, order_id: int, now_ms: int) -> None:
        """`DELETE /user/order/{id}`; 404 if the account never had the order."""
        self.advance(now_ms)
        account = self._account(account_id)
        order = account.orders_by_id.get(order_id)
        if order is None:
            raise SimReject(404, f"order {order_id} not found", 404)
        if order.is_open:
            self._close(order, CANCELLED, None)

    def cancel_order_by_external_id(self, account_id: int, external_id: str, now_ms: int) -> None:
        """`DELETE /user/order?externalId=`; 404 if the account never used the id."""
        self.advance(now_ms)
        account = self._account(account_id)
        if external_id not in account.orders_by_external:
            raise SimReject(404, f"order with externalId {external_id!r} not found", 404)
        order = account.open_by_external.get(external_id)
        if order is not None:
            self._close(order, CANCELLED, None)

    def mass_cancel(
        self,
        account_id: int,
        now_ms: int,
        *,
        order_ids: Sequence[int] = (),
        external_ids: Sequence[str] = (),
        markets: Sequence[str] = (),
        cancel_all: bool = False,
    ) -> int:
        """`POST /user/order/massCancel`: cancels the union of the selections; returns how many."""
        self.advance(now_ms)
        account = self._account(account_id)
        ids = set(order_ids)
        externals = set(external_ids)
        market_set = set(markets)
        doomed = [
            o
            for o in account.open_orders.values()
            if cancel_all or o.id in ids or o.external_id in externals or o.market in market_set
        ]
        for order in doomed:
            self._close(order, CANCELLED, None)
        return len(doomed)

    # == orders: reads =======================================================================
    def open_orders(self, account_id: int, market: str | None = None) -> list[OrderState]:
        account = self._account(account_id)
        return [self._order_state(o) for o in account.open_orders.values() if market in (None, o.market)]

    def get_order(self, account_id: int, order_id: int) -> OrderState:
        order = self._account(account_id).orders_by_id.get(order_id)
        if order is None:
            raise SimReject(404, f"order {order_id} not found", 404)
        return self._order_state(order)

    def orders_by_external_id(self, account_id: int, external_id: str) -> list[OrderState]:
        return [
            self._order_state(o) for o in self._account(account_id).orders_by_external.get(external_id, [])
        ]

    def order_history(
        self, account_id: int, market: str | None = None, limit: int | None = None
    ) -> list[OrderState]:
        """Closed orders, newest first."""
        out: list[OrderState] = []
        for order in reversed(self._account(account_id).closed_orders):
            if market in (None, order.market):
                out.append(self._order_state(order))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def trades(self, account_id: int, market: str | None = None, limit: int | None = None) -> list[Fill]:
        """The account's fills, newest first."""
        out = [t for t in reversed(self._account(account_id).trades) if market in (None, t.market)]
        return out[:limit] if limit is not None else out

    def funding_payments(
        self, account_id: int, market: str | None = None, limit: int | None = None
    ) -> list[FundingPaymentRecord]:
        out = [f for f in reversed(self._account(account_id).funding_history) if market in (None, f.market)]
        return out[:limit] if limit is not None else out

    def positions(self, account_id: int, market: str | None = None) -> list[PositionState]:
        """Open positions."""
        account = self._account(account_id)
        return [
            self._position_state(account, name)
            for name, position in account.positions.items()
            if position.lots and market in (None, name)
        ]

    def balance(self, account_id: int) -> BalanceState:
        return self._balance_state(self._account(account_id))

    def ledger(self, account_id: int) -> Ledger:
        """Exact totals; see `Ledger` for the identity they satisfy."""
        return self._account(account_id).ledger(self._terms, self._marks())

    def fees(self, account_id: int, markets: Sequence[str] | None = None) -> list[FeeSchedule]:
        account = self._account(account_id)
        names = list(markets) if markets else list(self._markets)
        out = []
        for name in names:
            self._market(name)
            maker, taker = self._fee_rates(account, name)
            out.append(FeeSchedule(market=name, maker=maker, taker=taker))
        return out

    # == matching ============================================================================
    def _submit(self, m: _Market, order: SimOrder) -> SimOrder | None:
        """Match an accepted order, then rest it or end it. Returns it if it rests."""
        is_buy = order.side is Side.BUY
        opposite = m.book.asks if is_buy else m.book.bids
        best = opposite.best()
        crosses = best is not None and (best <= order.price_ticks if is_buy else best >= order.price_ticks)
        if order.post_only and crosses:
            self._close(order, REJECTED, "POST_ONLY_FAILED")
            return None
        touched: dict[int, None] = {}
        taker_fills: list[Fill] = []
        prints: list[PublicTrade] = []
        if crosses:
            self._match(m, order, touched, taker_fills, prints)
        rests = False
        if order.status == NEW:  # not ended by self-trade protection
            if order.remaining_lots == 0:
                order.status = FILLED
            elif order.time_in_force == "IOC" or order.type == "MARKET":
                self._end_unreported(order, CANCELLED, "NO_LIQUIDITY")
            else:
                rests = True
        if rests:
            m.book.add(order)
            if order.filled_lots:
                order.status = PARTIALLY_FILLED
            if order.account_id != CROWD_ACCOUNT_ID:
                account = self._accounts[order.account_id]
                account.track_open(order)
                if order.expiry_ms is not None:
                    heapq.heappush(self._expiries, (order.expiry_ms, order.id, order))
        elif order.account_id != CROWD_ACCOUNT_ID:
            self._accounts[order.account_id].closed_orders.append(order)
        if order.account_id != CROWD_ACCOUNT_ID:
            self._events.append(
                OrderStateEvent(account_id=order.account_id, order=self._order_state(order), ts=self._now)
            )
            for fill in taker_fills:
                self._events.append(TradeEvent(account_id=fill.account_id, trade=fill, ts=self._now))
        for account_id in touched:
            account = self._accounts[account_id]
            self._events.append(
                PositionEvent(
                    account_id=account_id, position=self._position_state(account, m.name), ts=self._now
                )
            )
            self._emit_balance(account)
        if prints:
            m.public_trades.extend(prints)
            while len(m.public_trades) > self.config.public_trades_kept:
                m.public_trades.popleft()
            self._events.append(PublicTradesEvent(market=m.name, trades=tuple(prints), ts=self._now))
        return order if rests else None

    def _match(
        self,
        m: _Market,
        taker: SimOrder,
        touched: dict[int, None],
        taker_fills: list[Fill],
        prints: list[PublicTrade],
    ) -> None:
        is_buy = taker.side is Side.BUY
        opposite = m.book.asks if is_buy else m.book.bids
        limit = taker.price_ticks
        while taker.remaining_lots > 0:
            best = opposite.best()
            if best is None or (best > limit if is_buy else best < limit):
                return
            level = opposite.levels[best]
            while taker.remaining_lots > 0 and level.orders:
                maker = level.first()
                if _stp_blocks(taker, maker):
                    self._end_unreported(taker, CANCELLED, "SELF_TRADE_PROTECTION")
                    return
                lots = min(taker.remaining_lots, maker.remaining_lots)
                self._fill(m, taker, maker, lots, best, touched, taker_fills, prints)

    def _fill(
        self,
        m: _Market,
        taker: SimOrder,
        maker: SimOrder,
        lots: int,
        ticks: int,
        touched: dict[int, None],
        taker_fills: list[Fill],
        prints: list[PublicTrade],
    ) -> None:
        now = self._now
        units = ticks * lots
        for order in (maker, taker):
            order.filled_lots += lots
            order.filled_units += units
            order.updated_ms = now
        maker_account = self._accounts.get(maker.account_id) if maker.account_id != CROWD_ACCOUNT_ID else None
        if maker_account is not None:
            self._maker_fill_buffer.append(maker)
        if maker_account is not None:
            maker_account.untrack_lots(maker, lots)
        m.book.reduce(maker, lots)
        trade_id = next(self._trade_ids)
        spec = m.spec
        price = spec.ticks_to_price(ticks)
        qty = spec.lots_to_qty(lots)
        for order, is_taker in ((maker, False), (taker, True)):
            if order.account_id == CROWD_ACCOUNT_ID:
                continue
            notional = Fraction(units) * m.terms.tick * m.terms.lot
            value = price * qty
            account = self._accounts[order.account_id]
            maker_rate, taker_rate = self._fee_rates(account, m.name)
            fee = fee_amount(Fraction(taker_rate if is_taker else maker_rate), notional)
            order.payed_fee += fee
            account.apply_fill(
                m.terms,
                side_sign=order.side.sign,
                lots=lots,
                ticks=ticks,
                fee=fee,
                now_ms=now,
                new_id=next(self._position_ids),
            )
            fill = Fill(
                id=trade_id,
                account_id=account.info.id,
                market=m.name,
                order_id=order.id,
                external_order_id=order.external_id,
                side=order.side,
                price=price,
                qty=qty,
                value=value,
                fee=to_decimal(fee),
                is_taker=is_taker,
                trade_type="TRADE",
                created_ms=now,
            )
            account.trades.append(fill)
            touched[account.info.id] = None
            if is_taker:
                taker_fills.append(fill)
            else:
                maker.status = FILLED if maker.remaining_lots == 0 else PARTIALLY_FILLED
                if maker.remaining_lots == 0:
                    account.close_order(maker)
                self._events.append(
                    OrderStateEvent(account_id=account.info.id, order=self._order_state(maker), ts=now)
                )
                self._events.append(TradeEvent(account_id=account.info.id, trade=fill, ts=now))
        if maker.account_id == CROWD_ACCOUNT_ID:
            maker.status = FILLED if maker.remaining_lots == 0 else PARTIALLY_FILLED
            if maker.remaining_lots == 0 and m.flow is not None:
                m.flow.on_crowd_gone(maker)
        prints.append(
            PublicTrade(
                id=trade_id, market=m.name, side=taker.side, trade_type="TRADE", ts=now, price=price, qty=qty
            )
        )
        if m.first_ticks is None:
            m.first_ticks = ticks
        m.last_ticks = ticks
        m.low_ticks = ticks if m.low_ticks is None else min(m.low_ticks, ticks)
        m.high_ticks = ticks if m.high_ticks is None else max(m.high_ticks, ticks)
        m.volume_units += units
        m.volume_lots += lots

    def _end_unreported(self, order: SimOrder, status: str, reason: str | None) -> None:
        """End a taker that is not on the book yet; `_submit` reports it."""
        order.cancelled_lots += order.remaining_lots
        order.status = status
        order.status_reason = reason
        order.updated_ms = self._now

    def _close(self, order: SimOrder, status: str, reason: str | None) -> None:
        """End an order (on the book or not yet matched) and report it."""
        remaining = order.remaining_lots
        if order.resting:
            self._markets[order.market].book.remove(order)
        account = self._accounts.get(order.account_id)
        if account is not None and order.id in account.open_orders:
            account.untrack_lots(order, remaining)
            order.cancelled_lots += remaining
            order.status, order.status_reason, order.updated_ms = status, reason, self._now
            account.close_order(order)
        else:
            order.cancelled_lots += remaining
            order.status, order.status_reason, order.updated_ms = status, reason, self._now
            if account is not None:
                account.closed_orders.append(order)
        if account is not None:
            self._events.append(
                OrderStateEvent(account_id=account.info.id, order=self._order_state(order), ts=self._now)
            )

    # == funding ===============================================================================
    def _apply_funding(self, at_ms: int) -> None:
        for m in self._markets.values():
            rate = m.funding_rate
            m.funding_points.append(FundingRatePoint(market=m.name, rate=rate, ts=at_ms))
            self._events.append(FundingRateEvent(market=m.name, rate=rate, ts=at_ms, applied=True))
            mark = m.mark_fraction
            for account in self._accounts.values():
                position = account.positions.get(m.name)
                if position is None or not position.lots:
                    continue
                signed_value = position.signed_value(m.terms.lot, mark)
                amount = funding_amount(signed_value, Fraction(rate))
                account.pay_funding(position, amount, at_ms)
                account.funding_history.append(
                    FundingPaymentRecord(
                        id=next(self._funding_ids),
                        account_id=account.info.id,
                        market=m.name,
                        position_id=position.id,
                        side=position.side,
                        size=m.spec.lots_to_qty(abs(position.lots)),
                        value=to_decimal(abs(signed_value)),
                        mark_price=m.mark,
                        funding_fee=to_decimal(amount),
                        funding_rate=rate,
                        paid_ms=at_ms,
                    )
                )
                self._events.append(
                    PositionEvent(
                        account_id=account.info.id, position=self._position_state(account, m.name), ts=at_ms
                    )
                )
                self._emit_balance(account)

    # == synthetic flow ========================================================================
    def _flow_step(self, t: int) -> None:
        dt_s = self.config.step_ms / 1000.0
        for m in self._markets.values():
            flow = m.flow
            if flow is None:
                continue
            flow.diffuse(dt_s)
            self._refresh_crowd(m)
            for is_buy, delta in flow.takers(dt_s):
                self._crowd_take(m, is_buy, delta)
                self._refresh_crowd(m)
            m.mark = Decimal(f"{flow.mark():.6f}")
            if t % self.config.mark_interval_ms == 0:
                m.index = Decimal(f"{flow.mid:.6f}")
                self._events.append(MarkPriceEvent(market=m.name, price=m.mark, ts=t))
                self._events.append(IndexPriceEvent(market=m.name, price=m.index, ts=t))
            if t % self.config.funding_estimate_interval_ms == 0:
                m.funding_rate = _rate(flow.redraw_funding(float(m.funding_cap)))
                self._events.append(FundingRateEvent(market=m.name, rate=m.funding_rate, ts=t, applied=False))

    def _refresh_crowd(self, m: _Market) -> None:
        assert m.flow is not None

        def place(is_bid: bool, ticks: int, lots: int) -> SimOrder | None:
            order = SimOrder(
                id=next(self._order_ids),
                account_id=CROWD_ACCOUNT_ID,
                client_id=CROWD_ACCOUNT_ID,
                external_id="",
                market=m.name,
                side=Side.BUY if is_bid else Side.SELL,
                type="LIMIT",
                time_in_force="GTT",
                price_ticks=ticks,
                qty_lots=lots,
                stp="DISABLED",
                created_ms=self._now,
                updated_ms=self._now,
            )
            best = (m.book.asks if is_bid else m.book.bids).best()
            if best is None or (best > ticks if is_bid else best < ticks):
                m.book.add(order)  # the common case: nothing to match, nothing to report
                return order
            rested = self._submit(m, order)
            self._classify_maker_fills(lambda _maker: "crossed")
            return rested

        def cancel(order: SimOrder) -> None:
            if order.resting:
                m.book.remove(order)

        m.flow.refresh(place, cancel)

    def _crowd_take(self, m: _Market, is_buy: bool, delta: float) -> None:
        assert m.flow is not None
        limit = m.flow.sweep_limit(is_buy, delta)
        opposite = m.book.asks if is_buy else m.book.bids
        lots = opposite.lots_through(limit)
        if lots <= 0:
            return
        taker = SimOrder(
            id=next(self._order_ids),
            account_id=CROWD_ACCOUNT_ID,
            client_id=CROWD_ACCOUNT_ID,
            external_id="",
            market=m.name,
            side=Side.BUY if is_buy else Side.SELL,
            type="LIMIT",
            time_in_force="IOC",
            price_ticks=limit,
            qty_lots=lots,
            stp="DISABLED",
            created_ms=self._now,
            updated_ms=self._now,
        )
        self._maker_fill_buffer.clear()
        self._submit(m, taker)
        last = m.last_ticks

        def reason(maker: SimOrder) -> str:
            if last is None:
                return "queue"
            through = last > maker.price_ticks if is_buy else last < maker.price_ticks
            return "sweep" if through else "queue"

        self._classify_maker_fills(reason)

    def _classify_maker_fills(self, reason: Callable[[SimOrder], str]) -> None:
        for maker in self._maker_fill_buffer:
            self.maker_fills[reason(maker)] += 1
        self._maker_fill_buffer.clear()

    # == snapshots =============================================================================
    def _marks(self) -> dict[str, Fraction]:
        return {name: m.mark_fraction for name, m in self._markets.items()}

    def _order_state(self, order: SimOrder) -> OrderState:
        spec = self._markets[order.market].spec
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

    def _position_state(self, account: AccountState, market: str) -> PositionState:
        m = self._markets[market]
        return account.position_state(m.terms, m.mark_fraction, self.config.default_leverage)

    def _balance_state(self, account: AccountState) -> BalanceState:
        return account.balance_state(self._terms, self._marks(), self.config.default_leverage, self._now)

    def _emit_balance(self, account: AccountState) -> None:
        self._events.append(
            BalanceEvent(account_id=account.info.id, balance=self._balance_state(account), ts=self._now)
        )
