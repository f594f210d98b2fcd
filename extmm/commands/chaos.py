"""`python -m extmm chaos`: fire drills — the bot against the simulator, one fault pattern
at a time, with the invariants checked continuously.

One JSON line per scenario on stdout (`scenario`, `passed`, `orphan_orders`,
`duplicate_orders`, `position_drift`, `max_net_notional_usd`, `limit_usd`, `restarts`,
`breaker_trips`, `crashes`, then details); exit 1 if any invariant broke. Every scenario
but `process_kill` runs in virtual time, so `--duration` is simulated seconds there; for
`process_kill` it is the restarted bot's wall-clock run.
"""

from __future__ import annotations

import argparse
import json
import sys

from extmm.argtypes import log_level, positive_float
from extmm.commands import load_config_or_report

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from extmm.research.chaos.scenarios import SCENARIOS

    lines = "\n".join(f"  {s.name:<17} {s.summary.splitlines()[0] if s.summary else ''}" for s in SCENARIOS.values())
    parser = subparsers.add_parser(
        "chaos",
        help="fire drills: run the bot against the simulator under faults and check invariants",
        description=__doc__ + "\nScenarios:\n" + lines,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenario", required=True, choices=[*SCENARIOS, "all"], metavar="NAME|all",
                        help="which drill (see above), or all of them in turn")
    parser.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS",
                        help="fault injection time per scenario (default: the scenario's own)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulator and the fault schedule")
    parser.add_argument("--flow", default="default", choices=("default", "toxic"),
                        help="synthetic flow preset of the virtual scenarios (default: default; toxic: informed "
                        "takers, sweeps, jumps, volatility regimes, clustered arrivals)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="bot config for the virtual scenarios (default: the built-in drill config; "
                        "its markets must be bundled ones)")
    parser.add_argument("--log-level", type=log_level, default="CRITICAL",
                        help="bot log level on stderr (default CRITICAL: faults make the bot log a lot)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from extmm.ops.logs import configure_logging
    from extmm.research.chaos.process import ProcessKillTimings, run_process_kill_sync
    from extmm.research.chaos.runner import run_scenario
    from extmm.research.chaos.scenarios import SCENARIOS

    if args.duration is not None and not args.duration > 0:
        print("chaos: --duration must be a positive number of seconds", file=sys.stderr)
        return EXIT_USAGE
    cfg = None
    if args.config is not None:
        cfg = load_config_or_report(args.config)
        if cfg is None:
            return EXIT_USAGE
        from extmm.markets import bundled_markets

        known = sorted(bundled_markets())
        unknown = [m.name for m in cfg.enabled_markets if m.name not in known]
        if unknown:
            print(f"chaos: unknown market {', '.join(unknown)}; the simulator has: {', '.join(known)}",
                  file=sys.stderr)
            return EXIT_USAGE
    configure_logging(level=args.log_level)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    broken = False
    for name in names:
        scenario = SCENARIOS[name]
        if scenario.kind == "process":
            timings = ProcessKillTimings()
            if args.duration is not None:
                timings = ProcessKillTimings(restart_run_s=args.duration)
            result = run_process_kill_sync(seed=args.seed, timings=timings)
        else:
            result = run_scenario(name, duration_s=args.duration, seed=args.seed, cfg=cfg, flow=args.flow)
        broken |= not result.passed
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
        sys.stdout.flush()
    return EXIT_BROKEN if broken else EXIT_OK
