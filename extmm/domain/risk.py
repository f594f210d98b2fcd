"""Risk rules: clamp a `QuoteIntent` to the account's limits before it reaches the Executor.

Pure and cheap: one call per quote update. A denied side gets 0 lots (the Executor then
cancels it); the reasons come back as a tuple of `RiskReason` for the dashboard, and a
drawdown beyond the kill switch raises the `kill` flag for the circuit breaker.
"""

from __future__ import annotations

import enum
import math

import attrs

from extmm.config import RiskConfig
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


@attrs.frozen(kw_only=True)
class RiskDecision:
    intent: QuoteIntent
    reasons: tuple[RiskReason, ...] = ()
    kill: bool = False


def position_limit_lots(spec: MarketSpec, max_net_position_usd: float, mid: float) -> int:
    """The USD net-position limit as lots at the current mid, rounded down."""
    return spec.float_to_lots(max_net_position_usd / mid)


def clamp_intent(
    intent: QuoteIntent,
    *,
    spec: MarketSpec,
    limits: RiskConfig,
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

    if bid_lots or ask_lots:
        limit = position_limit_lots(spec, limits.max_net_position_usd, snapshot.mid)
        bid_lots = cut(bid_lots, max(limit - position, 0), RiskReason.POSITION_LIMIT)
        ask_lots = cut(ask_lots, max(limit + position, 0), RiskReason.POSITION_LIMIT)

    if (bid_lots or ask_lots) and not snapshot.balance_usd >= limits.min_balance_usd:
        # Reduce-only: the side facing the position may close it, never flip it.
        bid_lots = cut(bid_lots, max(-position, 0), RiskReason.MIN_BALANCE)
        ask_lots = cut(ask_lots, max(position, 0), RiskReason.MIN_BALANCE)

    if bid_lots or ask_lots:
        free_slots = max(limits.max_open_orders - snapshot.open_orders, 0)
        ask_first = position > 0
        for side in ("ask", "bid") if ask_first else ("bid", "ask"):
            lots, live = (ask_lots, snapshot.live_ask) if side == "ask" else (bid_lots, snapshot.live_bid)
            if not lots or live:
                continue
            if free_slots > 0:
                free_slots -= 1
                continue
            if RiskReason.MAX_OPEN_ORDERS not in reasons:
                reasons.append(RiskReason.MAX_OPEN_ORDERS)
            if side == "ask":
                ask_lots = 0
            else:
                bid_lots = 0

    # An intent that arrived under the minimum is not sent either.
    bid_lots = bid_lots if bid_lots >= min_lots else 0
    ask_lots = ask_lots if ask_lots >= min_lots else 0
    if (bid_lots, ask_lots) != (intent.bid_lots, intent.ask_lots):
        intent = attrs.evolve(intent, bid_lots=bid_lots, ask_lots=ask_lots)
    return RiskDecision(intent=intent, reasons=tuple(reasons), kill=kill)
