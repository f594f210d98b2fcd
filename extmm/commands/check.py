"""`python -m extmm check`: validate a configuration before trading with it; sends nothing.

Exit 0 with a short summary, or exit 2 with one `key.path: problem` line per problem on
stderr. Checks run as a list of steps, so online ones (credentials, connectivity, market
existence, sizes against the venue's minimums) can be added behind a flag later.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import attrs

from extmm.config import BotConfig, ConfigError, MarketConfig, load_config

EXIT_OK = 0
EXIT_INVALID = 2
DEFAULT_CONFIG = Path("config/config.json")


@attrs.frozen(kw_only=True)
class CheckReport:
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def merge(self, other: CheckReport) -> CheckReport:
        return CheckReport(problems=self.problems + other.problems, notes=self.notes + other.notes)


# A step sees the loaded configuration and reports problems and notes; steps run in order.
CheckStep = Callable[[BotConfig], CheckReport]


def describe_market(market: MarketConfig) -> str:
    parts = [
        f"{market.name}: model {market.model.type}",
        f"base spread {market.base_spread * 10_000:g} bps",
        f"quote cap ${market.quote_notional_cap_usd:g}",
        f"replace threshold {market.replace_threshold_bps:g} bps",
        "post-only" if market.post_only else "may take",
    ]
    return ", ".join(parts)


def summarise(cfg: BotConfig) -> CheckReport:
    enabled = cfg.enabled_markets
    disabled = [m.name for m in cfg.markets if not m.enabled]
    notes = [f"markets enabled: {len(enabled)}" + (f" (disabled: {', '.join(disabled)})" if disabled else "")]
    notes += [f"  {describe_market(m)}" for m in enabled]
    notes.append(
        f"loop {cfg.quote_loop_ms} ms, replace coalesce {cfg.replace_coalesce_ms} ms, "
        f"dead man's switch {cfg.dead_mans_switch_sec} s, STP {cfg.stp}"
    )
    risk = cfg.risk
    notes.append(
        f"risk: net position ≤ ${risk.max_net_position_usd:g}, open orders ≤ {risk.max_open_orders} per market, "
        f"balance ≥ ${risk.min_balance_usd:g}"
    )
    return CheckReport(notes=tuple(notes))


OFFLINE_STEPS: tuple[CheckStep, ...] = (summarise,)


def run_checks(config_path: Path, steps: tuple[CheckStep, ...] = OFFLINE_STEPS) -> CheckReport:
    """Load the configuration, then run each step in order."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        return CheckReport(problems=tuple(exc.problems))
    report = CheckReport(notes=(f"{config_path}: configuration is valid",))
    for step in steps:
        report = report.merge(step(cfg))
    return report


def handle(args: argparse.Namespace) -> int:
    report = run_checks(Path(args.config))
    if not report.ok:
        for line in report.problems:
            print(line, file=sys.stderr)
        count = len(report.problems)
        print(f"{args.config}: {count} problem{'s' if count != 1 else ''}", file=sys.stderr)
        return EXIT_INVALID
    for line in report.notes:
        print(line)
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate a configuration file (offline; sends nothing)",
        description=(
            "Validate a configuration file and print a short summary. "
            "Exit status 0 if valid, 2 with one 'key.path: problem' line per problem otherwise."
        ),
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=str(DEFAULT_CONFIG),
        help=f"configuration file (default: {DEFAULT_CONFIG})",
    )
    parser.set_defaults(handler=handle)
