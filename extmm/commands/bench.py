"""`python -m extmm bench NAME ...`: offline benchmarks, one module each under `extmm.research.bench`.

Discovered like the commands themselves: every `extmm/research/bench/*.py` exposes
`register(subparsers)` and sets `handler` on its parser.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import extmm.research.bench


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("bench", help="run an offline benchmark", description=__doc__)
    benches = parser.add_subparsers(dest="bench", metavar="NAME")
    for info in sorted(pkgutil.iter_modules(extmm.research.bench.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"extmm.research.bench.{info.name}").register(benches)
    parser.set_defaults(handler=lambda args: _no_bench(parser))


def _no_bench(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
