"""`python -m extmm record`: record raw public market data to gzip NDJSON for replays and calibration.

    python -m extmm record --network testnet --markets BTC-USD,ETH-USD --out data/rec.ndjson.gz
    python -m extmm record --endpoint http://127.0.0.1:PORT/api/v1 ws://127.0.0.1:PORT/stream.extended.exchange/v1 \\
        --markets BTC-USD --out rec.ndjson.gz --duration 600

One WebSocket per market and kind (order book, public trades, funding, mark price);
every frame is stored byte for byte with its receive time, reconnecting with backoff.
Parts rotate at `--rotate-mb` of compressed output. Runs until Ctrl-C / SIGTERM or
`--duration`, then prints one JSON line: files, frames by kind, reconnects. The format
is described in `extmm/sim/recording.py`. Public data only: no credentials are needed or read.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from extmm.argtypes import log_level, non_negative_float, output_file, positive_float


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "record",
        help="record raw public market data (book, trades, funding, mark) to gzip NDJSON",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--network", choices=("testnet", "mainnet"), help="the venue to record")
    where.add_argument(
        "--endpoint",
        nargs=2,
        metavar=("REST_URL", "STREAM_URL"),
        help="any compatible venue, e.g. `python -m extmm sim`",
    )
    p.add_argument("--markets", required=True, help="comma separated market names, e.g. BTC-USD,ETH-USD")
    p.add_argument("--out", required=True, type=output_file, metavar="FILE", help="first part, e.g. rec.ndjson.gz")
    p.add_argument(
        "--rotate-mb",
        type=non_negative_float,
        default=256.0,
        help="start a new part after this many MB of compressed output (default 256; 0: never)",
    )
    p.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS", help="stop after this long")
    p.add_argument(
        "--kinds",
        default="orderbook,trades,funding,mark",
        help="streams to record (default orderbook,trades,funding,mark)",
    )
    p.add_argument("--log-level", type=log_level, default="WARNING", help="log level on stderr (default WARNING)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import extmm.ops.logs as logs
    from extmm.sim.recording import KINDS
    from extmm.venue.endpoints import endpoint_for

    markets = [m.strip() for m in args.markets.split(",") if m.strip()]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if not markets or not kinds or bad:
        print(
            f"record: need --markets and --kinds from {', '.join(KINDS)}"
            + (f" (unknown: {', '.join(bad)})" if bad else ""),
            file=sys.stderr,
        )
        return 2
    if args.rotate_mb < 0 or (args.duration is not None and args.duration <= 0):
        print("record: --rotate-mb must be ≥ 0 and --duration > 0", file=sys.stderr)
        return 2
    if args.endpoint:
        endpoint = endpoint_for("custom", rest_url=args.endpoint[0], stream_url=args.endpoint[1])
        source_name = "custom"
    else:
        endpoint = endpoint_for(args.network)
        source_name = args.network
    logs.configure_logging(level=args.log_level)
    try:
        stats = trio.run(
            lambda: record_main(
                rest_url=endpoint.rest_url,
                stream_url=endpoint.stream_url,
                markets=markets,
                out=args.out,
                rotate_bytes=int(args.rotate_mb * 1024 * 1024) or None,
                duration_s=args.duration,
                kinds=kinds,
                source_name=source_name,
                wall_clock_ms=lambda: time.time() * 1000.0,
                handle_signals=True,
            )
        )
    except RecordSetupError as exc:
        print(f"record: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(stats) + "\n")
    return 0


class RecordSetupError(Exception):
    """Recording cannot start (venue unreachable, unknown market)."""


def epoch_clock(wall_ms_at_start: float) -> Callable[[], int]:
    """Epoch ms from one wall-clock reading plus trio time elapsed since (MockClock-friendly)."""
    t0 = trio.current_time()
    return lambda: int(wall_ms_at_start + (trio.current_time() - t0) * 1000.0)


async def fetch_markets(rest_url: str, stream_url: str, markets: Sequence[str]) -> dict[str, Any]:
    from extmm.venue.errors import VenueError
    from extmm.venue.network import NetworkVenue

    try:
        async with NetworkVenue(rest_url, stream_url) as venue:
            infos = {m.name: m.raw for m in await venue.get_markets(list(markets))}
    except (VenueError, OSError) as exc:
        raise RecordSetupError(f"cannot read markets from {rest_url}: {exc}") from None
    missing = [m for m in markets if m not in infos]
    if missing:
        raise RecordSetupError(f"unknown market(s) on this venue: {', '.join(missing)}")
    return infos


async def record_main(
    *,
    rest_url: str,
    stream_url: str,
    markets: Sequence[str],
    out: Path,
    rotate_bytes: int | None,
    duration_s: float | None,
    kinds: Sequence[str],
    source_name: str,
    wall_clock_ms: Callable[[], float],
    handle_signals: bool = False,
    stop: trio.Event | None = None,
) -> dict[str, Any]:
    """Record from a venue's WebSockets; returns the summary printed by the command.

    `wall_clock_ms` is read once, here; receive times are that reading plus trio time."""
    from loguru import logger

    from extmm.research.record import WebSocketSource, record
    from extmm.sim.recording import RecordingWriter

    clock = epoch_clock(wall_clock_ms())
    raw_markets = await fetch_markets(rest_url, stream_url, markets)
    writer = RecordingWriter(
        out,
        header={
            "source": source_name,
            "rest": rest_url,
            "stream": stream_url,
            "start_ms": clock(),
            "kinds": list(kinds),
            "markets": raw_markets,
        },
        rotate_bytes=rotate_bytes,
    )
    stop = trio.Event() if stop is None else stop
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        if handle_signals:

            async def on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        logger.warning("received {}; closing the recording", signal.Signals(signum).name)
                        stop.set()
                        return

            nursery.start_soon(on_signal)
        stats = await record(
            WebSocketSource(stream_url),
            writer,
            markets=markets,
            epoch_ms=clock,
            kinds=kinds,
            duration_s=duration_s,
            stop=stop,
        )
        nursery.cancel_scope.cancel()
    return {
        "files": stats.files,
        "frames": dict(stats.frames),
        "bad_frames": stats.bad_frames,
        "reconnects": stats.reconnects,
        "seconds": round(trio.current_time() - started, 3),
    }
