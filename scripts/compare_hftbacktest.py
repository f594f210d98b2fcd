#!/usr/bin/env python
"""extmm's backtest next to hftbacktest's GLFT example, on the same synthetic data. Prints one JSON object.

    /tmp/venv/bin/python scripts/compare_hftbacktest.py [--market BTC-USD] [--minutes 60] [--seed 7]

1. Records the simulator's synthetic flow for one market (in-process, virtual time).
2. Converts the recording to hftbacktest's event format (`event_dtype`): every SNAPSHOT
   becomes DEPTH_CLEAR + DEPTH_SNAPSHOT rows, every DELTA level a DEPTH_EVENT row with its
   absolute size, every print a TRADE_EVENT row; exchange and local timestamps are the
   frames' exchange and receive times.
3. Runs hftbacktest's GLFT market-making example (the tutorial's single-quote version:
   rolling 10-minute calibration of A, k and volatility in ticks, γ = 0.05, Δ = 1,
   adj1 = 1, adj2 = 0.05), with our quote size and position limit, the risk-averse queue
   model (like ours), the same latency and fees.
4. Replays the same recording through extmm's production bot (`glft` model with A and k
   calibrated from the recording by `extmm.domain.calibration`).

Reported per engine: wall time; `events` and `events_per_s` with one definition for both,
hftbacktest's: the data set's L2 level updates plus its trade prints (the same count for
both engines, per each engine's wall second; hftbacktest's `rows` also hold its 2
DEPTH_CLEAR markers per snapshot); for extmm also what its actors received (the backtest's
`market_events`: level updates, mark and funding updates — prints reach its replay fill
model, not the actors, unless a model recalibrates online — and `messages`), with a check
that the level updates its actors received are exactly the data set's; PnL, and the
inventory spread (std, min, max of the position in USD, sampled every second).
hftbacktest is not a dependency: without it the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# -- data conversion --------------------------------------------------------------------------------


def to_hftbacktest_events(path: Path, market: str) -> tuple[NDArray[Any], dict[str, int]]:
    """The recording's book frames and prints as hftbacktest events (ns timestamps), in order."""
    from hftbacktest import (
        BUY_EVENT,
        DEPTH_CLEAR_EVENT,
        DEPTH_EVENT,
        DEPTH_SNAPSHOT_EVENT,
        SELL_EVENT,
        TRADE_EVENT,
        event_dtype,
    )
    from hftbacktest.data import correct_event_order, validate_event_order

    from extmm.sim.recording import read_recording

    rows: list[tuple[int, int, int, float, float]] = []
    counts = {"snapshots": 0, "deltas": 0, "level_updates": 0, "trade_messages": 0, "prints": 0}
    last_exch = 0
    for record in read_recording([path]):
        frame = record.get("f")
        if record.get("m") != market or not isinstance(frame, dict):
            continue
        local = int(record["t"]) * 1_000_000
        ts = frame.get("ts")
        exch = min(int(ts), int(record["t"])) * 1_000_000 if isinstance(ts, int) and ts > 0 else local
        exch = max(exch, last_exch)
        last_exch = exch
        data = frame.get("data")
        if record["k"] == "orderbook" and isinstance(data, dict):
            if frame.get("type") == "SNAPSHOT":
                counts["snapshots"] += 1
                for flag, levels in ((BUY_EVENT, data["b"]), (SELL_EVENT, data["a"])):
                    if levels:
                        rows.append((DEPTH_CLEAR_EVENT | flag, exch, local, float(levels[-1]["p"]), 0.0))
                        rows += [
                            (DEPTH_SNAPSHOT_EVENT | flag, exch, local, float(lv["p"]), float(lv["q"]))
                            for lv in levels
                        ]
                        counts["level_updates"] += len(levels)
            else:
                counts["deltas"] += 1
                for flag, levels in ((BUY_EVENT, data["b"]), (SELL_EVENT, data["a"])):
                    for lv in levels:
                        rows.append((DEPTH_EVENT | flag, exch, local, float(lv["p"]), float(lv["c"])))
                        counts["level_updates"] += 1
        elif record["k"] == "trades" and isinstance(data, list):
            counts["trade_messages"] += 1
            for trade in data:
                flag = BUY_EVENT if trade["S"] == "BUY" else SELL_EVENT
                rows.append((TRADE_EVENT | flag, exch, local, float(trade["p"]), float(trade["q"])))
                counts["prints"] += 1
    raw = np.zeros(len(rows), event_dtype)
    if rows:
        columns = list(zip(*rows, strict=True))
        raw["ev"], raw["exch_ts"], raw["local_ts"], raw["px"], raw["qty"] = (np.array(c) for c in columns)
    events = correct_event_order(
        raw, np.argsort(raw["exch_ts"], kind="stable"), np.argsort(raw["local_ts"], kind="stable")
    )
    validate_event_order(events)
    counts["rows"] = len(raw)
    return events, counts


# -- hftbacktest's GLFT example -----------------------------------------------------------------------


def glft_example() -> Any:
    """The tutorial's GLFT market maker (hftbacktest docs, "GLFT market making model"), as njit code."""
    from hftbacktest import BUY_EVENT, GTX, LIMIT
    from numba import njit

    @njit(cache=False)
    def measure_trading_intensity(order_arrival_depth, out):
        max_tick = 0
        for depth in order_arrival_depth:
            if not np.isfinite(depth):
                continue
            tick = round(depth / 0.5) - 1
            if tick < 0 or tick >= len(out):
                continue
            out[:tick] += 1
            max_tick = max(max_tick, tick)
        return out[:max_tick]

    @njit(cache=False)
    def compute_coeff(xi, gamma, delta, a, k):
        inv_k = np.divide(1, k)
        c1 = 1 / (xi * delta) * np.log(1 + xi * delta * inv_k)
        c2 = np.sqrt(
            np.divide(gamma, 2 * a * delta * k) * ((1 + xi * delta * inv_k) ** (k / (xi * delta) + 1))
        )
        return c1, c2

    @njit(cache=False)
    def linear_regression(x, y):
        sx = np.sum(x)
        sy = np.sum(y)
        sx2 = np.sum(x**2)
        sxy = np.sum(x * y)
        w = len(x)
        slope = (w * sxy - sx * sy) / (w * sx2 - sx**2)
        intercept = (sy - slope * sx) / w
        return slope, intercept

    @njit(cache=False)
    def glft_market_maker(hbt, recorder, order_qty, max_position, window, end_ts, steps_out):
        asset_no = 0
        tick_size = hbt.depth(asset_no).tick_size
        arrival_depth = np.full(10_000_000, np.nan, np.float64)
        mid_price_chg = np.full(10_000_000, np.nan, np.float64)
        t = 0
        mid_price_tick = np.nan
        tmp = np.zeros(500, np.float64)
        ticks = np.arange(len(tmp)) + 0.5
        a = np.nan
        k = np.nan
        volatility = np.nan
        gamma = 0.05
        delta = 1
        adj1 = 1
        adj2 = 0.05
        # elapse() keeps returning 0 past the end of in-memory data here, so stop at the last event.
        while hbt.elapse(100_000_000) == 0 and hbt.current_timestamp <= end_ts:  # every 100 ms
            if not np.isnan(mid_price_tick):
                depth = -np.inf
                for last_trade in hbt.last_trades(asset_no):
                    trade_price_tick = last_trade.px / tick_size
                    if last_trade.ev & BUY_EVENT == BUY_EVENT:
                        depth = max(trade_price_tick - mid_price_tick, depth)
                    else:
                        depth = max(mid_price_tick - trade_price_tick, depth)
                arrival_depth[t] = depth
            hbt.clear_last_trades(asset_no)
            depth = hbt.depth(asset_no)
            best_bid_tick = depth.best_bid_tick
            best_ask_tick = depth.best_ask_tick
            prev_mid_price_tick = mid_price_tick
            mid_price_tick = (best_bid_tick + best_ask_tick) / 2.0
            mid_price_chg[t] = mid_price_tick - prev_mid_price_tick
            if t % 50 == 0 and t >= window - 1:  # recalibrate every 5 s over the window
                tmp[:] = 0
                lambda_ = measure_trading_intensity(arrival_depth[t + 1 - window : t + 1], tmp)
                if len(lambda_) > 2:
                    lambda_ = lambda_[:70] / (window / 10)
                    x = ticks[: len(lambda_)]
                    y = np.log(lambda_)
                    k_, log_a = linear_regression(x, y)
                    a = np.exp(log_a)
                    k = -k_
                volatility = np.nanstd(mid_price_chg[t + 1 - window : t + 1]) * np.sqrt(10)
            c1, c2 = compute_coeff(gamma, gamma, delta, a, k)
            half_spread_tick = (c1 + delta / 2 * c2 * volatility) * adj1
            skew = c2 * volatility * adj2
            position = hbt.position(asset_no) / order_qty  # in quote sizes, as in the example's unit qty
            reservation_price_tick = mid_price_tick - skew * position
            bid_price_tick = min(np.round(reservation_price_tick - half_spread_tick), best_bid_tick)
            ask_price_tick = max(np.round(reservation_price_tick + half_spread_tick), best_ask_tick)
            bid_price = bid_price_tick * tick_size
            ask_price = ask_price_tick * tick_size
            hbt.clear_inactive_orders(asset_no)
            orders = hbt.orders(asset_no)
            new_bid_id = np.uint64(bid_price_tick) if np.isfinite(bid_price_tick) else np.uint64(0)
            new_ask_id = np.uint64(ask_price_tick) if np.isfinite(ask_price_tick) else np.uint64(0)
            values = orders.values()
            while values.has_next():
                order = values.get()
                if order.cancellable:
                    if (order.side == 1 and order.order_id != new_bid_id) or (
                        order.side == -1 and order.order_id != new_ask_id
                    ):
                        hbt.cancel(asset_no, order.order_id, False)
            if np.isfinite(bid_price) and hbt.position(asset_no) < max_position and new_bid_id not in orders:
                hbt.submit_buy_order(asset_no, new_bid_id, bid_price, order_qty, GTX, LIMIT, False)
            if np.isfinite(ask_price) and hbt.position(asset_no) > -max_position and new_ask_id not in orders:
                hbt.submit_sell_order(asset_no, new_ask_id, ask_price, order_qty, GTX, LIMIT, False)
            t += 1
            if t % 10 == 0:
                recorder.record(hbt)  # once a second, like extmm's sampler
        steps_out[0] = t
        return True

    return glft_market_maker


def run_hftbacktest(
    events: NDArray[Any],
    *,
    tick: float,
    lot: float,
    order_qty: float,
    max_position: float,
    latency_ms: float,
    maker_fee: float,
    taker_fee: float,
    window: int,
) -> dict[str, Any]:
    from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest, Recorder

    strategy = glft_example()

    def build(data: NDArray[Any]) -> Any:
        asset = (
            BacktestAsset()
            .data([data])
            .linear_asset(1.0)
            .constant_order_latency(int(latency_ms * 1e6), int(latency_ms * 1e6))
            .risk_adverse_queue_model()
            .no_partial_fill_exchange()
            .trading_value_fee_model(maker_fee, taker_fee)
            .tick_size(tick)
            .lot_size(lot)
            .last_trades_capacity(10_000)
        )
        return HashMapMarketDepthBacktest([asset])

    steps = np.zeros(1, np.int64)
    # Numba compiles on the first call: a short warm-up keeps compilation out of the timed run.
    started = time.perf_counter()
    head = events[: min(len(events), 20_000)].copy()
    warm = build(head)
    strategy(
        warm, Recorder(1, 100_000).recorder, order_qty, max_position, window, int(head["local_ts"][-1]), steps
    )
    warm.close()
    compile_s = time.perf_counter() - started

    hbt = build(events)
    recorder = Recorder(1, 2_000_000)
    started = time.perf_counter()
    strategy(hbt, recorder.recorder, order_qty, max_position, window, int(events["local_ts"][-1]), steps)
    wall = time.perf_counter() - started
    hbt.close()
    rec = recorder.get(0)
    mid = rec["price"]
    position_usd = rec["position"] * mid
    equity = rec["balance"] + rec["position"] * mid - rec["fee"]
    ok = np.isfinite(equity)
    return {
        "wall_seconds": round(wall, 3),
        "jit_compile_seconds": round(compile_s, 3),
        "rows": len(events),
        "rows_per_s": round(len(events) / wall, 1),
        "steps": int(steps[0]),
        "trades": int(rec["num_trades"][-1]) if len(rec) else 0,
        "pnl": {
            "net": float(equity[ok][-1]) if ok.any() else None,
            "fees": float(-rec["fee"][-1]) if len(rec) else None,
        },
        "inventory_usd": _spread(position_usd),
        "quoting_from_s": window / 10,
    }


def _spread(values: NDArray[Any]) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"std": math.nan, "min": math.nan, "max": math.nan, "mean_abs": math.nan}
    return {
        "std": round(float(np.std(values)), 3),
        "min": round(float(values.min()), 3),
        "max": round(float(values.max()), 3),
        "mean_abs": round(float(np.abs(values).mean()), 3),
    }


# -- extmm ---------------------------------------------------------------------------------------------


def run_extmm(
    path: Path,
    market: str,
    *,
    a: float,
    k: float,
    quote_usd: float,
    limit_usd: float,
    latency_ms: float,
    gamma: float,
) -> dict[str, Any]:
    from loguru import logger

    from extmm.config import parse_config
    from extmm.research.backtest.options import BacktestOptions
    from extmm.research.backtest.run import backtest

    logger.remove()
    cfg = parse_config(
        {
            "risk": {"max_net_position_usd": limit_usd, "max_open_orders": 10, "min_balance_usd": 50},
            "markets": [
                {
                    "name": market,
                    "quote_notional_cap_usd": quote_usd,
                    "replace_threshold_bps": 1,
                    "model": {"type": "glft", "gamma": gamma, "A": a, "k": k},
                }
            ],
        }
    )
    started = time.perf_counter()
    result = backtest(cfg, BacktestOptions(hours=100.0, replay=(path,), order_latency_ms=latency_ms))
    wall = time.perf_counter() - started
    line = result.to_json(wall_seconds=wall)
    positions = np.array([s.position_usd for s in result.samples if s.market == market])
    return {
        "wall_seconds": round(wall, 3),
        "market_events": line["market_events"],
        "market_events_per_s": line["market_events_per_s"],
        "market_events_by_kind": line["events_by_kind"],
        "messages": line["messages"],
        "messages_per_s": line["messages_per_s"],
        "orders_sent": line["orders_sent"],
        "trades": line["fills"],
        "pnl": line["pnl"],
        "inventory_usd": _spread(positions),
        "fills_by_reason": line.get("fills_by_reason"),
        "model": {"type": "glft", "gamma": gamma, "A": a, "k": k},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--market", default="BTC-USD")
    parser.add_argument("--minutes", type=float, default=60.0, help="synthetic data length (default 60)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--latency-ms", type=float, default=10.0, help="order latency, both engines (default 10)"
    )
    parser.add_argument("--quote-usd", type=float, default=50.0, help="quote size, USD (default 50)")
    parser.add_argument("--limit-usd", type=float, default=200.0, help="position limit, USD (default 200)")
    parser.add_argument("--gamma", type=float, default=0.002, help="extmm glft risk aversion (default 0.002)")
    parser.add_argument(
        "--window-minutes",
        type=float,
        default=10.0,
        help="hftbacktest example's calibration window (default 10, as in the tutorial)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the recording here")
    args = parser.parse_args(argv)
    try:
        import hftbacktest
    except ImportError as exc:
        print(json.dumps({"skipped": f"hftbacktest is not installed ({exc}); pip install hftbacktest"}))
        return 0

    from loguru import logger

    from extmm.domain.calibration import observe_records
    from extmm.markets import bundled_markets, spec_from_market
    from extmm.research.record import record_synthetic
    from extmm.sim.recording import read_recording

    logger.remove()
    workdir = Path(tempfile.mkdtemp(prefix="extmm-vs-hbt-"))
    path = args.keep or workdir / "synthetic.ndjson.gz"
    started = time.perf_counter()
    _, engine = record_synthetic(
        path,
        markets=[args.market],
        seconds=args.minutes * 60,
        seed=args.seed,
        kinds=("orderbook", "trades", "funding", "mark"),
    )
    generate_s = time.perf_counter() - started
    truth = engine.flow_params(args.market)
    reader = read_recording([path])
    spec = spec_from_market(bundled_markets()[args.market])
    cal = observe_records(reader, {args.market: spec})[args.market].calibrate()

    started = time.perf_counter()
    events, counts = to_hftbacktest_events(path, args.market)
    convert_s = time.perf_counter() - started
    mid = cal.mid or truth.initial_mid
    order_qty = max(round(args.quote_usd / mid / float(spec.lot_size)), 1) * float(spec.lot_size)
    hbt = run_hftbacktest(
        events,
        tick=float(spec.tick_size),
        lot=float(spec.lot_size),
        order_qty=order_qty,
        max_position=args.limit_usd / mid,
        latency_ms=args.latency_ms,
        maker_fee=0.0,
        taker_fee=0.00025,
        window=int(args.window_minutes * 600),
    )
    if cal.A is None or cal.k is None:
        print(json.dumps({"error": "the recording is too short to fit A and k; raise --minutes"}))
        return 1
    ours = run_extmm(
        path,
        args.market,
        a=cal.A,
        k=cal.k,
        quote_usd=args.quote_usd,
        limit_usd=args.limit_usd,
        latency_ms=args.latency_ms,
        gamma=args.gamma,
    )
    # One definition for both engines: the data set's level updates and prints per wall second.
    data_events = counts["level_updates"] + counts["prints"]
    for engine in (hbt, ours):
        engine["events"] = data_events
        engine["events_per_s"] = round(data_events / engine["wall_seconds"], 1)
    ours["rows_per_s"] = round(counts["rows"] / ours["wall_seconds"], 1)
    received = ours["market_events_by_kind"].get("book_levels", 0)
    check = {
        "level_updates_in_data": counts["level_updates"],
        "level_updates_extmm_actors_received": received,
        "agree": received == counts["level_updates"],
    }
    print(
        json.dumps(
            {
                "data": {
                    "market": args.market,
                    "minutes": args.minutes,
                    "seed": args.seed,
                    "recording": str(path),
                    "generate_seconds": round(generate_s, 3),
                    "convert_seconds": round(convert_s, 3),
                    **counts,
                    "truth": {"sigma": truth.sigma, "A": truth.taker_rate, "k": truth.k},
                    "calibrated": {"sigma": cal.sigma, "A": cal.A, "k": cal.k},
                    "order_qty": order_qty,
                    "max_position": args.limit_usd / mid,
                },
                "hftbacktest": {"version": hftbacktest.__version__, **hbt},
                "extmm": ours,
                "events_check": check,
                "note": "events = the data set's L2 level updates + trade prints (hftbacktest's unit), per "
                "each engine's wall second; extmm's market_events = what its actors received (level "
                "updates, mark, funding); messages = stream messages through its actor tree",
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
