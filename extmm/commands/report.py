"""`python -m extmm report`: per day and market, the PnL split, volume, fills, fill ratio,
markouts, time quoting, restarts and breaker trips, plus the lifetime net PnL — from a live
journal or a backtest's; PNG charts with `--out` when matplotlib is installed."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "report",
        help="daily PnL, volume, markouts and more from the trading journal",
        description="Per day (UTC) and market: PnL split, volume, fills, fill ratio, average markouts, "
        "time quoting, restarts, breaker trips; and the lifetime net PnL.",
    )
    p.add_argument("--journal", default=None, metavar="PATH",
                   help="journal file (default $XDG_STATE_HOME/extmm/journal.db, or a backtest's journal.db)")
    p.add_argument("--since", default="7d", help="24h, 7d, 2026-12-01 ... (UTC; default 7d)")
    p.add_argument("--out", default=None, metavar="DIR", help="also write report.json and PNG charts here")
    p.add_argument("--format", choices=("table", "json"), default="table", help="default table")
    p.set_defaults(handler=main)


def render_table(rep: dict[str, Any]) -> str:
    from extmm.journal.report import table

    rows = [{k: v for k, v in d.items() if k != "markout_bps"}
            | {f"mo_{h}": v for h, v in d["markout_bps"].items()} for d in rep["days"]]
    for r in rows:
        for k in ("spread", "inventory", "fees", "funding", "net", "volume"):
            r[k] = f"{float(r[k]):.4f}" if k != "volume" else f"{float(r[k]):.2f}"
    lines = [f"since {rep['since'] or 'the beginning'} (UTC days)", table(rows), ""]
    if rep["sessions_started"]:
        lines.append("sessions started: " + ", ".join(f"{d} {n}" for d, n in rep["sessions_started"].items()))
    lines.append("breaker trips: " + (", ".join(f"{d} {n}" for d, n in rep["breaker_trips"].items()) or "none"))
    by_market = ", ".join(f"{m} {float(v):.4f}" for m, v in rep["lifetime"]["by_market"].items())
    lines.append(f"lifetime net PnL: {float(rep['lifetime']['net']):.6f} ({by_market or 'no markets'}) "
                 f"over {len(rep['sessions'])} sessions")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from extmm.commands.history import open_readonly
    from extmm.journal.report import BadSince, parse_since, report

    try:
        since = parse_since(args.since, time.time())
    except BadSince as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"report: cannot create {out}: {exc.strerror}", file=sys.stderr)
            return 2
    conn = open_readonly(args.journal)
    if conn is None:
        return 2
    with conn:
        rep = report(conn, since=since)
    if args.format == "json":
        print(json.dumps(rep, indent=1))
    else:
        print(render_table(rep))
    if out is not None:
        (out / "report.json").write_text(json.dumps(rep, indent=1))
        try:
            from extmm.journal.charts import write_charts

            for path in write_charts(rep, out):
                print(f"chart: {path}", file=sys.stderr)
        except ImportError:
            print("report: no charts (matplotlib missing: pip install 'extmm[backtest]')", file=sys.stderr)
    return 0
