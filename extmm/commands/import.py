"""`python -m extmm import`: public market data into a recording the backtest replays.

    python -m extmm import --format tardis --input book.csv.gz trades.csv.gz ticker.csv.gz \\
        --map BTCUSDT=BTC-USD --out btc.ndjson.gz
    python -m extmm import --format binance-futures --input depth.jsonl.gz trades.jsonl.gz \\
        snapshot.json --map BTCUSDT=BTC-USD --out btc.ndjson.gz

`tardis`: Tardis.dev CSV exports (incremental_book_L2, trades, derivative_ticker), plain
or gzipped. `binance-futures`: raw USD-M diff-depth and trade stream captures plus REST
depth snapshots, synchronised by Binance's rules (see extmm/research/dataimport/binance_futures.py
for the capture format, including the optional per-line `recv_ms` receive time).
`--tick`/`--lot` default to the finest step the data's prices/sizes use; a price or size
off the grid is an error naming its file and line. Prints one JSON line of counts
(level_updates, trades, book_frames, snapshots, marks, funding, ignored_removals, skipped).
Exit 2 on bad input (nothing written).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "import",
        help="convert public market data (Tardis CSV, Binance futures captures) into a recording",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--format", required=True, choices=("tardis", "binance-futures"))
    p.add_argument("--input", required=True, nargs="+", type=Path, metavar="FILE")
    p.add_argument("--map", required=True, action="append", metavar="SYMBOL=MARKET",
                   help="the data's symbol and our market name (repeat for several)")
    p.add_argument("--tick", default=None, help="price step (default: what the data needs)")
    p.add_argument("--lot", default=None, help="size step (default: what the data needs)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.ndjson.gz")
    p.set_defaults(handler=main)


def _step(text: str | None, what: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"--{what} {text!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise ValueError(f"--{what} must be > 0")
    return value


def main(args: argparse.Namespace) -> int:
    from extmm.research.dataimport import binance_futures, tardis
    from extmm.research.dataimport.common import Event, ImportError_, ImportStats, parse_map, write_recording
    from extmm.sim.recording import RecordingError

    try:
        symbols = parse_map(args.map)
        tick, lot = _step(args.tick, "tick"), _step(args.lot, "lot")
        missing = [str(p) for p in args.input if not p.is_file()]
        if missing:
            raise ImportError_(f"no such file: {', '.join(missing)}")
        if args.out.exists() and args.out.is_dir():
            raise ImportError_(f"--out {args.out} is a directory")
        stats = ImportStats()
        resyncs: list[str] = []
        skipped: Counter[str] = stats.skipped
        if args.format == "tardis":

            def events() -> Iterator[Event]:
                skipped.clear()
                return tardis.read_events(args.input, symbols, skipped)
        else:

            def events() -> Iterator[Event]:
                skipped.clear()
                resyncs.clear()
                return binance_futures.read_events(args.input, symbols, skipped, resyncs)

        write_recording(
            events, args.out, markets=list(symbols.values()), source=f"import {args.format}",
            tick=tick, lot=lot, stats=stats,
        )
    except (ImportError_, ValueError, RecordingError, OSError, UnicodeDecodeError) as exc:
        print(f"import: {exc}", file=sys.stderr)
        return 2
    line = {"out": str(args.out), "format": args.format, **stats.to_json()}
    if resyncs:
        line["resyncs"] = len(resyncs)
    sys.stdout.write(json.dumps(line) + "\n")
    return 0
