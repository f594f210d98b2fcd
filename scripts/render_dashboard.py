#!/usr/bin/env python3
"""Render the live dashboard for an example two-market status (BTC-USD quoting, ETH-USD
halted) to SVG, for the README; optionally time the renderer.

    python scripts/render_dashboard.py --out docs/dashboard.svg [--width 100] [--bench 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rich.console import Console

from extmm.ops.dashboard import prerender
from extmm.ops.dashboard_render import render
from extmm.ops.status import AppStatus, example_status


def bench(status: AppStatus, *, width: int, frames: int) -> None:
    """Time one dashboard frame: the layout (done in a worker thread by run_dashboard)
    and the replay of the laid-out lines (what stays in the trio thread)."""
    with open(os.devnull, "w") as devnull:
        console = Console(width=width, force_terminal=True, color_system="truecolor", file=devnull)
        started = time.perf_counter()
        for _ in range(frames):
            lines = prerender(status, console)
        layout_ms = (time.perf_counter() - started) / frames * 1000
        started = time.perf_counter()
        for _ in range(frames):
            console.print(lines)
        replay_ms = (time.perf_counter() - started) / frames * 1000
    print(f"width {width}, {frames} frames: layout {layout_ms:.2f} ms/frame, replay {replay_ms:.2f} ms/frame")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.svg"), help="SVG file to write")
    parser.add_argument("--width", type=int, default=100, help="terminal columns (default 100)")
    parser.add_argument(
        "--bench", type=int, default=0, metavar="N", help="also time N frames and print the cost"
    )
    args = parser.parse_args(argv)

    status = example_status()
    console = Console(
        record=True, width=args.width, force_terminal=True, color_system="truecolor", file=sys.stderr
    )
    console.print(render(status))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    console.save_svg(str(args.out), title="extmm — paper trading")
    print(f"wrote {args.out}")

    if args.bench > 0:
        bench(status, width=args.width, frames=args.bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
