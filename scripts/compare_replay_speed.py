"""Replay speed of two source trees on the same recordings, alternating, N runs each.

    git worktree add /tmp/extmm-old 07a42a6          # the code before issue 15
    python scripts/compare_replay_speed.py --old /tmp/extmm-old --new . --runs 3 FILE...

Each run is a fresh process with `PYTHONPATH` set to its tree, calling that tree's
`backtest()` on one recording: BTC-USD only (the tree's config/config.json), 20 ms order
and 50 ms feed latency, until the data ends — the call issue 15 was measured with. Old and
new alternate, so a machine that slows down or speeds up hurts both alike. Prints one JSON
line per run, then per file the best and median wall seconds of each tree and the
speed-ups (old / new).

Recordings: `python -m extmm record --synthetic ...`, or the ones `bench replay` builds:
see docs/backtest/README.md#replay-speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# Runs inside each tree; the backtest module moved in the layering work (issue 17).
_RUN = r"""
import json, sys, time, attrs
from pathlib import Path
from loguru import logger
logger.disable("")
try:
    from extmm.research.backtest.run import backtest, BacktestOptions
except ImportError:
    from extmm.backtest.run import backtest, BacktestOptions
from extmm.config import load_config
cfg = load_config("config/config.json")
cfg = attrs.evolve(cfg, markets=[attrs.evolve(m, enabled=True) for m in cfg.markets if m.name == "BTC-USD"])
opts = BacktestOptions(hours=1000, replay=(Path(sys.argv[1]),), order_latency_ms=20.0, feed_latency_ms=50.0)
wall, cpu = time.perf_counter(), time.process_time()
result = backtest(cfg, opts)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "orders": result.summary.orders_sent,
                  "fills": result.summary.fills}))
"""


def run_once(tree: Path, recording: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", _RUN, str(recording)], cwd=tree, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: the backtest failed:\n{done.stderr[-2000:]}")
    out: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", type=Path, required=True, help="the tree to compare against")
    p.add_argument("--new", type=Path, default=Path("."), help="this tree (default .)")
    p.add_argument("--runs", type=int, default=3, help="runs of each tree per file (default 3)")
    p.add_argument("recordings", type=Path, nargs="+")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    for path in [args.old, args.new, *args.recordings]:
        if not path.exists():
            p.error(f"no such file or directory: {path}")
    for recording in args.recordings:
        walls: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(args.runs):
            for name, tree in (("old", args.old), ("new", args.new)):
                result = run_once(tree.resolve(), recording.resolve())
                walls[name].append(float(result["wall_s"]))  # type: ignore[arg-type]
                print(json.dumps({"data": str(recording), "tree": name, "run": i + 1, **result}), flush=True)
        old, new = walls["old"], walls["new"]
        print(json.dumps({
            "data": str(recording),
            "old_best_s": min(old), "old_median_s": statistics.median(old),
            "new_best_s": min(new), "new_median_s": statistics.median(new),
            "speedup_best": round(min(old) / min(new), 2),
            "speedup_median": round(statistics.median(old) / statistics.median(new), 2),
        }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
