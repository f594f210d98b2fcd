"""`bench replay`: replay throughput — ours through the production actors, and hftbacktest's.

Data: `--input FILE` (a recording, one market), or generated: `--minutes M` of the
simulator's synthetic flow for `--market`, with every recorded book delta split into one
frame per level update spread over its 100 ms (`--split`, the default: what a raw
exchange feed such as Binance's `@depth@0ms` or a Tardis incremental_book_L2 export looks
like — one message per change).

Ours: `python -m extmm backtest`'s replay of the data (the actors that trade, the default
latencies, venue book cadence `--book-interval-ms`, default 100 as Extended). hftbacktest
(when installed, `pip install hftbacktest`): the same data converted to its event format,
running its GLFT market-making example with the same order latency (from
scripts/compare_hftbacktest.py; it quotes after a `--hbt-window-s` calibration window),
timed after numba's compilation. `--profile FILE` adds a second, cProfiled run of ours.

`--deep-updates-per-s N` makes the data (generated or `--input`) as busy as a busy
market's raw feed: about N more level updates a second, deep in the book (10 to 200
levels from the touch), each undone within a second; the touch, the levels near it and
the trades are the recording's own (extmm/research/bench/_busy.py). A day of a busy
perpetual is on the order of 100 million level updates (~1,000 a second); the
simulator's synthetic flow alone makes about 90 a second.

events: one definition for both engines, hftbacktest's: the data set's L2 level updates
plus its trade prints; events_per_s: per wall-clock second of each engine's run, in the
same process, one after the other; ours' cpu_seconds is its run's process CPU time (less
sensitive than wall time to a busy machine). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from extmm.argtypes import existing_file, non_negative_float, output_file, positive_float

ROOT = Path(__file__).resolve().parents[3]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("replay", help="replay events/s: ours and hftbacktest's", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=existing_file, default=None, help="a one-market recording (default: generated)")
    p.add_argument("--market", default="BTC-USD")
    p.add_argument("--minutes", type=positive_float, default=10.0, help="generated data length (default 10)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-split", action="store_true", help="generated data: keep the 100 ms book frames")
    p.add_argument("--book-interval-ms", type=non_negative_float, default=100.0,
                   help="our venue's book cadence; 0 delivers every recorded frame (default 100)")
    p.add_argument("--deep-updates-per-s", type=non_negative_float, default=0.0, metavar="N",
                   help="add about N level updates a second deep in the book (default 0)")
    p.add_argument("--no-hftbacktest", action="store_true", help="skip hftbacktest even when installed")
    p.add_argument("--hbt-window-s", type=positive_float, default=60.0,
                   help="hftbacktest GLFT example: calibration window before it quotes (default 60 s)")
    p.add_argument("--profile", type=output_file, default=None, metavar="FILE",
                   help="also write a cProfile of our run here (pstats format)")
    p.set_defaults(handler=run)


def split_deltas(src: Path, dst: Path) -> None:
    """Each recorded DELTA as one frame per level update, spread evenly over the next 100 ms."""
    import orjson

    from extmm.sim.recording import RecordingWriter, read_recording

    reader = read_recording([src])
    writer = RecordingWriter(dst, header={k: v for k, v in reader.header.items() if k not in ("k", "v", "part")})
    seq: dict[str, int] = {}
    last_t = 0
    try:
        for record in reader:
            # a data record names its kind and market (the header is skipped below)
            kind, market = cast(str, record.get("k")), cast(str, record.get("m"))
            if kind == "header":
                continue
            if kind == "open":
                writer.mark_open(record["t"], record["s"], market)
                continue
            frame = record.get("f")
            if not isinstance(frame, dict):
                continue
            t = max(int(record["t"]), last_t)
            if kind == "orderbook" and frame.get("type") == "DELTA":
                data = frame["data"]
                levels = [("b", lv) for lv in data.get("b") or []] + [("a", lv) for lv in data.get("a") or []]
                for i, (side, lv) in enumerate(levels):
                    at = t + (i * 100) // max(len(levels), 1)
                    seq[market] = seq.get(market, 0) + 1
                    part = {"t": "DELTA", "m": market, "b": [lv] if side == "b" else [], "a": [lv] if side == "a" else []}
                    writer.write_frame(at, kind, market, orjson.dumps(
                        {"type": "DELTA", "data": part, "ts": frame.get("ts", t) + (at - t), "seq": seq[market]}))
                    last_t = at
                continue
            if kind == "orderbook":
                seq[market] = seq.get(market, 0) + 1
                frame = {**frame, "seq": seq[market]}
            writer.write_frame(t, kind, market, orjson.dumps(frame))
            last_t = t
    finally:
        writer.close()


def dataset_events(path: Path, market: str) -> dict[str, int]:
    from extmm.research.backtest.observe import book_levels
    from extmm.sim.recording import read_recording

    out = {"level_updates": 0, "prints": 0, "book_frames": 0}
    for record in read_recording([path]):
        frame = record.get("f")
        if record.get("m") != market or not isinstance(frame, dict):
            continue
        if record.get("k") == "orderbook":
            out["book_frames"] += 1
            out["level_updates"] += book_levels(frame.get("data"))
        elif record.get("k") == "trades" and isinstance(frame.get("data"), list):
            out["prints"] += len(frame["data"])
    return out


def run_ours(path: Path, market: str, book_interval_ms: float, profile: Path | None) -> dict[str, Any]:
    import attrs
    from loguru import logger

    from extmm.config import load_config
    from extmm.research.backtest.options import BacktestOptions
    from extmm.research.backtest.run import backtest

    logger.disable("")
    cfg = load_config(ROOT / "config" / "config.json")
    cfg = attrs.evolve(cfg, markets=[attrs.evolve(m, enabled=True) for m in cfg.markets if m.name == market]
                       or cfg.markets[:1])
    opts = BacktestOptions(hours=1000.0, replay=(path,), book_interval_s=book_interval_ms / 1000.0)
    # What the backtest imports on first use is start-up, not replay: not in the timed run.
    import extmm.journal.session  # noqa: F401
    import extmm.sim.replay  # noqa: F401

    started, cpu = time.perf_counter(), time.process_time()
    result = backtest(cfg, opts)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if profile is not None:  # a second, profiled run: the timed one above runs without the profiler
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        backtest(cfg, opts)
        prof.disable()
        prof.dump_stats(str(profile))
    line = result.to_json(wall_seconds=wall)
    return {
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),  # this process's CPU time: less sensitive to a busy machine
        "virtual_seconds": line["virtual_seconds"],
        "actor_market_events": line["market_events"],
        "messages": line["messages"],
        "book_frames_delivered": line["book_frames"],
        "conflated_frames": line.get("replay_conflated_frames"),
        "orders_sent": line["orders_sent"],
        "fills": line["fills"],
        "pnl_net": line["pnl"]["net"],
        "book_interval_ms": book_interval_ms,
    }


def run_hftbacktest(path: Path, market: str, window_steps: int) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("compare_hftbacktest", ROOT / "scripts" / "compare_hftbacktest.py")
    if spec is None or spec.loader is None:
        return {"skipped": "scripts/compare_hftbacktest.py not found"}
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from extmm.markets import bundled_markets, spec_from_market
    from extmm.sim.recording import read_recording

    header_market = read_recording([path]).markets.get(market) or bundled_markets()[market]
    grid = spec_from_market(header_market)
    events, counts = module.to_hftbacktest_events(path, market)
    mid = float(events["px"][len(events) // 2]) if len(events) else 1.0
    out = module.run_hftbacktest(
        events, tick=float(grid.tick_size), lot=float(grid.lot_size),
        order_qty=max(float(grid.lot_size), round(50.0 / mid / float(grid.lot_size)) * float(grid.lot_size)),
        max_position=round(200.0 / mid / float(grid.lot_size)) * float(grid.lot_size),
        latency_ms=20.0, maker_fee=0.0, taker_fee=0.00025, window=window_steps,
    )
    return {k: out[k] for k in ("wall_seconds", "jit_compile_seconds", "rows", "rows_per_s", "trades")}


def run(args: argparse.Namespace) -> int:
    from loguru import logger

    logger.disable("")
    workdir = Path(tempfile.mkdtemp(prefix="extmm-bench-replay-"))
    if args.input is not None:
        path = args.input
        if not path.is_file():
            print(f"bench replay: no such file: {path}", file=sys.stderr)
            return 2
        source = str(path)
    else:
        from extmm.research.record import record_synthetic

        raw = workdir / "synthetic.ndjson.gz"
        record_synthetic(raw, markets=[args.market], seconds=args.minutes * 60, seed=args.seed,
                         kinds=("orderbook", "trades", "funding", "mark"))
        if args.no_split:
            path = raw
        else:
            path = workdir / "split.ndjson.gz"
            split_deltas(raw, path)
        source = f"synthetic {args.minutes:g} min of {args.market}, seed {args.seed}" + (
            "" if args.no_split else ", one frame per level update")
    if args.deep_updates_per_s > 0:
        from extmm.research.bench._busy import add_deep_updates

        busy = workdir / "busy.ndjson.gz"
        add_deep_updates(path, busy, market=args.market, per_s=args.deep_updates_per_s, seed=args.seed)
        path = busy
        source += f", plus about {args.deep_updates_per_s:g} deep level updates a second"
    counts = dataset_events(path, args.market)
    events = counts["level_updates"] + counts["prints"]
    ours = run_ours(path, args.market, args.book_interval_ms, args.profile)
    ours["events_per_s"] = round(events / ours["wall_seconds"], 1)
    line: dict[str, Any] = {"data": source, "data_file": str(path), "events": events, **counts, "ours": ours}
    if args.no_hftbacktest:
        line["hftbacktest"] = {"skipped": "--no-hftbacktest"}
    else:
        try:
            import hftbacktest  # noqa: F401
        except ImportError as exc:
            line["hftbacktest"] = {"skipped": f"not installed ({exc}); pip install hftbacktest"}
        else:
            hbt = run_hftbacktest(path, args.market, int(args.hbt_window_s * 10))
            if "wall_seconds" in hbt:
                hbt["events_per_s"] = round(events / hbt["wall_seconds"], 1)
            line["hftbacktest"] = hbt
    sys.stdout.write(json.dumps(line) + "\n")
    return 0
