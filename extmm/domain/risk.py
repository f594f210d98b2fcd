"""Risk rules: clamp a `QuoteIntent` to the account's limits before it reaches the Executor.

Pure and cheap: one call per quote update. A denied side gets 0 lots (the Executor then
cancels it); the reasons come back as a tuple of `RiskReason` for the dashboard, and a
drawdown beyond the kill switch raises the `kill` flag for the circuit breaker.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import lru_cache

import attrs

from extmm.domain.params import RiskLimits
from extmm.domain.quoting import QuoteIntent
from extmm.domain.units import MarketSpec


class RiskReason(enum.Enum):
    """Why risk changed an intent. Global conditions are reported while they hold; side
    rules only when they reduced or denied a side."""

    NO_MID = "no_mid"  # mid is not a positive finite number: limits cannot be converted
    DRAWDOWN_KILL = "drawdown_kill"  # drawdown ≥ max_drawdown_usd: both sides off, kill
    STALE_BOOK = "stale_book"  # book older than stale_book_ms: both sides off
    MIN_BALANCE = "min_balance"  # balance < min_balance_usd: exposure-increasing sides off
    POSITION_LIMIT = "position_limit"  # a side reduced or denied by max_net_position_usd
    TOTAL_LIMIT = "total_position_limit"  # a side reduced or denied by max_total_net_position_usd
    REDUCING = "reducing"  # over a position limit: only orders that reduce the position
    MAX_OPEN_ORDERS = "max_open_orders"  # no room for a new order in this market


@attrs.frozen(kw_only=True)
class RiskSnapshot:
    """What risk needs to know about one market and the account right now.

    `position_lots` is the signed net position; `open_orders` counts our open orders in
    this market and `live_bid`/`live_ask` say whether a side already rests (replacing it
    does not add an order); `balance_usd` is the account balance the venue reports;
    `book_age_ms` is the age of the book the intent was computed from; `drawdown_usd` is
    peak-to-current equity loss (≥ 0).
    """

    mid: float
    position_lots: int
    balance_usd: float
    book_age_ms: float
    open_orders: int = 0
    live_bid: bool = False
    live_ask: bool = False
    drawdown_usd: float = 0.0
    # Ladders: how many orders already rest per side (None: `live_bid`/`live_ask` as 0/1).
    live_bids: int | None = None
    live_asks: int | None = None
    # Account-wide limit: Σ |net position USD| of the OTHER markets at their mids (an
    # unknown market counted at its own limit by the caller); None when not configured.
    other_markets_usd: float | None = None


@attrs.frozen(kw_only=True)
class RiskDecision:
    intent: QuoteIntent
    reasons: tuple[RiskReason, ...] = ()
    kill: bool = False


def position_limit_lots(spec: MarketSpec, max_net_position_usd: float, mid: float) -> int:
    """The USD net-position limit as lots at the current mid, rounded down."""
    return spec.float_to_lots(max_net_position_usd / mid)


def limit_lots_at(spec: MarketSpec, limit_usd: float, ticks: int, mid: float) -> int:
    """The largest |position| in lots whose value stays within `limit_usd` both at the
    price `ticks` (a fill's own price) and at the mid: lots·max(price, mid) ≤ limit.

    Exact in integers at the fill price (a float division could round one lot over)."""
    if limit_usd <= 0:
        return 0
    price = max(spec.ticks_to_float(ticks), mid)
    lots = spec.float_to_lots(limit_usd / price)
    if lots <= 0:
        return lots
    # Correct float rounding so that lots·price ≤ limit holds exactly at the tick price.
    tick_value = spec.ticks_to_price(max(ticks, 1)) * spec.lot_size
    limit = _limit_decimal(float(limit_usd))
    while lots > 0 and lots * tick_value > limit:
        lots -= 1
    return lots


@lru_cache(maxsize=256)
def _limit_decimal(limit_usd: float) -> Decimal:
    """A USD limit as the Decimal of its shortest repr (limits are a handful of config values)."""
    return Decimal(repr(limit_usd))


def effective_limit_usd(limits: RiskLimits, snapshot: RiskSnapshot) -> tuple[float, bool]:
    """This market's position limit in USD now, and whether the account-wide limit binds.

    min(max_net_position_usd, max_total_net_position_usd − other markets' |net USD|)."""
    limit = limits.max_net_position_usd
    total = limits.max_total_net_position_usd
    if total is None:
        return limit, False
    others = snapshot.other_markets_usd
    room = total - others if others is not None and math.isfinite(others) else 0.0
    room = max(room, 0.0)
    return (room, True) if room < limit else (limit, False)


def _ladder_allowance(
    spec: MarketSpec, levels: Iterable[Sequence[int]], *, position: int, sign: int,
    limit_usd: float, mid: float,
) -> list[int]:
    """Per level, the largest size that keeps the position within the limit should this
    level and every level before it fill completely (at the level's own price).

    sign +1 for bids (fills add), −1 for asks. A level's cumulative fill ends at its price."""
    out: list[int] = []
    cum = 0
    for ticks, lots in levels:
        cap = limit_lots_at(spec, limit_usd, ticks, mid) if ticks > 0 else 0
        # After filling this level: sign·(position) + cum + x ≤ cap
        allowed = max(cap - sign * position - cum, 0)
        out.append(allowed)
        cum += min(lots, allowed)
    return out


def clamp_intent(
    intent: QuoteIntent,
    *,
    spec: MarketSpec,
    limits: RiskLimits,
    snapshot: RiskSnapshot,
    min_order_lots: int = 0,
) -> RiskDecision:
    """Apply every risk rule to `intent`; sizes come back ≥ the minimum or 0.

    Rules, in order:
    1. mid unusable, drawdown ≥ `max_drawdown_usd` (sets `kill`), or book older than
       `stale_book_ms` → both sides 0.
    2. Net position: a bid may at most bring the position to +limit, an ask to −limit
       (limit = `max_net_position_usd` / mid in lots); a side is cut to what fits, or 0.
    3. Balance below `min_balance_usd`: a side that would grow |position| is 0; the
       reducing side is cut to the position (no flip through flat).
    4. Open orders: a side with no live order needs a free slot under `max_open_orders`;
       when slots are short the position-reducing side gets one first (the bid if flat).
    A side that a rule cuts below max(`min_order_lots`, venue minimum) is 0.
    """
    min_lots = max(min_order_lots, spec.min_order_lots, 1)
    reasons: list[RiskReason] = []
    kill = False
    bid_lots, ask_lots = intent.bid_lots, intent.ask_lots
    position = snapshot.position_lots

    mid_ok = math.isfinite(snapshot.mid) and snapshot.mid > 0
    if not mid_ok:
        reasons.append(RiskReason.NO_MID)
    if limits.max_drawdown_usd is not None and snapshot.drawdown_usd >= limits.max_drawdown_usd:
        reasons.append(RiskReason.DRAWDOWN_KILL)
        kill = True
    # `not <=` so a NaN age counts as stale.
    if not snapshot.book_age_ms <= limits.stale_book_ms:
        reasons.append(RiskReason.STALE_BOOK)
    if reasons:
        bid_lots = ask_lots = 0

    def cut(lots: int, allowed: int, reason: RiskReason) -> int:
        if lots <= allowed:
            return lots
        if reason not in reasons:
            reasons.append(reason)
        return allowed if allowed >= min_lots else 0

    # Every level of a ladder counts: work on the full ladders (level 0 first).
    bids = [[intent.bid_ticks, bid_lots]]
    asks = [[intent.ask_ticks, ask_lots]]
    if intent.more_bids:
        bids += [[t, lots] for t, lots in intent.more_bids]
    if intent.more_asks:
        asks += [[t, lots] for t, lots in intent.more_asks]
    if not (bid_lots or ask_lots):
        for level in (*bids, *asks):
            level[1] = 0

    def any_lots() -> bool:
        return any(level[1] for level in bids) or any(level[1] for level in asks)

    if any_lots():
        # Net position, at each order's own price (and never less strict than at the mid):
        # filling any prefix of a side's ladder cannot end past the limit.
        limit_usd, total_binds = effective_limit_usd(limits, snapshot)
        reason = RiskReason.TOTAL_LIMIT if total_binds else RiskReason.POSITION_LIMIT
        held_usd = abs(spec.lots_to_float(position)) * snapshot.mid
        if held_usd > limit_usd or (position and held_usd >= limit_usd - 1e-9):
            reasons.append(RiskReason.REDUCING)
        for ladder, sign in ((bids, 1), (asks, -1)):
            allowed = _ladder_allowance(
                spec, ladder, position=position, sign=sign, limit_usd=limit_usd, mid=snapshot.mid,
            )
            for level, room in zip(ladder, allowed, strict=True):
                level[1] = cut(level[1], room, reason)

    if any_lots() and not snapshot.balance_usd >= limits.min_balance_usd:
        # Reduce-only: the side facing the position may close it, never flip it.
        for ladder, room in ((bids, max(-position, 0)), (asks, max(position, 0))):
            for level in ladder:
                level[1] = cut(level[1], room, RiskReason.MIN_BALANCE)
                room -= level[1]

    if any_lots():
        free_slots = max(limits.max_open_orders - snapshot.open_orders, 0)
        live_bids = snapshot.live_bids if snapshot.live_bids is not None else int(snapshot.live_bid)
        live_asks = snapshot.live_asks if snapshot.live_asks is not None else int(snapshot.live_ask)
        order = ((asks, live_asks), (bids, live_bids)) if position > 0 else ((bids, live_bids), (asks, live_asks))
        # Level by level, the position-reducing side first: a level that rests already
        # (one of the side's live orders) replaces it; a new one needs a free slot.
        for i in range(max(len(bids), len(asks))):
            for ladder, live in order:
                if i >= len(ladder) or not ladder[i][1] or i < live:
                    continue
                if free_slots > 0:
                    free_slots -= 1
                    continue
                if RiskReason.MAX_OPEN_ORDERS not in reasons:
                    reasons.append(RiskReason.MAX_OPEN_ORDERS)
                ladder[i][1] = 0

    # An intent that arrived under the minimum is not sent either.
    for ladder in (bids, asks):
        for level in ladder:
            if level[1] < min_lots:
                level[1] = 0
    new_bids = tuple((t, lots) for t, lots in bids)
    new_asks = tuple((t, lots) for t, lots in asks)
    if (new_bids, new_asks) != (intent.bid_ladder, intent.ask_ladder):
        intent = intent.with_ladders(new_bids, new_asks)
    return RiskDecision(intent=intent, reasons=tuple(reasons), kill=kill)


class ExposureBoard:
    """Each market's |net position| in USD at its mid, shared by the markets' Risk actors
    for `max_total_net_position_usd`. A market that has not reported, or whose position
    is unknown now, counts at `unknown_usd` (its own limit): unknown is not zero."""

    def __init__(self, markets: tuple[str, ...] | list[str], unknown_usd: float) -> None:
        self.unknown_usd = unknown_usd
        self._usd: dict[str, float | None] = dict.fromkeys(markets)

    def report(self, market: str, usd: float | None) -> None:
        self._usd[market] = None if usd is None or not math.isfinite(usd) else abs(usd)

    def others(self, market: str) -> float:
        return sum(self.unknown_usd if v is None else v for m, v in self._usd.items() if m != market)

    def total(self) -> float:
        return sum(self.unknown_usd if v is None else v for v in self._usd.values())
