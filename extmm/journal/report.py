"""What the `history` and `report` commands compute from a journal (read-only).

History lists fills, order transitions or events. The report goes per UTC day and market:
the PnL split (spread, inventory, fees, funding, net, taken from the sessions' exact
ledgers), volume, fills, fill ratio, average markouts, time quoting, restarts and breaker
trips; and the lifetime net PnL, the sum of every session's net.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from extmm.journal.read import ledger_points, sessions

KINDS = ("fills", "orders", "events")
PNL_PARTS = ("spread", "inventory", "fees", "funding", "net")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BadSince(ValueError):
    pass


def parse_since(text: str | None, now: float) -> float | None:
    """"24h", "7d", "90m" (before `now`), "2026-12-01" or an ISO time (UTC) → epoch seconds."""
    if text is None or text == "":
        return None
    m = _RELATIVE.match(text.strip())
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadSince(f"--since {text!r}: use e.g. 24h, 7d, 90m, 2026-12-01 or 2026-12-01T08:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def iso(at: float | None) -> str | None:
    if at is None:
        return None
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def day_of(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).date().isoformat()


# -- history -------------------------------------------------------------------------------------

_HISTORY_SQL = {
    "fills": "SELECT at, session_id AS session, market, side, price, qty, fee, is_taker, mid, markout_1s,"
             " markout_10s, markout_60s, trade_id, external_id, source FROM fills",
    "orders": "SELECT at, session_id AS session, market, external_id, venue_id, side, price, qty, filled_qty, state, reason"
              " FROM orders",
    "events": "SELECT at, session_id AS session, kind, market, detail FROM events",
}


def history(conn: sqlite3.Connection, kind: str, *, market: str | None = None, since: float | None = None,
            limit: int | None = None) -> list[dict[str, Any]]:
    sql = _HISTORY_SQL[kind] + " WHERE 1=1"
    params: list[Any] = []
    if market is not None:
        sql += " AND market = ?"
        params.append(market)
    if since is not None:
        sql += " AND at >= ?"
        params.append(since)
    sql += " ORDER BY at, id"
    rows = [dict(r) for r in conn.execute(sql, params)]
    if limit is not None:
        rows = rows[-limit:]
    out = []
    for r in rows:
        item: dict[str, Any] = {"time": iso(r.pop("at"))}
        for key, value in r.items():
            if key == "is_taker":
                item["liquidity"] = "taker" if value else "maker"
            elif key == "detail":
                item[key] = json.loads(value) if value.startswith("{") else value
            else:
                item[key] = value
        out.append(item)
    return out


# -- report --------------------------------------------------------------------------------------


def _zero() -> dict[str, Any]:
    return {**{p: Decimal(0) for p in PNL_PARTS}, "volume": Decimal(0), "fills": 0, "orders_placed": 0,
            "orders_filled": 0, "markouts": {"1s": [], "10s": [], "60s": []}, "quoting_s": 0.0,
            "actor_restarts": 0}


def _day_bounds(day: str) -> tuple[float, float]:
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()
    return start, start + 86400


def _days_between(a: float, b: float) -> Iterable[str]:
    d = dt.datetime.fromtimestamp(a, dt.UTC).date()
    last = dt.datetime.fromtimestamp(b, dt.UTC).date()
    while d <= last:
        yield d.isoformat()
        d += dt.timedelta(days=1)


def report(conn: sqlite3.Connection, *, since: float | None = None) -> dict[str, Any]:
    cells: dict[tuple[str, str], dict[str, Any]] = defaultdict(_zero)
    keep = (lambda at: True) if since is None else (lambda at: at >= since)
    session_rows = []
    lifetime: dict[str, Decimal] = defaultdict(Decimal)
    for s in sessions(conn):
        # The PnL split per day: each session's exact ledger, differenced at day ends.
        before: dict[str, Any] = {}
        day_open: dict[tuple[str, str], Any] = {}
        last: dict[str, Any] = {}
        for at, ledger in ledger_points(conn, s.id):
            day = day_of(at)
            key = (day, ledger.market)
            if key not in day_open:
                day_open[key] = before.get(ledger.market)
            last[ledger.market] = ledger
            before[ledger.market] = ledger
            if keep(at):
                cells[key].setdefault("_end", {})[s.id] = (day_open[key], ledger)
        net = Decimal(0)
        for market, ledger in last.items():
            lifetime[market] += ledger.total
            net += ledger.total
        session_rows.append({"id": s.id, "kind": s.kind, "network": s.network, "account": s.account,
                             "started": iso(s.started_at), "stopped": iso(s.stopped_at),
                             "clean_exit": s.summary is not None, "net_pnl": str(net)})
    for cell in cells.values():
        for prev, ledger in cell.pop("_end", {}).values():
            for part in PNL_PARTS:
                end = ledger.total if part == "net" else getattr(ledger, part)
                start = Decimal(0) if prev is None else (prev.total if part == "net" else getattr(prev, part))
                cell[part] += end - start
    for r in conn.execute("SELECT at, market, price, qty, markout_1s, markout_10s, markout_60s FROM fills"):
        if not keep(r["at"]):
            continue
        cell = cells[(day_of(r["at"]), r["market"])]
        cell["fills"] += 1
        cell["volume"] += Decimal(r["price"]) * Decimal(r["qty"])
        for h in ("1s", "10s", "60s"):
            if r[f"markout_{h}"] is not None:
                cell["markouts"][h].append(r[f"markout_{h}"])
    _orders(conn, cells, keep)
    for r in conn.execute("SELECT at, market FROM events WHERE kind = 'ChildRestarting' AND market IS NOT NULL"):
        if keep(r["at"]):
            cells[(day_of(r["at"]), r["market"])]["actor_restarts"] += 1
    trips: dict[str, int] = defaultdict(int)
    for r in conn.execute("SELECT at FROM events WHERE kind = 'BreakerOpened'"):
        if keep(r["at"]):
            trips[day_of(r["at"])] += 1
    starts: dict[str, int] = defaultdict(int)
    for s in sessions(conn):
        if keep(s.started_at):
            starts[day_of(s.started_at)] += 1
    days = []
    for (day, market), cell in sorted(cells.items()):
        marks = {h: (sum(v) / len(v) if v else None) for h, v in cell.pop("markouts").items()}
        placed = cell.pop("orders_placed")
        filled = cell.pop("orders_filled")
        days.append({
            "day": day, "market": market,
            **{p: str(cell[p]) for p in PNL_PARTS},
            "volume": str(cell["volume"]), "fills": cell["fills"], "orders": placed,
            "fill_ratio": None if not placed else round(filled / placed, 4),
            "markout_bps": {h: None if v is None else round(v, 3) for h, v in marks.items()},
            "quoting_s": round(cell["quoting_s"], 1), "actor_restarts": cell["actor_restarts"],
        })
    return {
        "since": iso(since),
        "days": days,
        "sessions_started": dict(sorted(starts.items())),
        "breaker_trips": dict(sorted(trips.items())),
        "sessions": session_rows,
        "lifetime": {"net": str(sum(lifetime.values(), Decimal(0))),
                     "by_market": {m: str(v) for m, v in sorted(lifetime.items())}},
    }


def _orders(conn: sqlite3.Connection, cells: dict[tuple[str, str], dict[str, Any]], keep: Any) -> None:
    """Orders placed and filled, and the time at least one order of ours rested, per day."""
    life: dict[str, list[Any]] = {}  # external_id → [market, opened_at, closed_at, filled]
    for r in conn.execute("SELECT at, market, external_id, state, filled_qty FROM orders ORDER BY id"):
        rec = life.setdefault(r["external_id"], [r["market"], None, None, False])
        if r["state"] in ("NEW", "PARTIALLY_FILLED") and rec[1] is None:
            rec[1] = r["at"]
        if r["state"] in ("FILLED", "CANCELLED", "REJECTED", "EXPIRED") and rec[2] is None:
            rec[2] = r["at"]
        if Decimal(r["filled_qty"]) > 0:
            rec[3] = True
    intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for market, opened, closed, filled in life.values():
        if opened is None:
            continue
        if keep(opened):
            cell = cells[(day_of(opened), market)]
            cell["orders_placed"] += 1
            cell["orders_filled"] += int(filled)
        intervals[market].append((opened, closed if closed is not None else opened))
    for market, spans in intervals.items():
        spans.sort()
        merged: list[list[float]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        for a, b in merged:
            for day in _days_between(a, b):
                lo, hi = _day_bounds(day)
                overlap = min(b, hi) - max(a, lo)
                if overlap > 0 and keep(max(a, lo)):
                    cells[(day, market)]["quoting_s"] += overlap


# -- rendering -----------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "(nothing)"
    columns = columns or list(rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)
