"""Benchmarks: `python -m extmm bench NAME`. Each module exposes `register(subparsers)`."""
