"""`python -m extmm [run]`: the main job (paper trading by default)."""

from __future__ import annotations

import argparse
import sys

import trio

from extmm.commands import load_config_or_report

DEFAULT_CONFIG = "config/config.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="trade the enabled markets (default command; paper trading unless --network says otherwise)",
        description="Trade the enabled markets of the config. Without credentials or --network this "
        "paper-trades against the embedded Extended simulator on 127.0.0.1.",
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    p.add_argument("--network", choices=("paper", "testnet", "mainnet"), default=None,
                   help="where to trade (default: paper)")
    p.add_argument("--endpoint", nargs=2, metavar=("REST_URL", "STREAM_URL"),
                   help="any compatible venue, e.g. a separately started `python -m extmm sim`; "
                   "credentials come from the environment")
    p.add_argument("--confirm-mainnet", action="store_true",
                   help="required with --network mainnet: real money")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop gracefully after this many seconds")
    p.add_argument("--no-dashboard", action="store_true", help="no live panel")
    p.add_argument("--metrics-port", type=int, default=9464,
                   help="Prometheus /metrics and /healthz on 127.0.0.1 (0 disables; default 9464)")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address for /metrics and /healthz (default 127.0.0.1; 0.0.0.0 inside Docker)")
    p.add_argument("--seed", type=int, default=None, help="paper mode: the simulator's random seed")
    p.add_argument("--flow", default="default", choices=("default", "toxic"),
                   help="paper mode: the simulator's flow preset (default: default; toxic: informed flow)")
    p.add_argument("--log-level", default="INFO", help="stderr/JSON log level (default INFO)")
    p.add_argument("--log-json", default=None, metavar="FILE", help="also write JSON log lines to FILE")
    p.add_argument("--env-file", default=None, help="read secrets from this .env file (default ./.env)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from extmm.app import RunOptions, print_summary, run_bot
    from extmm.ops.logs import configure_logging
    from extmm.secrets import SecretsError, load_secrets
    from supervisors.root import StartupError

    cfg = load_config_or_report(args.config)
    if cfg is None:
        return 2
    try:
        secrets = load_secrets(args.env_file)
    except (SecretsError, OSError) as exc:
        print(f"secrets error: {exc}", file=sys.stderr)
        return 2
    buffer = configure_logging(level=args.log_level, json_file=args.log_json)

    if args.endpoint:
        network = "custom"
    else:
        network = args.network or "paper"
    if network == "mainnet" and not args.confirm_mainnet:
        print("refusing to trade on mainnet without --confirm-mainnet (real money)", file=sys.stderr)
        return 2
    if network != "paper":
        missing = secrets.missing()
        if missing:
            print(f"{network} needs credentials; missing: {', '.join(missing)} "
                  "(set them in the environment or .env, see .env.example)", file=sys.stderr)
            return 2
    opts = RunOptions(
        network=network,
        rest_url=args.endpoint[0] if args.endpoint else None,
        stream_url=args.endpoint[1] if args.endpoint else None,
        duration_s=args.duration,
        dashboard=not args.no_dashboard,
        metrics_port=args.metrics_port or None,
        metrics_host=args.metrics_host,
        seed=args.seed,
        flow=args.flow,
    )
    try:
        summary = trio.run(lambda: run_bot(cfg, opts, secrets, warnings=buffer.lines))
    except StartupError as exc:
        print(f"startup failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print_summary(summary)
    return 0
