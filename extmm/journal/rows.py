"""What the journal records: one small frozen class per row kind, each knowing its SQL.

Rows are built on the trading side (cheap: strings and numbers only) and written later on
the journal's worker thread; `statement(session_id)` gives the SQL and its parameters.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import attrs

from extmm.domain.pnl import MarketLedger

Statement = tuple[str, tuple[Any, ...]]


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@attrs.frozen(kw_only=True)
class OrderRow:
    at: float
    market: str
    external_id: str
    venue_id: int | None
    side: str
    price: Decimal
    qty: Decimal
    filled_qty: Decimal
    state: str
    reason: str | None = None

    def statement(self, session_id: int, seq: int) -> Statement:
        return (
            "INSERT INTO orders (session_id, at, market, external_id, venue_id, side, price, qty, filled_qty,"
            " state, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (session_id, self.at, self.market, self.external_id, self.venue_id, self.side, str(self.price),
             str(self.qty), str(self.filled_qty), self.state, self.reason),
        )


@attrs.frozen(kw_only=True)
class FillRow:
    at: float
    market: str
    trade_id: int
    order_id: int | None
    external_id: str | None
    side: str
    price: Decimal
    qty: Decimal
    fee: Decimal
    is_taker: bool
    mid: Decimal | None
    source: str = "stream"

    def statement(self, session_id: int, seq: int) -> Statement:
        # The stream may repeat a trade after a reconnect: the first copy wins.
        return (
            "INSERT OR IGNORE INTO fills (session_id, seq, at, market, trade_id, order_id, external_id, side,"
            " price, qty, fee, is_taker, mid, source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (session_id, seq, self.at, self.market, self.trade_id, self.order_id, self.external_id, self.side,
             str(self.price), str(self.qty), str(self.fee), int(self.is_taker), _text(self.mid), self.source),
        )


MARKOUT_COLUMNS = {1.0: "markout_1s", 10.0: "markout_10s", 60.0: "markout_60s"}


@attrs.frozen(kw_only=True)
class MarkoutRow:
    """Fills in one markout of a fill already journaled (the mid `horizon_s` later)."""

    trade_id: int
    horizon_s: float
    bps: float

    def statement(self, session_id: int, seq: int) -> Statement:
        column = MARKOUT_COLUMNS[self.horizon_s]  # a fixed name from the table, never input
        return (f"UPDATE fills SET {column} = ? WHERE session_id = ? AND trade_id = ?",
                (self.bps, session_id, self.trade_id))


@attrs.frozen(kw_only=True)
class FundingRow:
    at: float
    market: str
    paid_ms: int
    payment: Decimal

    def statement(self, session_id: int, seq: int) -> Statement:
        return (
            "INSERT OR IGNORE INTO funding (session_id, seq, at, market, paid_ms, payment) VALUES (?,?,?,?,?,?)",
            (session_id, seq, self.at, self.market, self.paid_ms, str(self.payment)),
        )


@attrs.frozen(kw_only=True)
class MarkRow:
    """The whole ledger of one market at one moment: restoring it is exact."""

    at: float
    kind: str  # open | periodic | final
    ledger: MarketLedger

    def statement(self, session_id: int, seq: int) -> Statement:
        lg = self.ledger
        return (
            "INSERT INTO marks (session_id, seq, at, market, kind, position, mark, cost_basis, cash, spread,"
            " inventory, fees, funding, fills, volume) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (session_id, seq, self.at, lg.market, self.kind, str(lg.position), _text(lg.mark), str(lg.cost_basis),
             str(lg.cash), str(lg.spread), str(lg.inventory), str(lg.fees), str(lg.funding), lg.fills,
             str(lg.volume)),
        )


@attrs.frozen(kw_only=True)
class EventRow:
    at: float
    kind: str
    market: str | None
    detail: str

    def statement(self, session_id: int, seq: int) -> Statement:
        return ("INSERT INTO events (session_id, at, kind, market, detail) VALUES (?,?,?,?,?)",
                (session_id, self.at, self.kind, self.market, self.detail))


@attrs.frozen(kw_only=True)
class SessionEnd:
    at: float
    summary: dict[str, Any] | None

    def statement(self, session_id: int, seq: int) -> Statement:
        text = None if self.summary is None else json.dumps(self.summary, sort_keys=True)
        return ("UPDATE sessions SET stopped_at = ?, summary = ? WHERE id = ?", (self.at, text, session_id))


JournalRow = OrderRow | FillRow | MarkoutRow | FundingRow | MarkRow | EventRow | SessionEnd


def ledger_from_row(row: Any) -> MarketLedger:
    """The MarketLedger a `marks` row holds (a sqlite3.Row or mapping)."""
    return MarketLedger(
        market=row["market"],
        position=Decimal(row["position"]),
        mark=None if row["mark"] is None else Decimal(row["mark"]),
        cost_basis=Decimal(row["cost_basis"]),
        cash=Decimal(row["cash"]),
        spread=Decimal(row["spread"]),
        inventory=Decimal(row["inventory"]),
        fees=Decimal(row["fees"]),
        funding=Decimal(row["funding"]),
        fills=int(row["fills"]),
        volume=Decimal(row["volume"]),
    )
