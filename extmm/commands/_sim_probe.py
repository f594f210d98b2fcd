"""`python -m extmm sim probe`: the simulator in latency-probe mode (`extmm.sim.probe`).

Used by `python -m extmm bench latency`, which starts it in its own process. Prints one
JSON line with the URLs, the probe's control URL, the probe markets and the paper
credentials, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
from functools import partial
from typing import Any

import trio

from extmm.argtypes import (
    log_level,
    non_negative_float,
    output_file_str,
    port_number,
    positive_float,
    positive_int,
)


def register(modes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = modes.add_parser(
        "probe",
        help="latency-probe mode (used by `bench latency`)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--markets", type=positive_int, default=4, help="probe markets P1-USD… (default 4)")
    parser.add_argument("--rate", type=positive_float, default=50.0, help="mid moves per second per market (default 50)")
    parser.add_argument("--step-ticks", type=positive_int, default=6, help="grid spacing in ticks (default 6)")
    parser.add_argument("--levels", type=positive_int, default=50, help="a cycle rises 2·levels steps and back (default 50)")
    parser.add_argument("--settle", type=non_negative_float, default=0.3, help="seconds of steady quotes to calibrate (default 0.3)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=0, help="TCP port; 0 picks a free one (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-verify", action="store_true", help="accept orders without checking signatures")
    parser.add_argument("--profile", type=output_file_str, default=None, metavar="FILE", help="cProfile the simulator into FILE")
    parser.add_argument("--log-level", type=log_level, default="WARNING", help="log level on stderr (default WARNING)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from loguru import logger

    from extmm.sim.probe import probe_market_names
    from extmm.sim.probe_track import ProbeSettings
    from extmm.sim.signing import STARK_EC_ORDER

    try:
        settings = ProbeSettings(
            rate_hz=args.rate, step_ticks=args.step_ticks, levels=args.levels, settle_s=args.settle
        )
        probe_market_names(args.markets)
    except ValueError as exc:
        print(f"sim probe: {exc}", file=sys.stderr)
        return 2
    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    options: dict[str, Any] = dict(
        markets=args.markets,
        settings=settings,
        host=args.host,
        port=args.port,
        seed=args.seed,
        verify_signatures=not args.no_verify,
        api_key=secrets.token_hex(16),
        private_key=secrets.randbelow(STARK_EC_ORDER - 1) + 1,
    )
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        trio.run(partial(_serve_until_signal, **options))
    except KeyboardInterrupt:
        pass
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    return 0


async def _serve_until_signal(**options: Any) -> None:
    from extmm.ops.gctune import settle_heap
    from extmm.sim.probe_server import ProbeHandle, serve_probe_simulator

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            handle: ProbeHandle = await nursery.start(partial(serve_probe_simulator, **options))
            settle_heap()  # as the bot does: full collections skip what start-up built
            print(json.dumps(handle.announcement()), flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
