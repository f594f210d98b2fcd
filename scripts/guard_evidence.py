"""Evidence for #16: today's default strategy, each adverse-selection guard alone, and the
recommended combination, on the simulator's `toxic` flow over several seeds.

    PYTHONPATH=$PWD python scripts/guard_evidence.py --seeds 1 2 3 4 --hours 0.25 --jobs 2

Every run is the production bot in virtual time (`extmm.research.backtest.run.backtest`), BTC-USD,
order latency 20 ms and feed latency 50 ms (the backtest defaults), book frames every
100 ms. Prints a Markdown table: mean ± sample std over the seeds of net PnL (USD), the
1/10/60 s markouts (bps, + = our favour), the share of fills from sweeps (a crowd taker
trading through our price, or a crowd order crossing our stale quote), fills and max
|inventory| (USD); and one JSON line per run on stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

BASE: dict[str, Any] = {
    "risk": {"max_net_position_usd": 200, "max_open_orders": 30, "min_balance_usd": 50},
    "markets": [{
        "name": "BTC-USD", "k": 0.0001, "alpha": 0.2, "beta": 0.25, "base_spread": 0.0002,
        "quote_notional_cap_usd": 50, "replace_threshold_bps": 2, "min_order_size": 0.0001,
    }],
}
COOLDOWN = {"fill_cooldown_ms": 2000}
SWEEP = {"sweep_window_ms": 1000, "sweep_move_bps": 2.0, "sweep_widen_bps": 4.0, "sweep_hold_ms": 3000}
MARKOUT = {"markout_horizon_s": 10, "markout_window": 20, "markout_widen_bps": 1.0, "markout_max_widen_bps": 10}
VOL = {"vol_window_ms": 2000, "vol_pause_bps": 3.0, "vol_pause_ms": 3000}
MICRO = {"fair_value": "microprice"}
VARIANTS: dict[str, dict[str, Any]] = {
    "today's default": {},
    "fill cooldown 2 s": {"guards": COOLDOWN},
    "sweep detector (widen 4 bps)": {"guards": SWEEP},
    "sweep detector (pull)": {"guards": {**SWEEP, "sweep_action": "pull"}},
    "markout widening": {"guards": MARKOUT},
    "volatility pause": {"guards": VOL},
    "microprice fair value": {"guards": MICRO},
    "ladder 3 levels, 5 bps": {"levels": 3, "level_spacing_bps": 5.0, "quote_notional_cap_usd": 20},
    "combination: cooldown + sweep + markout + vol": {"guards": {**COOLDOWN, **SWEEP, **MARKOUT, **VOL}},
    "sweep (pull) + vol pause": {"guards": {**SWEEP, "sweep_action": "pull", **VOL}},
    "sweep (pull) + vol pause + cooldown": {"guards": {**SWEEP, "sweep_action": "pull", **VOL, **COOLDOWN}},
}


def run_one(job: tuple[str, int, float, float, float]) -> dict[str, Any]:
    from loguru import logger

    from extmm.config import parse_config
    from extmm.research.backtest.options import BacktestOptions
    from extmm.research.backtest.run import backtest

    logger.remove()  # the bot's log lines are not the evidence

    name, seed, hours, latency_ms, feed_latency_ms = job
    raw = json.loads(json.dumps(BASE))
    raw["markets"][0].update(VARIANTS[name])
    result = backtest(parse_config(raw), BacktestOptions(hours=hours, seed=seed, flow="toxic",
                                                         order_latency_ms=latency_ms,
                                                         feed_latency_ms=feed_latency_ms))
    out = result.to_json(wall_seconds=1.0)
    reasons = out.get("fills_by_reason", {})
    total = sum(reasons.values())
    return {
        "variant": name, "seed": seed, "net": out["pnl"]["net"], "fills": out["fills"],
        "markouts": out["markouts"]["mean_bps"], "max_inv": out["max_abs_inventory_usd"],
        "sweep_share": (reasons.get("sweep", 0) + reasons.get("crossed", 0)) / total if total else None,
    }


def _cell(values: list[float | None], digits: int = 2) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.{digits}f} ± {sd:.{digits}f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--hours", type=float, default=0.25)
    p.add_argument("--order-latency-ms", type=float, default=20.0)
    p.add_argument("--feed-latency-ms", type=float, default=50.0)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--variants", nargs="*", default=None, help="subset of the variant names")
    args = p.parse_args()
    names = args.variants or list(VARIANTS)
    jobs = [(n, s, args.hours, args.order_latency_ms, args.feed_latency_ms) for n in names for s in args.seeds]
    with ProcessPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        rows = list(pool.map(run_one, jobs))
    for row in rows:
        print(json.dumps(row), file=sys.stderr)
    print(f"toxic flow, BTC-USD, {args.hours:g} h virtual per run, seeds {args.seeds}, "
          f"order latency {args.order_latency_ms:g} ms, feed latency {args.feed_latency_ms:g} ms, "
          "book frames every 100 ms; mean ± std over seeds\n")
    print("| configuration | net PnL USD | markout 1 s bps | markout 10 s bps | markout 60 s bps "
          "| fills from sweeps | fills | max inventory USD |")
    print("|---|---|---|---|---|---|---|---|")
    for n in names:
        rs = [r for r in rows if r["variant"] == n]
        print(f"| {n} | {_cell([r['net'] for r in rs])} | {_cell([r['markouts']['1s'] for r in rs])} "
              f"| {_cell([r['markouts']['10s'] for r in rs])} | {_cell([r['markouts']['60s'] for r in rs])} "
              f"| {_cell([r['sweep_share'] for r in rs])} | {_cell([r['fills'] for r in rs], 0)} "
              f"| {_cell([r['max_inv'] for r in rs], 0)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
