"""Reading a journal: sessions, each session's PnL ledgers, and the lifetime PnL.

A session's ledger for a market is exact: the last `marks` row restores the whole
MarketLedger, and any fill or funding row journaled after it (a session killed between
two marks; fills reconciled from the venue after a crash) is applied on top.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal

import attrs

from extmm.domain.pnl import MarketLedger
from extmm.domain.units import Side
from extmm.journal.rows import ledger_from_row


@attrs.frozen(kw_only=True)
class SessionInfo:
    id: int
    kind: str
    network: str
    account: str
    started_at: float
    stopped_at: float | None
    markets: tuple[str, ...]
    summary: str | None


def sessions(conn: sqlite3.Connection, *, network: str | None = None, account: str | None = None,
             before_id: int | None = None) -> list[SessionInfo]:
    sql = "SELECT * FROM sessions WHERE 1=1"
    params: list[object] = []
    if network is not None:
        sql += " AND network = ?"
        params.append(network)
    if account is not None:
        sql += " AND account = ?"
        params.append(account)
    if before_id is not None:
        sql += " AND id < ?"
        params.append(before_id)
    return [
        SessionInfo(id=r["id"], kind=r["kind"], network=r["network"], account=r["account"],
                    started_at=r["started_at"], stopped_at=r["stopped_at"],
                    markets=tuple(m for m in r["markets"].split(",") if m), summary=r["summary"])
        for r in conn.execute(sql + " ORDER BY id", params)
    ]


def ledger_points(conn: sqlite3.Connection, session_id: int) -> Iterator[tuple[float, MarketLedger]]:
    """(time, ledger) after every mark, fill and funding row of a session, in journal order."""
    rows = conn.execute(
        "SELECT 'mark' AS src, id, seq, at, market, NULL AS side, NULL AS price, NULL AS qty, NULL AS fee,"
        " NULL AS mid, NULL AS payment FROM marks WHERE session_id = ?1"
        " UNION ALL SELECT 'fill', id, seq, at, market, side, price, qty, fee, mid, NULL FROM fills WHERE session_id = ?1"
        " UNION ALL SELECT 'funding', id, seq, at, market, NULL, NULL, NULL, NULL, NULL, payment FROM funding"
        " WHERE session_id = ?1",
        (session_id,),
    ).fetchall()
    rows.sort(key=lambda r: r["seq"])  # the order the rows were recorded in
    marks = {r["id"]: r for r in conn.execute("SELECT * FROM marks WHERE session_id = ?", (session_id,))}
    ledgers: dict[str, MarketLedger] = {}
    for r in rows:
        market = r["market"]
        ledger = ledgers.get(market) or MarketLedger(market=market)
        if r["src"] == "mark":
            ledger = ledger_from_row(marks[r["id"]])
        elif r["src"] == "fill":
            ledger = ledger.with_fill(Side(r["side"]), Decimal(r["price"]), Decimal(r["qty"]),
                                      fee=Decimal(r["fee"]),
                                      mid=None if r["mid"] is None else Decimal(r["mid"]))
        else:
            ledger = ledger.with_funding(Decimal(r["payment"]))
        ledgers[market] = ledger
        yield r["at"], ledger


def session_ledgers(conn: sqlite3.Connection, session_id: int) -> dict[str, MarketLedger]:
    """Each market's ledger at the end of a session (what its PnL was)."""
    last: dict[str, MarketLedger] = {}
    for _, ledger in ledger_points(conn, session_id):
        last[ledger.market] = ledger
    return last


def lifetime_net(conn: sqlite3.Connection, *, network: str, account: str,
                 before_id: int | None = None) -> dict[str, Decimal]:
    """Net PnL per market summed over the sessions of one network and account."""
    totals: dict[str, Decimal] = {}
    for s in sessions(conn, network=network, account=account, before_id=before_id):
        for market, ledger in session_ledgers(conn, s.id).items():
            totals[market] = totals.get(market, Decimal(0)) + ledger.total
    return totals
