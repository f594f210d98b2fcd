"""The trading journal: schema and refusals, the batching actor under disk failures, the
ledger restored from it, and a whole bot journaling against the in-process simulator."""

from __future__ import annotations

import os
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
import trio

from extmm.domain.pnl import MarketLedger
from extmm.domain.units import Side
from extmm.journal.actor import JournalWriter
from extmm.journal.read import lifetime_net, session_ledgers
from extmm.journal.rows import EventRow, FillRow, MarkRow
from extmm.journal.schema import SCHEMA_VERSION, JournalError, default_path, open_journal
from extmm.journal.session import SessionMeta, open_session
from tests.botharness import running_bot, wait_until
from tests.botharness import test_config as bot_config

META = SessionMeta(kind="paper", network="paper", account="vault 1", version="test", config_digest="x",
                   markets=("BTC-USD",))


def clock() -> float:
    return 1_800_000_000.0 + trio.current_time()


def event(i: int) -> EventRow:
    return EventRow(at=float(i), kind="test", market=None, detail=str(i))


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


# -- the file ----------------------------------------------------------------------------------


def test_default_path_follows_xdg() -> None:
    assert default_path({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == Path("/s/extmm/journal.db")
    assert default_path({"HOME": "/h"}) == Path("/h/.local/state/extmm/journal.db")


def test_new_journal_is_wal_and_versioned(tmp_path: Path) -> None:
    conn = open_journal(tmp_path / "j.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    open_journal(tmp_path / "j.db").close()  # reopening migrates nothing and keeps it


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for readonly in (False, True):
        with pytest.raises(JournalError, match="newer than this extmm"):
            open_journal(path, readonly=readonly)


def test_corrupt_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(JournalError, match="not a readable extmm journal") as info:
        open_journal(path)
    assert "\n" not in str(info.value)


def test_missing_folder_and_read_only_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="does not exist"):
        open_journal(tmp_path / "nope" / "j.db")
    with pytest.raises(JournalError, match="does not exist"):
        open_session(tmp_path / "nope" / "j.db", META, clock=lambda: 0.0)
    path = tmp_path / "j.db"
    open_journal(path).close()
    path.chmod(0o444)
    if os.access(path, os.W_OK):
        pytest.skip("running as root: file modes do not bind")
    with pytest.raises(JournalError, match="read-only"):
        open_journal(path)


def test_two_instances_on_one_journal(tmp_path: Path) -> None:
    first = open_session(tmp_path / "j.db", META, clock=lambda: 0.0)
    with pytest.raises(JournalError, match="in use by another extmm process"):
        open_session(tmp_path / "j.db", META, clock=lambda: 0.0)
    first.release()
    open_session(tmp_path / "j.db", META, clock=lambda: 0.0).release()  # free again


# -- the actor -----------------------------------------------------------------------------------


async def test_rows_are_committed_in_batches(tmp_path: Path) -> None:
    journal = open_session(tmp_path / "j.db", META, clock=clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for i in range(1000):
            journal.record(event(i))
        await trio.sleep(1.0)
        assert count(tmp_path / "j.db", "events") == 1000
        await journal.close({"ok": True})
    stats = journal.statistics()
    assert (stats.written, stats.dropped, stats.degraded) == (1001, 0, None)
    assert stats.commits < 10  # batches, not one commit per row
    with sqlite3.connect(tmp_path / "j.db") as conn:
        assert conn.execute("SELECT summary FROM sessions").fetchone()[0] == '{"ok": true}'


async def test_full_inbox_drops_are_counted(tmp_path: Path) -> None:
    journal = open_session(tmp_path / "j.db", META, clock=clock, inbox_rows=10)
    for i in range(25):  # the actor is not running: nothing drains the inbox
        journal.record(event(i))
    assert journal.statistics().dropped == 15
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.close()
    assert count(tmp_path / "j.db", "events") == 10


async def test_disk_full_degrades_keeps_rows_and_recovers(tmp_path: Path) -> None:
    """A real SQLITE_FULL (the file may not grow), then room again: nothing is lost."""
    path = tmp_path / "j.db"
    journal = open_session(path, META, clock=clock, retry_max_s=2.0)
    conn = journal.writer.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for i in range(2000):
            journal.record(EventRow(at=float(i), kind="test", market=None, detail="x" * 200))
        await wait_until(lambda: journal.degraded is not None, within=5)
        assert "disk full" in journal.degraded
        assert journal.statistics().pending == 2000 and journal.dropped == 0
        conn.execute("PRAGMA max_page_count = 1000000")  # room again
        await wait_until(lambda: journal.degraded is None, within=10)
        await journal.close()
    assert journal.dropped == 0 and journal.write_errors >= 1
    assert count(path, "events") == 2000


async def test_read_only_journal_counts_what_overflows(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = open_session(path, META, clock=clock, pending_rows=100, retry_max_s=1.0)
    journal.writer.conn.execute("PRAGMA query_only = ON")  # every write now fails as read-only
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for i in range(300):
            journal.record(event(i))
            if i % 50 == 0:
                await trio.sleep(0.3)
        await wait_until(lambda: journal.degraded is not None, within=5)
        assert "read-only" in journal.degraded or "readonly" in journal.degraded
        await trio.sleep(2.0)
        await journal.close()
    stats = journal.statistics()
    assert stats.written == 0
    assert stats.dropped == 301  # 300 events + the session end: every one counted


async def test_operational_error_on_the_worker_thread(tmp_path: Path) -> None:
    """Any sqlite3.OperationalError raised by the writer degrades; the rows wait and go in."""

    class Flaky(JournalWriter):
        failures = 3

        def write(self, rows):  # type: ignore[no-untyped-def]
            if self.failures:
                self.failures -= 1
                raise sqlite3.OperationalError("database is locked")
            return super().write(rows)

    journal = open_session(tmp_path / "j.db", META, clock=clock, retry_max_s=1.0)
    journal.writer = Flaky(journal.writer.conn, journal.writer.session_id)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for i in range(10):
            journal.record(event(i))
        await wait_until(lambda: journal.degraded is not None, within=5)
        assert "locked" in journal.degraded
        await wait_until(lambda: journal.written == 10, within=20)
        await journal.close()
    assert journal.dropped == 0 and journal.degraded is None


# -- the ledger ----------------------------------------------------------------------------------


async def test_session_ledger_is_restored_exactly(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    ledger = MarketLedger(market="BTC-USD").with_mark(Decimal(100))
    journal = open_session(path, META, clock=clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.record(MarkRow(at=1.0, kind="open", ledger=ledger))
        for i, (side, price, mid) in enumerate([(Side.BUY, "99.5", "100"), (Side.SELL, "101", "100.7")]):
            ledger = ledger.with_fill(side, Decimal(price), Decimal("0.3"), fee=Decimal("0.01"), mid=Decimal(mid))
            journal.record(FillRow(at=2.0 + i, market="BTC-USD", trade_id=i, order_id=None, external_id=None,
                                   side=side.value, price=Decimal(price), qty=Decimal("0.3"), fee=Decimal("0.01"),
                                   is_taker=False, mid=Decimal(mid)))
        # killed here: no final mark; the fills after the last mark are replayed
        await journal.close()
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        restored = session_ledgers(conn, 1)["BTC-USD"]
        assert restored == ledger
        assert lifetime_net(conn, network="paper", account="vault 1") == {"BTC-USD": ledger.total}
        assert lifetime_net(conn, network="testnet", account="vault 1") == {}


# -- a whole bot ---------------------------------------------------------------------------------


async def test_bot_journals_every_fill_and_order(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    path = tmp_path / "j.db"
    journal = open_session(path, META, clock=clock, on_thread=False)  # a worker thread lets autojump_clock race ahead
    async with running_bot(bot_config(), journal=journal) as bot:
        await wait_until(lambda: len(bot.engine.trades(bot.account_id)) >= 4, within=600)
        await trio.sleep(70)  # markouts at 60 s and a periodic mark
        bot.stop.set()
        await wait_until(lambda: bot.result, within=60)
    summary = bot.result[0]
    venue_trades = {t.id for t in bot.engine.trades(bot.account_id)}
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        fills = {r["trade_id"] for r in conn.execute("SELECT trade_id FROM fills")}
        assert fills == venue_trades and len(fills) == summary.fills
        markouts = conn.execute("SELECT COUNT(*) FROM fills WHERE markout_1s IS NOT NULL").fetchone()[0]
        assert markouts >= 1
        states = {r[0] for r in conn.execute("SELECT DISTINCT state FROM orders")}
        assert {"PENDING_NEW", "NEW"} <= states
        net = sum((lg.total for lg in session_ledgers(conn, 1).values()), Decimal(0))
        assert net == summary.pnl["net"]
        assert conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'ChildStarted'").fetchone()[0] >= 14
    assert summary.lifetime_pnl == summary.pnl["net"]
    assert journal.dropped == 0


async def test_trading_goes_on_when_the_disk_is_full(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    path = tmp_path / "j.db"
    journal = open_session(path, META, clock=clock, pending_rows=50, on_thread=False)
    conn = journal.writer.conn
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    async with running_bot(bot_config(), journal=journal) as bot:
        # more rows than the buffer holds: dropped and counted, never silently
        await wait_until(lambda: journal.degraded is not None and journal.dropped > 0, within=600)
        assert "disk full" in journal.degraded
        fills_then = len(bot.engine.trades(bot.account_id))
        await wait_until(lambda: len(bot.engine.trades(bot.account_id)) >= fills_then + 3, within=600)
        bot.stop.set()
        await wait_until(lambda: bot.result, within=60)
    assert bot.result[0].fills >= fills_then + 3  # trading went on


async def test_backtest_writes_the_same_schema(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    from extmm.journal.report import history, report
    from extmm.research.backtest.options import BacktestOptions
    from extmm.research.backtest.run import run_backtest

    path = tmp_path / "journal.db"
    result = await run_backtest(bot_config(), BacktestOptions(hours=0.03, seed=3, journal_path=path))
    conn = open_journal(path, readonly=True)
    fills = history(conn, "fills")
    assert len(fills) == result.summary.fills > 0
    rep = report(conn)
    assert Decimal(rep["lifetime"]["net"]) == result.summary.pnl["net"]
    assert sum(d["fills"] for d in rep["days"]) == result.summary.fills
    assert rep["sessions"][0]["kind"] == "backtest" and rep["sessions"][0]["clean_exit"]


def test_panel_metrics_and_healthz_show_a_degraded_journal() -> None:
    import attrs
    from rich.console import Console

    from extmm.journal.actor import JournalStats
    from extmm.ops.dashboard_render import render
    from extmm.ops.metrics import Metrics, health_payload
    from extmm.ops.status import example_status

    stats = JournalStats(enabled=True, written=10, dropped=7, pending=3, commits=2, write_errors=4,
                         degraded="disk full (database or disk is full)")
    status = attrs.evolve(example_status(), journal=stats, lifetime_net=Decimal("12.5"))
    console = Console(width=160, record=True)
    console.print(render(status))
    text = console.export_text()
    assert "lifetime PnL" in text and "7 dropped" in text and "disk full" in text
    metrics = Metrics(process_metrics=False)
    metrics.update(status)
    exposition = metrics.exposition().decode()
    assert "extmm_journal_rows_dropped_total 7.0" in exposition and "extmm_journal_degraded 1.0" in exposition
    _, body = health_payload(status)
    assert body["journal"]["dropped"] == 7 and body["pnl"]["lifetime"] == "12.5"


async def test_status_shows_pnl_journal_and_last_fills(tmp_path: Path) -> None:
    from extmm.commands.status import last_fills, render

    body = {"healthy": True, "ready": True, "network": "paper",
            "markets": {"BTC-USD": {"state": "ACTIVE", "book_stale": False, "open_orders": 2,
                                    "position": "0.001", "pnl_net": "1.5", "fills": 3}},
            "pnl": {"session": "1.5", "lifetime": "4.25"},
            "journal": {"written": 9, "dropped": 0, "pending": 1, "degraded": None}}
    lines = render(200, body)
    assert any("position 0.001" in line and "pnl 1.5" in line for line in lines)
    assert "pnl: session 1.5, lifetime 4.25" in lines
    assert "journal: ok, 9 rows written, 0 dropped, 1 pending" in lines
    assert last_fills(str(tmp_path / "absent.db"))[0].startswith("last fills: unknown")
    journal = open_session(tmp_path / "j.db", META, clock=clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.record(FillRow(at=1_800_000_000.0, market="BTC-USD", trade_id=1, order_id=None, external_id=None,
                               side="BUY", price=Decimal("84000"), qty=Decimal("0.001"), fee=Decimal("0.01"),
                               is_taker=False, mid=Decimal("84001")))
        await journal.close()
    shown = last_fills(str(tmp_path / "j.db"))
    assert shown[0] == "last fills:" and "BTC-USD  BUY 0.001 @ 84000  fee 0.01 maker" in shown[1]


async def test_a_malformed_row_is_skipped_and_counted(tmp_path: Path) -> None:
    from extmm.journal.rows import MarkoutRow

    journal = open_session(tmp_path / "j.db", META, clock=clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.record(event(1))
        journal.record(MarkoutRow(trade_id=1, horizon_s=5.0, bps=1.0))  # no such horizon column
        journal.record(event(2))
        await journal.close()
    assert journal.dropped == 1 and journal.written == 3  # two events and the session end
    assert count(tmp_path / "j.db", "events") == 2


def test_exit_summary_goes_to_the_json_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from loguru import logger

    from extmm.ops.logs import configure_logging
    from extmm.runtime.app import print_summary
    from supervisors.root import RunSummary

    log = tmp_path / "log.jsonl"
    configure_logging(level="INFO", json_file=log, stderr=False)
    summary = RunSummary(network="paper", markets=("BTC-USD",), orders_sent=3, fills=1,
                         pnl={"net": Decimal("0.5")}, position={"BTC-USD": Decimal(0)}, open_orders_at_exit=0,
                         restarts={}, breaker_trips=0, lifetime_pnl=Decimal("2.5"))
    try:
        print_summary(summary)
    finally:
        logger.remove()
    assert json.loads(capsys.readouterr().out)["lifetime_pnl"] == "2.5"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    logged = [line for line in lines if line["message"] == "exit summary"]
    assert logged and json.loads(logged[0]["extra"]["summary"])["fills"] == 1
