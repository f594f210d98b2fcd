"""Render the live panel of a real two-market paper session to SVG (docs/dashboard.svg).

    python scripts/snapshot_panel.py --seconds 45 --out docs/dashboard.svg

Runs the main job on paper (embedded simulator, real sockets) in this process, renders
the panel after `--seconds`, then shuts the session down cleanly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import trio
from rich.console import Console

from extmm.config import load_config
from extmm.ops.dashboard_render import render
from extmm.ops.logs import configure_logging
from extmm.ops.secrets import load_secrets
from extmm.runtime.app import RunOptions, run_bot


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/config.json")
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.svg"))
    args = parser.parse_args()
    buffer = configure_logging(level="WARNING")
    cfg = load_config(args.config)
    stop = trio.Event()

    async def session() -> None:
        async with trio.open_nursery() as nursery:

            async def snapshot(root) -> None:
                await trio.sleep(args.seconds)
                console = Console(record=True, width=args.width, force_terminal=True)
                console.print(render(root.status()))
                args.out.parent.mkdir(parents=True, exist_ok=True)
                console.save_svg(str(args.out), title="extmm — paper session")
                stop.set()

            opts = RunOptions(network="paper", dashboard=False, metrics_port=None, seed=args.seed, watchdog=False)
            await run_bot(cfg, opts, load_secrets(read_env_file=False), warnings=buffer.lines,
                          on_ready=lambda root: nursery.start_soon(snapshot, root), stop=stop)

    trio.run(session)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
