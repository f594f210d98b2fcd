"""`python -m extmm calibrate --input FILE`: σ, A and k per market from a recording, as model configs.

Reads a recording of `python -m extmm record` (rotated parts included), replays each
market's book, and estimates (see `extmm.domain.calibration`):

- sigma: mid volatility in price units per √s (and sigma_rel, relative per √s);
- A, k: the fill intensity A·exp(−k·δ) of a resting order δ price units from the mid,
  from a log-linear fit of how often aggressors reached each depth (A per second per
  side, k per price unit).

Prints one JSON object with the estimates and, per market, `model` snippets for
`avellaneda_stoikov` and `glft` to paste into the market's config (`gamma` is your choice:
`--gamma`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from extmm.argtypes import existing_file, positive_float, positive_int


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="estimate sigma, A and k per market from a recording; print model config snippets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", required=True, type=existing_file, nargs="+", metavar="FILE", help="recording(s)")
    p.add_argument("--markets", default=None, help="comma separated markets (default: all recorded)")
    p.add_argument(
        "--interval-s", type=positive_float, default=1.0, help="mid sampling interval for sigma (default 1)"
    )
    p.add_argument(
        "--min-count",
        type=positive_int,
        default=10,
        help="fewest aggressors at or beyond a depth for it to enter the fit (default 10)",
    )
    p.add_argument(
        "--gamma", type=positive_float, default=0.002, help="risk aversion for the snippets (default 0.002)"
    )
    p.add_argument("--horizon-s", type=positive_float, default=60.0, help="avellaneda_stoikov horizon (default 60)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import extmm.ops.logs as logs
    from extmm.domain.calibration import model_snippets, observe_records
    from extmm.markets import spec_from_market
    from extmm.sim.recording import RecordingError, read_recording

    logs.configure_logging(level="WARNING")
    if args.interval_s <= 0 or args.min_count < 1 or args.gamma <= 0 or args.horizon_s <= 0:
        print(
            "calibrate: --interval-s, --gamma, --horizon-s must be > 0 and --min-count ≥ 1", file=sys.stderr
        )
        return 2
    try:
        reader = read_recording(args.input)
        names = [m.strip() for m in args.markets.split(",")] if args.markets else sorted(reader.markets)
        missing = [n for n in names if n not in reader.markets]
        if missing:
            print(
                f"calibrate: not in the recording: {', '.join(missing)} "
                f"(it has {', '.join(sorted(reader.markets))})",
                file=sys.stderr,
            )
            return 2
        specs = {n: spec_from_market(reader.markets[n]) for n in names}
        observers = observe_records(reader, specs)
    except RecordingError as exc:
        print(f"calibrate: {exc}", file=sys.stderr)
        return 1
    markets: dict[str, dict[str, Any]] = {}
    out: dict[str, object] = {"input": [str(p) for p in reader.paths], "markets": markets}
    for name in names:
        cal = observers[name].calibrate(interval_s=args.interval_s, min_count=args.min_count)
        fit = cal.fit
        entry: dict[str, Any] = {
            "sigma": cal.sigma,
            "sigma_rel": cal.sigma_rel,
            "A": None if fit is None else fit.A,
            "k": None if fit is None else fit.k,
            "mid": cal.mid,
            "duration_s": round(cal.duration_s, 3),
            "mid_samples": cal.mid_samples,
            "aggressors": len(observers[name].depths),
            "fit_points": None if fit is None else fit.points,
            "fit_r2": None if fit is None else round(fit.r2, 4),
            "bad_frames": observers[name].bad_frames,
            "model": model_snippets(cal, gamma=args.gamma, horizon_s=args.horizon_s),
        }
        if fit is None:
            entry["note"] = "too few aggressors beyond the touch to fit A and k; record longer"
        markets[name] = entry
    out["recording"] = {
        "lines": reader.stats.lines,
        "bad_lines": reader.stats.bad_lines,
        "truncated_parts": reader.stats.truncated_parts,
    }
    sys.stdout.write(json.dumps(out, indent=2) + "\n")
    return 0
