"""`python -m extmm sim`: run the Extended-compatible simulator on a socket until Ctrl-C.

The first line on stdout is one JSON object with the REST and stream URLs and the paper
credentials of the built-in account, so a script can start it and read where to connect:

    {"rest": "http://127.0.0.1:PORT/api/v1",
     "stream": "ws://127.0.0.1:PORT/stream.extended.exchange/v1",
     "account": {"api_key": ..., "vault": ..., "stark_private_key": "0x...", "stark_public_key": "0x..."}}

The key pair is fresh per run unless given. It is a paper key for a simulator, printed on
purpose; never pass a real venue key here. Fault knobs: see `extmm.sim.faults`.

`python -m extmm sim probe [...]` runs it in latency-probe mode instead (see
`extmm.commands._sim_probe`; used by `python -m extmm bench latency`).
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

import trio

from extmm.argtypes import log_level, non_negative_int, port_number
from extmm.commands import _sim_probe
from extmm.markets import bundled_markets
from extmm.sim.faults import FaultSpecError, parse_faults
from extmm.sim.ratebudget import DEFAULT_IP_RATE_LIMIT_PER_MIN
from extmm.sim.signing import STARK_EC_ORDER


def _fee_rate(text: str) -> Decimal:
    try:
        rate = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected a fee rate such as 0.0002, got {text!r}") from None
    if not rate.is_finite() or abs(rate) > Decimal("0.01"):
        raise argparse.ArgumentTypeError(f"expected a fee rate between -0.01 and 0.01, got {text!r}")
    return rate


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run the exchange simulator (REST + WebSocket) on a local socket",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=0, help="TCP port; 0 picks a free one (default)")
    parser.add_argument("--markets", default=None, help="comma separated market names (default: all bundled)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic flow and faults (default 0)"
    )
    parser.add_argument(
        "--faults",
        default=None,
        help="fault knobs, e.g. latency=200ms,http429=0.2,ws_drop_every=5s (see extmm.sim.faults)",
    )
    parser.add_argument("--api-key", default=None, help="API key of the built-in account (default: random)")
    parser.add_argument("--vault", type=non_negative_int, default=None, help="vault (position id) of the built-in account")
    parser.add_argument(
        "--stark-private-key",
        default=None,
        help="0x-hex Stark private key of the built-in account (default: fresh)",
    )
    parser.add_argument(
        "--balance", default="10000", help="starting collateral of the built-in account, USD (default 10000)"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="accept orders without checking their Stark signature"
    )
    parser.add_argument(
        "--strict-nonce",
        action="store_true",
        help="reject nonces outside [1, 2^31] as DOC26 states (the SDK's own nonces may exceed it)",
    )
    parser.add_argument(
        "--flow", default="default", choices=("default", "toxic"),
        help="synthetic flow preset (default: default; toxic: informed takers, sweeps, jumps, volatility "
        "regimes, clustered arrivals; see extmm.sim.flow.FLOW_PRESETS)",
    )
    parser.add_argument(
        "--log-level", type=log_level, default="WARNING", help="simulator log level on stderr (default WARNING)"
    )
    parser.add_argument(
        "--maker-fee", type=_fee_rate, default=None, metavar="RATE",
        help="maker fee rate of the built-in account, e.g. 0 or -0.0001 for a rebate (default 0)",
    )
    parser.add_argument(
        "--taker-fee", type=_fee_rate, default=None, metavar="RATE",
        help="taker fee rate of the built-in account (default 0.00025)",
    )
    parser.add_argument(
        "--ip-rate-limit-per-min", type=non_negative_int, default=DEFAULT_IP_RATE_LIMIT_PER_MIN, metavar="N",
        help="REST requests per minute per client address, shared by every key; over it HTTP 429 "
        f"(default {DEFAULT_IP_RATE_LIMIT_PER_MIN}, the venue's default tier; 0 = unlimited)",
    )
    parser.set_defaults(handler=run)
    modes = parser.add_subparsers(dest="sim_mode", metavar="MODE")
    _sim_probe.register(modes)


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
    bundled = bundled_markets()
    unknown = [m for m in markets or () if m not in bundled]
    if unknown:
        print(
            f"sim: --markets: unknown {', '.join(unknown)}; bundled: {', '.join(sorted(bundled))}",
            file=sys.stderr,
        )
        return 2
    # Fresh paper credentials per run (the engine's own default derives them from the seed).
    api_key = args.api_key or secrets.token_hex(16)
    if private_key is None:
        private_key = secrets.randbelow(STARK_EC_ORDER - 1) + 1

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    exit_code = 0
    try:
        exit_code = trio.run(
            partial(
                _main,
                host=args.host,
                port=args.port,
                markets=markets,
                seed=args.seed,
                flow=args.flow,
                faults=faults,
                api_key=api_key,
                vault=args.vault,
                private_key=private_key,
                balance=balance,
                verify_signatures=not args.no_verify,
                strict_nonce=args.strict_nonce,
                maker_fee=args.maker_fee,
                taker_fee=args.taker_fee,
                ip_rate_limit_per_min=args.ip_rate_limit_per_min or None,
            )
        )
    except* KeyboardInterrupt:
        exit_code = 0
    except* OSError as group:  # e.g. the port is taken
        for err in _leaves(group):
            print(f"sim: cannot serve on {args.host}:{args.port}: {err}", file=sys.stderr)
        exit_code = 1
    return exit_code


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def _main(**options: Any) -> int:
    from extmm.ops.gctune import settle_heap
    from extmm.sim.server import serve_simulator

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(serve_simulator, **options))
            settle_heap()  # long-running: full collections skip what start-up built
            print(json.dumps(handle.announcement()), flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return 0
