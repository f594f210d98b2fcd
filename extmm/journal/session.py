"""Starting and ending a journaled session, and catching up on fills a crash left out.

`open_session` refuses an unusable journal with a `JournalError` (one line, before any
order is sent). `reconcile_missed_fills` runs once at start: fills of the previous
session of the same network and account that the venue's trade history has
(`GET /user/trades`, SPEC §4.5) but the journal lacks — the last batch before a `kill -9`
— are journaled into that session, so its PnL and the lifetime PnL count them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import trio
from loguru import logger

from extmm.journal.actor import Journal, JournalWriter
from extmm.journal.read import lifetime_net, sessions
from extmm.journal.rows import FillRow
from extmm.journal.schema import JournalError, JournalLock, open_journal
from extmm.venue.errors import VenueError
from extmm.venue.types import TradeInfo

TRADE_HISTORY_LIMIT = 1000  # one page: more than a commit interval's worth of fills


@attrs.frozen(kw_only=True)
class SessionMeta:
    kind: str  # live | paper | backtest
    network: str
    account: str
    version: str
    config_digest: str
    markets: tuple[str, ...]

    @classmethod
    def for_config(cls, cfg: Any, *, kind: str, network: str, account: str) -> SessionMeta:
        """A session trading `cfg` (a BotConfig): its enabled markets, digest and our version."""
        from extmm import __version__

        return cls(kind=kind, network=network, account=account, version=__version__,
                   config_digest=config_digest(attrs.asdict(cfg)),
                   markets=tuple(m.name for m in cfg.enabled_markets))


def config_digest(data: Any) -> str:
    """A short stable digest of the config (what changed between two sessions)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _start(conn: sqlite3.Connection, meta: SessionMeta, started_at: float) -> tuple[int, dict[str, Decimal]]:
    base = lifetime_net(conn, network=meta.network, account=meta.account)
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            "INSERT INTO sessions (kind, network, account, version, config_digest, markets, started_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (meta.kind, meta.network, meta.account, meta.version, meta.config_digest, ",".join(meta.markets),
             started_at),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return int(cur.lastrowid or 0), base


def open_session(
    path: Path | str,
    meta: SessionMeta,
    *,
    clock: Callable[[], float],
    lock: bool = True,
    **journal_options: Any,
) -> Journal:
    """Open the journal for writing and record a new session; raises JournalError."""
    path = Path(path).expanduser()
    held = JournalLock(path) if lock else None
    if held is not None:
        if path.parent.is_dir():
            held.acquire()
        else:
            raise JournalError(f"journal folder {path.parent} does not exist (create it, or pick another --journal)")
    try:
        conn = open_journal(path)
        try:
            session_id, base = _start(conn, meta, clock())
        except sqlite3.Error as exc:
            conn.close()
            raise JournalError(f"journal {path} cannot be written: {exc}") from None
    except BaseException:
        if held is not None:
            held.release()
        raise
    journal = Journal(JournalWriter(conn, session_id), clock=clock, **journal_options)
    journal.lifetime_base = base
    journal.path = path
    journal.lock = held
    journal.meta = meta
    return journal


def previous_session(journal: Journal) -> tuple[int, float] | None:
    """(id, started_at) of the session of the same network and account before this one."""
    writer = journal.writer
    if writer is None:
        return None
    earlier = sessions(writer.conn, network=journal.meta.network, account=journal.meta.account,
                       before_id=writer.session_id)
    return (earlier[-1].id, earlier[-1].started_at) if earlier else None


async def reconcile_missed_fills(journal: Journal, get_trades: Callable[..., Any],
                                 markets: Sequence[str], *, now_ms: int) -> int:
    """Journal the previous session's fills that never reached the file; returns how many."""
    prev = previous_session(journal)
    if prev is None or journal.writer is None:
        return 0
    prev_id, prev_started = prev
    conn = journal.writer.conn
    known = {int(r[0]) for r in conn.execute("SELECT trade_id FROM fills WHERE session_id = ?", (prev_id,))}
    missed: list[TradeInfo] = []
    for market in markets:
        try:
            trades = await get_trades(market, limit=TRADE_HISTORY_LIMIT)
        except VenueError as exc:
            logger.warning("journal: the trade history of {} is unavailable ({}); fills lost in a crash of the "
                           "previous session are not reconciled", market, exc)
            continue
        for t in trades:
            # only fills made while the previous session ran (not before it, not by this one)
            if prev_started * 1000 <= t.created_ms <= now_ms and t.id not in known and t.market == market:
                missed.append(t)
    if not missed:
        return 0
    missed.sort(key=lambda t: (t.created_ms, t.id))
    rows = [
        FillRow(at=t.created_ms / 1000.0, market=t.market, trade_id=t.id, order_id=t.order_id,
                external_id=t.external_order_id, side=t.side.value, price=t.price, qty=t.qty, fee=t.fee,
                is_taker=t.is_taker, mid=None, source="reconciled")
        for t in missed
    ]
    writer = JournalWriter(conn, prev_id)
    writer.seq = journal.writer.seq
    await trio.to_thread.run_sync(writer.write, rows)
    journal.writer.seq = writer.seq
    journal.lifetime_base = lifetime_net(conn, network=journal.meta.network, account=journal.meta.account,
                                         before_id=journal.writer.session_id)
    logger.warning("journal: {} fills of the previous session were missing (crash?) and were reconciled "
                   "from the venue's trade history", len(rows))
    return len(rows)
