"""What one market's actors tell the journal, in a few calls from the Account actor.

`MarketJournal` turns fills, mids, funding payments and the ledger into rows: a fill is
journaled with the mid the ledger used, its markouts at 1/10/60 s follow as the mids come
in (the shared pure `MarkoutTracker`), and the whole ledger is marked at its start, then
at least every `mark_every_s`. Every fill also gets an INFO log line, journal or not.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import attrs
import trio
from loguru import logger

from extmm.domain.markouts import MarkoutTracker
from extmm.domain.orders import OrderRecord
from extmm.domain.pnl import MarketLedger
from extmm.domain.units import MarketSpec
from extmm.journal.actor import Journal
from extmm.journal.rows import EventRow, FillRow, FundingRow, MarkoutRow, MarkRow, OrderRow
from extmm.venue.types import FundingPayment, TradeInfo

MARK_EVERY_S = 60.0


class MarketJournal:
    def __init__(self, journal: Journal, market: str, *, mark_every_s: float = MARK_EVERY_S) -> None:
        self.journal = journal
        self.market = market
        self.mark_every_s = mark_every_s
        self.markouts = MarkoutTracker(max_pending=10_000)
        self._next_mark_at = float("-inf")
        self._last_mid_at = float("-inf")

    def fill(self, t: TradeInfo, mid: Decimal) -> None:
        logger.info("{}: fill {} {} @ {} fee {} {} (trade {}, order {})", self.market, t.side.value, t.qty, t.price,
                    t.fee, "taker" if t.is_taker else "maker", t.id, t.external_order_id or t.order_id)
        if not self.journal.enabled:
            return
        self.journal.record(FillRow(at=self.journal.clock(), market=self.market, trade_id=t.id, order_id=t.order_id,
                                    external_id=t.external_order_id, side=t.side.value, price=t.price, qty=t.qty,
                                    fee=t.fee, is_taker=t.is_taker, mid=mid))
        now = max(trio.current_time(), self._last_mid_at)
        self.markouts.add_fill(t.id, now, t.side.sign, float(t.price))

    def mid(self, mid: Decimal) -> None:
        if not self.journal.enabled:
            return
        now = max(trio.current_time(), self._last_mid_at)
        self._last_mid_at = now
        for done in self.markouts.observe_mid(now, float(mid)):
            self.journal.record(MarkoutRow(trade_id=int(done.key), horizon_s=done.horizon_s,  # type: ignore[call-overload]
                                           bps=done.bps))

    def funding(self, p: FundingPayment) -> None:
        self.journal.record(FundingRow(at=self.journal.clock(), market=self.market, paid_ms=p.paid_ms,
                                       payment=p.funding_fee))

    def mark(self, ledger: MarketLedger | None, *, kind: str = "periodic") -> None:
        """Journal the ledger: always for "open" and "final", else at most every mark_every_s."""
        if ledger is None or not self.journal.enabled:
            return
        now = trio.current_time()
        if kind == "periodic" and now < self._next_mark_at:
            return
        self._next_mark_at = now + self.mark_every_s
        self.journal.record(MarkRow(at=self.journal.clock(), kind=kind, ledger=ledger))


def order_row(journal: Journal, rec: OrderRecord, spec: MarketSpec) -> OrderRow:
    return OrderRow(at=journal.clock(), market=rec.market, external_id=rec.external_id, venue_id=rec.venue_id,
                    side=rec.side.value, price=spec.ticks_to_price(rec.price_ticks),
                    qty=spec.lots_to_qty(rec.qty_lots), filled_qty=spec.lots_to_qty(rec.filled_lots),
                    state=rec.state.value, reason=rec.status_reason)


def event_row(journal: Journal, event: Any) -> EventRow:
    """A supervision or breaker event (any attrs class) as an `events` row."""
    fields = attrs.asdict(event) if attrs.has(type(event)) else {"repr": repr(event)}
    fields.pop("at", None)
    path = getattr(event, "path", None)
    market = path.split("/", 1)[0] if isinstance(path, str) and path else None
    return EventRow(at=journal.clock(), kind=type(event).__name__, market=market,
                    detail=json.dumps(fields, sort_keys=True, default=str))


def record_final_marks(journal: Journal, ledgers: dict[str, MarketLedger | None]) -> None:
    """At shutdown: each market's ledger exactly as the exit summary counts it."""
    for ledger in ledgers.values():
        if ledger is not None:
            journal.record(MarkRow(at=journal.clock(), kind="final", ledger=ledger))
