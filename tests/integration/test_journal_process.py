"""The journal across real processes: two paper sessions on one file, and a `kill -9`
followed by a restart that reconciles the fills the dead process never wrote."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from decimal import Decimal
from functools import partial
from pathlib import Path

import trio

from extmm.journal.read import session_ledgers
from extmm.research.chaos.process import _bot_env, free_port
from extmm.research.chaos.runner import chaos_config_data
from extmm.sim.server import SimHandle, serve_simulator
from tests import cli_driver

ROOT = Path(__file__).resolve().parents[2]
MARKETS = ["BTC-USD", "ETH-USD"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "extmm", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)


def summary_of(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def test_two_paper_sessions_on_one_journal(tmp_path: Path) -> None:
    journal = str(tmp_path / "journal.db")
    summaries = []
    for seed in (3, 4):
        done = run_cli("run", "--duration", "12", "--no-dashboard", "--metrics-port", "0", "--seed", str(seed),
                       "--journal", journal, "--log-level", "WARNING")
        assert done.returncode == 0, done.stderr[-2000:]
        summaries.append(summary_of(done.stdout))
    history = run_cli("history", "--journal", journal, "--format", "json", "--since", "1d")
    assert history.returncode == 0, history.stderr
    fills = json.loads(history.stdout)
    assert len(fills) == sum(s["fills"] for s in summaries)
    assert [f["session"] for f in fills].count(1) == summaries[0]["fills"]
    rep = run_cli("report", "--journal", journal, "--format", "json")
    assert rep.returncode == 0, rep.stderr
    lifetime = Decimal(json.loads(rep.stdout)["lifetime"]["net"])
    nets = [Decimal(s["pnl"]["net"]) for s in summaries]
    assert abs(lifetime - sum(nets)) <= Decimal("1e-6")
    # the second session continued the first one's lifetime PnL
    assert abs(Decimal(summaries[1]["lifetime_pnl"]) - sum(nets)) <= Decimal("1e-6")


def test_bad_journal_paths_are_one_line_and_exit_2(tmp_path: Path) -> None:
    # The handlers run in one child process (tests/cli_driver.py), each case on its own; the
    # sessions above and below run `python -m extmm` itself.
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"garbage" * 1000)
    from extmm.journal.schema import JournalLock

    run = ["run", "--no-dashboard", "--metrics-port", "0", "--journal"]
    cases = [
        ("does not exist", [*run, str(tmp_path / "missing" / "j.db"), "--duration", "1"], {}),
        ("not a readable", [*run, str(corrupt), "--duration", "1"], {}),
        ("in use by another extmm process", [*run, str(tmp_path / "busy.db")], {}),
        ("history", ["history", "--journal", str(corrupt)], {}),
        ("report", ["report", "--journal", str(corrupt)], {}),
    ]
    held = JournalLock(tmp_path / "busy.db")
    held.acquire()  # another extmm process writes this journal
    try:
        done = subprocess.run([sys.executable, "-c", cli_driver.DRIVER], input=cli_driver.cases_input(cases),
                              capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    finally:
        held.release()
    results = cli_driver.parse_results(done.stdout, [c[0] for c in cases], done.stderr)
    for words, code, err in results[:3]:
        assert code == 2, (words, err)
        assert err.strip().count("\n") == 0 and words in err and "Traceback" not in err, (words, err)
    for cmd, code, err in results[3:]:
        assert code == 2 and "Traceback" not in err and "journal error" in err, (cmd, err)


async def test_kill_9_then_restart_reconciles_fills(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(chaos_config_data(dead_mans_switch_sec=3)))
    journal = tmp_path / "journal.db"
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(partial(serve_simulator, markets=MARKETS, seed=5,
                                                        ping_interval_s=None))
        account = handle.account.account_id

        def venue_trades() -> list:
            return handle.engine.trades(account)

        async def start_bot(name: str, duration_s: float) -> trio.Process:
            cmd = [sys.executable, "-m", "extmm", "run", "--config", str(config), "--endpoint", handle.rest_url,
                   handle.stream_url, "--duration", str(duration_s), "--no-dashboard", "--metrics-port",
                   str(free_port()), "--log-level", "INFO", "--journal", str(journal)]
            with (tmp_path / f"{name}.out").open("wb") as out, (tmp_path / f"{name}.err").open("wb") as err:
                return await nursery.start(partial(trio.run_process, cmd, check=False, stdin=subprocess.DEVNULL,
                                                   stdout=out, stderr=err, env=_bot_env(handle), cwd=ROOT))

        first = await start_bot("first", 600)
        with trio.fail_after(120):
            while len(venue_trades()) < 3:  # noqa: ASYNC110 - the state lives in the engine
                await trio.sleep(0.05)
            # kill right after a fill: its row is likely still in the unwritten batch
            seen = len(venue_trades())
            while len(venue_trades()) == seen:  # noqa: ASYNC110
                await trio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        with trio.fail_after(10):
            while any(o for o in handle.engine.open_orders(account)):  # noqa: ASYNC110
                await trio.sleep(0.1)  # the dead man's switch
        # (orders resting until the switch fired may have filled after the kill: still session 1's)
        at_kill = list(venue_trades())
        second = await start_bot("second", 8)
        with trio.fail_after(90):
            await second.wait()
        assert second.returncode == 0, (tmp_path / "second.err").read_text()[-3000:]
        nursery.cancel_scope.cancel()
    summary = summary_of((tmp_path / "second.out").read_text())
    conn = sqlite3.connect(journal)
    conn.row_factory = sqlite3.Row
    journaled = {r["trade_id"]: r["session_id"] for r in conn.execute("SELECT trade_id, session_id FROM fills")}
    all_trades = venue_trades()
    assert set(journaled) == {t.id for t in all_trades}  # every fill of ours, none twice, none invented
    assert {t.id for t in at_kill} == {tid for tid, s in journaled.items() if s == 1}
    # the first session's ledger holds exactly the venue's position at the kill
    first_ledgers = session_ledgers(conn, 1)
    for market in MARKETS:
        venue_position = sum((t.qty if t.side.value == "BUY" else -t.qty for t in at_kill if t.market == market),
                             Decimal(0))
        held = first_ledgers[market].position if market in first_ledgers else Decimal(0)
        assert held == venue_position, market
    lifetime = sum((lg.total for s in (1, 2) for lg in session_ledgers(conn, s).values()), Decimal(0))
    assert abs(Decimal(summary["lifetime_pnl"]) - lifetime) <= Decimal("1e-6")
    reconciled = conn.execute("SELECT COUNT(*) FROM fills WHERE source = 'reconciled'").fetchone()[0]
    print(f"fills at kill: {len(at_kill)}, reconciled after restart: {reconciled}")
