"""`python -m extmm sim`: run the Extended-compatible simulator on a socket until Ctrl-C.

The first line on stdout is one JSON object with the REST and stream URLs and the paper
credentials of the built-in account, so a script can start it and read where to connect:

    {"rest": "http://127.0.0.1:PORT/api/v1",
     "stream": "ws://127.0.0.1:PORT/stream.extended.exchange/v1",
     "account": {"api_key": ..., "vault": ..., "stark_private_key": "0x...", "stark_public_key": "0x..."}}

The key pair is fresh per run unless given. It is a paper key for a simulator, printed on
purpose; never pass a real venue key here. Fault knobs: see `extmm.sim.faults`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from decimal import Decimal, InvalidOperation
from functools import partial

import trio

from extmm.sim.faults import FaultSpecError, parse_faults


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run the exchange simulator (REST + WebSocket) on a local socket",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default)")
    parser.add_argument("--markets", default=None, help="comma separated market names (default: all bundled)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic flow and faults (default 0)")
    parser.add_argument(
        "--faults",
        default=None,
        help="fault knobs, e.g. latency=200ms,http429=0.2,ws_drop_every=5s (see extmm.sim.faults)",
    )
    parser.add_argument("--api-key", default=None, help="API key of the built-in account (default: random)")
    parser.add_argument("--vault", type=int, default=None, help="vault (position id) of the built-in account")
    parser.add_argument(
        "--stark-private-key", default=None, help="0x-hex Stark private key of the built-in account (default: fresh)"
    )
    parser.add_argument(
        "--balance", default="10000", help="starting collateral of the built-in account, USD (default 10000)"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="accept orders without checking their Stark signature"
    )
    parser.add_argument("--log-level", default="WARNING", help="simulator log level on stderr (default WARNING)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        faults = parse_faults(args.faults)
    except FaultSpecError as exc:
        print(f"sim: --faults: {exc}", file=sys.stderr)
        return 2
    try:
        balance = Decimal(args.balance)
    except InvalidOperation:
        print(f"sim: --balance: expected a number, got {args.balance!r}", file=sys.stderr)
        return 2
    private_key = None
    if args.stark_private_key is not None:
        try:
            private_key = int(args.stark_private_key, 16)
        except ValueError:
            print("sim: --stark-private-key: expected a 0x-prefixed hex number", file=sys.stderr)
            return 2
    markets = [m.strip() for m in args.markets.split(",") if m.strip()] if args.markets else None

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    try:
        return trio.run(
            partial(
                _main,
                host=args.host,
                port=args.port,
                markets=markets,
                seed=args.seed,
                faults=faults,
                api_key=args.api_key,
                vault=args.vault,
                private_key=private_key,
                balance=balance,
                verify_signatures=not args.no_verify,
            )
        )
    except KeyboardInterrupt:
        return 0
    except (ValueError, KeyError, OSError) as exc:
        print(f"sim: {exc}", file=sys.stderr)
        return 1


async def _main(**options) -> int:
    from extmm.sim.runner import serve_simulator

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(serve_simulator, **options))
            print(json.dumps(handle.announcement()), flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return 0
