"""`python -m extmm backtest`: the production bot against the simulator in virtual time.

Runs the real actor tree and supervisors against the in-process simulator under trio's
MockClock, so hours of market time pass in seconds: on the simulator's synthetic flow
(seeded), or replaying a recording (`--replay FILE`, from `python -m extmm record`) with a
queue-position fill model and configurable latencies. Prints ONE JSON line:

    {"virtual_seconds", "wall_seconds", "events", "events_per_s", "market_events",
     "market_events_per_s", "messages", "messages_per_s", "orders_sent", "fills",
     "pnl": {"spread", "inventory", "fees", "funding", "net"}, "max_abs_inventory_usd",
     "limit_usd", "sharpe", "fill_ratio", ...}

events (= market_events): market data delivered through the port to the actors, counted
as backtesting engines count it (hftbacktest: one event per L2 level update and one per
trade print): every price level of every book SNAPSHOT/DELTA frame the Book receives,
plus public trade prints (only when a market's model recalibrates online, the one user of
the trades stream), mark price and funding rate updates; events_by_kind splits them.
messages: stream messages delivered to the actors — book frames (Feed → Book), funding,
mark and trades frames, account-stream updates (once per account-stream connection
opened through the port); messages_by_kind splits them.
*_per_s: per wall-clock second of the run. sharpe: of the per-minute changes of net PnL,
annualised (×√525600). fill_ratio: fills / orders sent.
With `--out DIR`: fills.csv, quotes.png, inventory.png, pnl.png (plots need matplotlib).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from extmm.argtypes import log_level, non_negative_float, output_dir, positive_float
from extmm.commands import load_config_or_report

DEFAULT_CONFIG = "config/config.json"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "backtest",
        help="run the bot against the simulator (synthetic flow or a replayed recording) in virtual time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"bot config (default {DEFAULT_CONFIG})")
    p.add_argument(
        "--markets",
        default=None,
        help="comma separated subset of the config's enabled markets (default: all of them)",
    )
    p.add_argument(
        "--hours",
        type=positive_float,
        default=1.0,
        help="virtual hours to run (default 1; a replay also stops at the end of its data)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic flow and the bot's jitter")
    p.add_argument("--flow", default="default", choices=("default", "toxic"),
                   help="synthetic mode: the simulator's flow preset (default: default; toxic: informed flow)")
    p.add_argument(
        "--out",
        type=output_dir,
        default=None,
        metavar="DIR",
        help="write fills.csv, summary.json and PNG plots here",
    )
    p.add_argument(
        "--replay",
        type=Path,  # missing recordings: "no such recording", exit 2, from the handler
        nargs="+",
        default=None,
        metavar="FILE",
        help="replay these recordings instead of the synthetic flow (rotated parts are found on their own)",
    )
    p.add_argument(
        "--order-latency-ms",
        type=non_negative_float,
        default=20.0,
        help="delay of every order action on its way to the matching engine (default 20)",
    )
    p.add_argument(
        "--feed-latency-ms",
        type=_feed_latency,
        default=50.0,
        help="deliver market data this long after it happened (default 50); replay only: "
        "'recorded' = at the recorded receive time",
    )
    p.add_argument(
        "--book-timeout-s",
        type=positive_float,
        default=None,
        help="a market without a valid order book this long after startup is left out or fails "
        "the run (default: the config's book_ready_timeout_s, 60)",
    )
    p.add_argument(
        "--missing-book",
        choices=("skip", "fail"),
        default="skip",
        help="a market without a valid book: leave it out and run the others (default) or fail",
    )
    p.add_argument("--sample-s", type=positive_float, default=1.0, help="virtual seconds between samples (default 1)")
    p.add_argument(
        "--book-interval-ms",
        type=non_negative_float,
        default=100.0,
        help="book frame cadence of the venue (default 100, as Extended): the simulator pushes at it; "
        "a replay merges the recorded book deltas of each window into one frame (0: every recorded frame)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--log-level", type=log_level, default="ERROR", help="bot log level on stderr (default ERROR)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from decimal import Decimal

    import extmm.ops.logs as logs
    from extmm.research.backtest.metrics import write_fills_csv
    from extmm.research.backtest.options import BacktestOptions
    from extmm.research.backtest.run import backtest

    cfg = load_config_or_report(args.config)
    if cfg is None:
        return 2
    if args.markets:
        import attrs

        wanted = [m.strip() for m in args.markets.split(",") if m.strip()]
        enabled = {m.name for m in cfg.enabled_markets}
        unknown = [m for m in wanted if m not in enabled]
        if unknown or not wanted:
            print(
                f"backtest: --markets: not enabled in {args.config}: {', '.join(unknown) or '(none given)'}",
                file=sys.stderr,
            )
            return 2
        cfg = attrs.evolve(cfg, markets=[m for m in cfg.markets if m.name in wanted])
    if args.feed_latency_ms is None and not args.replay:
        print("backtest: --feed-latency-ms recorded needs --replay", file=sys.stderr)
        return 2
    if args.book_timeout_s is not None and args.book_timeout_s <= 0:
        print("backtest: --book-timeout-s must be > 0", file=sys.stderr)
        return 2
    if args.book_interval_ms == 0 and args.replay:
        args.book_interval_ms = 0.0
    elif args.book_interval_ms <= 0:
        print("backtest: --book-interval-ms must be > 0 (0: replays only)", file=sys.stderr)
        return 2
    if args.hours <= 0 or args.sample_s <= 0 or args.order_latency_ms < 0:
        print(
            "backtest: --hours and --sample-s must be > 0, latencies ≥ 0", file=sys.stderr
        )
        return 2
    replay: tuple[Path, ...] = ()
    if args.replay:
        from extmm.sim.recording import RecordingError, expand_parts

        try:
            replay = tuple(expand_parts(args.replay))
        except RecordingError as exc:
            print(f"backtest: --replay: {exc}", file=sys.stderr)
            return 2
    logs.configure_logging(level=args.log_level)
    opts = BacktestOptions(
        hours=args.hours,
        seed=args.seed,
        flow=args.flow,
        sample_s=args.sample_s,
        replay=replay,
        order_latency_ms=args.order_latency_ms,
        feed_latency_ms=args.feed_latency_ms,
        book_interval_s=args.book_interval_ms / 1000.0,
        balance_usd=Decimal(100_000),
        journal_path=_fresh_journal(args.out) if args.out is not None else None,
        book_ready_timeout_s=args.book_timeout_s,
        on_missing_book=args.missing_book,
    )
    started = time.perf_counter()  # wall time is measured here, at the edge, for the report only
    try:
        result = backtest(cfg, opts)
    except Exception as exc:
        known = _known_failures(exc)
        if not known:
            raise
        for problem in known:  # one clear line per problem instead of a traceback
            print(f"backtest: {problem}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - started
    for market, why in result.details.get("markets_left_out", {}).items():
        print(f"backtest: market {market} left out: {why}", file=sys.stderr)
    for market, why in result.details.get("replay_book_errors", {}).items():
        print(f"backtest: replay {market}: a recorded book frame could not be applied ({why}); its book was "
              "invalid, and nothing quoted, until the recording's next snapshot", file=sys.stderr)
    line = result.to_json(wall_seconds=wall)
    if args.out is not None:
        out: Path = args.out
        out.mkdir(parents=True, exist_ok=True)
        write_fills_csv(result.fills, out / "fills.csv", t0=result.started_at, markouts=result.markouts)
        written = ["fills.csv", "summary.json"]
        if not args.no_plots:
            from extmm.research.backtest.plots import PlotsUnavailable, write_plots

            try:
                paths = write_plots(
                    out,
                    result.samples,
                    result.fills,
                    result.markets,
                    t0=result.started_at,
                    limit_usd=result.limit_usd,
                )
                written += [p.name for p in paths]
            except PlotsUnavailable as exc:
                print(f"backtest: {exc}; plots skipped", file=sys.stderr)
        line["out"] = {"dir": str(out), "files": written}
        (out / "summary.json").write_text(json.dumps(line, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    return 0


def _feed_latency(text: str) -> float | None:
    if text.strip().lower() == "recorded":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of ms or 'recorded': {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be ≥ 0")
    return value


def _known_failures(exc: BaseException) -> list[str]:
    """Messages of the expected failures (bad recording, bot cannot start) inside `exc`, else []."""
    from extmm.research.backtest.options import BacktestError
    from extmm.sim.recording import RecordingError
    from supervisors.root import StartupError

    leaves = list(exc.exceptions) if isinstance(exc, BaseExceptionGroup) else [exc]
    out: list[str] = []
    while leaves:
        leaf = leaves.pop(0)
        if isinstance(leaf, BaseExceptionGroup):
            leaves.extend(leaf.exceptions)
        elif isinstance(leaf, BacktestError | RecordingError | StartupError):
            out.append(str(leaf))
        else:
            return []
    return out


def _fresh_journal(out: Path) -> Path:
    """The backtest's journal in its output folder (the same schema as a live one), new each run."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "journal.db"
    for stale in (path, out / "journal.db-wal", out / "journal.db-shm"):
        stale.unlink(missing_ok=True)
    return path
