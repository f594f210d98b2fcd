"""`python -m extmm [run]`: the main job (paper trading by default)."""

from __future__ import annotations

import argparse
import sys

import trio

from extmm.argtypes import log_level, port_number, positive_seconds
from extmm.commands import load_config_or_report

DEFAULT_CONFIG = "config/config.json"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.add_argument("--market-data", nargs="+", metavar="SOURCE", default=None,
                   help="paper mode on live market data: testnet, mainnet, or REST_URL STREAM_URL of any "
                   "compatible venue; books, trades, mark and funding come from its public side, orders "
                   "never leave the embedded simulator (no credentials)")
    p.add_argument("--confirm-mainnet", action="store_true",
                   help="required with --network mainnet: real money")
    p.add_argument("--duration", type=positive_seconds, default=None, metavar="SECONDS",
                   help="stop gracefully after this many seconds")
    p.add_argument("--no-dashboard", action="store_true", help="no live panel")
    p.add_argument("--metrics-port", type=port_number, default=9464,
                   help="Prometheus /metrics and /healthz on 127.0.0.1 (0 disables; default 9464)")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address for /metrics and /healthz (default 127.0.0.1; 0.0.0.0 inside Docker)")
    p.add_argument("--seed", type=int, default=None, help="paper mode: the simulator's random seed")
    p.add_argument("--flow", default="default", choices=("default", "toxic"),
                   help="paper mode: the simulator's flow preset (default: default; toxic: informed flow)")
    p.add_argument("--log-level", type=log_level, default="INFO",
                   help="stderr/JSON log level: TRACE, DEBUG, INFO, SUCCESS, WARNING, ERROR, CRITICAL "
                   "(default INFO)")
    p.add_argument("--log-json", default=None, metavar="FILE", help="also write JSON log lines to FILE")
    p.add_argument("--env-file", default=None, help="read secrets from this .env file (default ./.env)")
    p.add_argument("--allow-foreign-orders", action="store_true",
                   help="start even if the sub-account has open orders that are not ours (the dead man's "
                   "switch is account-wide and would cancel them too); default: refuse")
    p.add_argument("--journal", default=None, metavar="PATH",
                   help="trading journal (SQLite) file (default $XDG_STATE_HOME/extmm/journal.db, "
                   "else ~/.local/state/extmm/journal.db)")
    p.add_argument("--no-journal", action="store_true", help="keep no journal")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from extmm.ops.logs import configure_logging
    from extmm.ops.secrets import SecretsError, load_secrets
    from extmm.runtime.app import RunOptions, print_summary, run_bot, startup_error_of

    cfg = load_config_or_report(args.config)
    if cfg is None:
        return 2
    try:
        secrets = load_secrets(args.env_file)
    except (SecretsError, OSError) as exc:
        print(f"secrets error: {exc}", file=sys.stderr)
        return 2
    if not args.no_journal and args.journal is None and not ensure_default_journal_folder():
        return 2
    if not args.no_journal and not journal_usable(journal_path(args)):
        return 2

    if args.endpoint:
        network = "custom"
    else:
        network = args.network or "paper"
    if network == "paper" and args.market_data is None:
        # (with --market-data the markets come from that venue's /info/markets, checked at startup)
        from extmm.markets import bundled_markets

        known = sorted(bundled_markets())
        unknown = [m.name for m in cfg.enabled_markets if m.name not in known]
        if unknown:
            print(f"unknown market {', '.join(unknown)}; the paper simulator has: {', '.join(known)}",
                  file=sys.stderr)
            return 2
    try:
        buffer = configure_logging(level=args.log_level, json_file=args.log_json)
    except OSError as exc:
        print(f"cannot write the JSON log {args.log_json}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if network == "mainnet" and not args.confirm_mainnet:
        print("refusing to trade on mainnet without --confirm-mainnet (real money)", file=sys.stderr)
        return 2
    if network != "paper":
        missing = secrets.missing()
        if missing:
            print(f"{network} needs credentials; missing: {', '.join(missing)} "
                  "(set them in the environment or .env, see .env.example)", file=sys.stderr)
            return 2
    market_data = None
    if args.market_data is not None:
        if network != "paper":
            print("--market-data is a paper mode: it does not go with --network testnet/mainnet or --endpoint",
                  file=sys.stderr)
            return 2
        market_data = _market_data_source(args.market_data)
        if market_data is None:
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
        allow_foreign_orders=args.allow_foreign_orders,
        market_data=market_data,
        journal=journal_path(args),
        flow=args.flow,
    )
    try:
        summary = trio.run(lambda: run_bot(cfg, opts, secrets, warnings=buffer.lines))
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        # An operator mistake found before anything was sent (StartupError): one line, exit 2.
        startup = startup_error_of(exc)
        if startup is not None:
            print(f"startup failed: {startup}", file=sys.stderr)
            return 2
        if not isinstance(exc, Exception):
            raise
        # A failure no supervisor could mend (a policy gave up): the root stopped quoting and
        # cancelled before it got here; its log lines say what the venue confirmed and
        # whether the dead man's switch was left armed. The traceback goes to the log.
        from loguru import logger

        logger.opt(exception=exc).critical("the bot stopped on a failure its supervisors could not mend")
        print(f"stopped on a failure: {type(exc).__name__}: {exc}; the log says what was cancelled and "
              "whether the dead man's switch is still armed", file=sys.stderr)
        return 1
    print_summary(summary)
    # Unknown is a state: exit 0 only when the venue confirmed none of ours open and the
    # dead man's switch was disarmed; otherwise the summary says what was left armed.
    return 0 if summary.clean else 1


def _market_data_source(values: list[str]) -> tuple[str, str] | None:
    """`testnet` | `mainnet` | `REST_URL STREAM_URL` → (rest, stream); None after a one-line error."""
    from extmm.venue.endpoints import endpoint_for

    if len(values) == 1 and values[0] in ("testnet", "mainnet"):
        endpoint = endpoint_for(values[0])
        return endpoint.rest_url, endpoint.stream_url
    if len(values) == 2:
        rest, stream = values
        if rest.startswith(("http://", "https://")) and stream.startswith(("ws://", "wss://")):
            return rest.rstrip("/"), stream.rstrip("/")
    print("--market-data: expected testnet, mainnet, or REST_URL (http[s]://…) STREAM_URL (ws[s]://…), "
          f"got {' '.join(values)!r}", file=sys.stderr)
    return None


def journal_path(args: argparse.Namespace) -> str | None:
    from extmm.journal.schema import default_path

    if args.no_journal:
        return None
    return args.journal if args.journal is not None else str(default_path())


def ensure_default_journal_folder() -> bool:
    """The default folder is ours to create (systemd's StateDirectory= does it too)."""
    from extmm.journal.schema import default_path

    folder = default_path().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"journal folder {folder} cannot be created: {exc.strerror} (use --journal PATH or --no-journal)",
              file=sys.stderr)
        return False
    return True


def journal_usable(path: str | None) -> bool:
    """Refuse a bad journal (one line, exit 2) before anything is sent to the venue."""
    from pathlib import Path

    from extmm.journal.schema import JournalError, JournalLock, open_journal

    if path is None:
        return True
    try:
        lock = JournalLock(Path(path).expanduser())
        if not lock.path.parent.is_dir():
            raise JournalError(f"journal folder {lock.path.parent} does not exist "
                               "(create it, or pick another --journal)")
        lock.acquire()
        try:
            open_journal(path).close()
        finally:
            lock.release()
    except JournalError as exc:
        print(f"journal error: {exc}", file=sys.stderr)
        return False
    return True
