"""`python -m extmm history`: fills, order transitions or events from the trading journal,
as a table a person reads, CSV a spreadsheet reads, or JSON."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from typing import TYPE_CHECKING

from extmm.argtypes import positive_int

if TYPE_CHECKING:
    import sqlite3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "history",
        help="list fills, orders or events from the trading journal",
        description="What happened, from the trading journal (read-only; safe while the bot runs).",
    )
    p.add_argument("--journal", default=None, metavar="PATH",
                   help="journal file (default $XDG_STATE_HOME/extmm/journal.db, or a backtest's journal.db)")
    p.add_argument("--market", default=None, help="only this market")
    p.add_argument("--since", default=None, help="24h, 7d, 90m, 2026-12-01 or 2026-12-01T08:00 (UTC)")
    p.add_argument("--kind", choices=("fills", "orders", "events"), default="fills", help="default fills")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="default table")
    p.add_argument("--limit", type=positive_int, default=None, help="only the last N rows")
    p.set_defaults(handler=main)


def open_readonly(path: str | None) -> sqlite3.Connection | None:
    from extmm.journal.schema import JournalError, default_path, open_journal

    try:
        return open_journal(path or default_path(), readonly=True)
    except JournalError as exc:
        print(f"journal error: {exc}", file=sys.stderr)
        return None


def main(args: argparse.Namespace) -> int:
    from extmm.journal.report import BadSince, history, parse_since, table

    try:
        since = parse_since(args.since, time.time())
    except BadSince as exc:
        print(f"history: {exc}", file=sys.stderr)
        return 2
    conn = open_readonly(args.journal)
    if conn is None:
        return 2
    with conn:
        rows = history(conn, args.kind, market=args.market, since=since, limit=args.limit)
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.format == "csv":
        if rows:
            writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
            writer.writeheader()
            for r in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items()})
    else:
        print(table(rows))
    return 0
