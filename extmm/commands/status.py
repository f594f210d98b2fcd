"""`python -m extmm status`: the state of a running bot, read from its `/healthz` endpoint.

Prints a few readable lines (health, readiness, breaker, dead man's switch, per-market
state) or, with `--json`, the endpoint's JSON as is. Exit 0 when healthy, 1 when the bot
answers but is unhealthy, 2 when it cannot be reached or does not answer like `/healthz`
(see `extmm.ops.metrics.health_payload` for the shape).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

import httpx

from extmm.argtypes import positive_float

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_UNREACHABLE = 2
# extmm.ops.metrics DEFAULT_HOST/DEFAULT_PORT, spelled out: importing the server for two constants
# would load starlette, hypercorn and prometheus into every `python -m extmm` start.
DEFAULT_URL = "http://127.0.0.1:9464"
DEFAULT_TIMEOUT_S = 3.0


class Unreachable(Exception):
    """No usable `/healthz` answer: connection refused, timeout, or not the expected JSON."""


def healthz_url(url: str) -> str:
    """`http://host:port` (or an URL already ending in /healthz) → the /healthz URL."""
    url = url.rstrip("/")
    return url if url.endswith("/healthz") else f"{url}/healthz"


def fetch_health(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of `/healthz`; raises Unreachable."""
    target = healthz_url(url)
    try:
        response = httpx.get(target, timeout=timeout_s, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise Unreachable(f"{target}: {type(exc).__name__}: {exc}") from None
    if response.status_code not in (200, 503):
        raise Unreachable(f"{target}: HTTP {response.status_code} (is this an extmm metrics port?)")
    try:
        body = response.json()
    except ValueError:
        raise Unreachable(f"{target}: the answer is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("healthy"), bool):
        raise Unreachable(f"{target}: the answer has no 'healthy' flag")
    return response.status_code, body


def is_healthy(status_code: int, body: dict[str, Any]) -> bool:
    return status_code == 200 and body.get("healthy") is True


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def render(status_code: int, body: dict[str, Any]) -> list[str]:
    """Readable lines for one `/healthz` answer; unknown or missing fields show as '?'."""
    healthy = is_healthy(status_code, body)
    head = "HEALTHY" if healthy else "UNHEALTHY"
    ready = "ready" if body.get("ready") else "not ready"
    network = body.get("network")
    where = f" on {network}" if network else ""
    uptime = f", up {_duration(body['uptime_s'])}" if "uptime_s" in body else ""
    lines = [f"extmm{where}: {head}, {ready}{uptime}"]
    if body.get("reason"):
        lines.append(f"reason: {body['reason']}")
    breaker = body.get("breaker")
    if isinstance(breaker, dict):
        trips = breaker.get("trips", 0)
        line = f"breaker: {breaker.get('state', '?')}, {trips} trip{'s' if trips != 1 else ''}"
        if breaker.get("last_reason"):
            line += f" (last: {breaker['last_reason']})"
        lines.append(line)
    dms = body.get("dms")
    if isinstance(dms, dict):
        if dms.get("armed"):
            remaining = dms.get("remaining_s")
            left = f", {remaining:.0f}s left" if isinstance(remaining, int | float) else ""
            lines.append(f"dead man's switch: armed{left}")
        else:
            lines.append("dead man's switch: not armed")
    markets = body.get("markets")
    if isinstance(markets, dict) and markets:
        lines.append("markets:")
        width = max(len(str(name)) for name in markets)
        for name, market in markets.items():
            if not isinstance(market, dict):
                lines.append(f"  {name}: ?")
                continue
            book = "book stale" if market.get("book_stale") else "book fresh"
            orders = market.get("open_orders", "?")
            line = (f"  {name:<{width}}  {market.get('state', '?'):<8}  {book}  "
                    f"{orders} open order{'s' if orders != 1 else ''}")
            if "position" in market:
                line += f"  position {market['position']}  pnl {market.get('pnl_net', '?')}"
            lines.append(line)
    pnl = body.get("pnl")
    if isinstance(pnl, dict):
        lifetime = pnl.get("lifetime")
        lines.append(f"pnl: session {pnl.get('session', '?')}, lifetime "
                     + (str(lifetime) if lifetime is not None else "unknown (no journal)"))
    journal = body.get("journal")
    if isinstance(journal, dict):
        state = f"DEGRADED: {journal.get('degraded')}" if journal.get("degraded") else "ok"
        lines.append(f"journal: {state}, {journal.get('written', '?')} rows written, "
                     f"{journal.get('dropped', '?')} dropped, {journal.get('pending', '?')} pending")
    return lines


def last_fills(path: str | None, count: int = 5) -> list[str]:
    """The last fills from the journal (read-only), or one line saying why there are none."""
    from extmm.journal.report import history
    from extmm.journal.schema import JournalError, default_path, open_journal

    target = path or str(default_path())
    try:
        conn = open_journal(target, readonly=True)
    except JournalError as exc:
        return [f"last fills: unknown ({exc})"]
    with conn:
        rows = history(conn, "fills", limit=count)
    if not rows:
        return ["last fills: none journaled"]
    return ["last fills:"] + [
        f"  {r['time']}  {r['market']}  {r['side']} {r['qty']} @ {r['price']}  fee {r['fee']} {r['liquidity']}"
        for r in rows
    ]


def main(
    url: str = DEFAULT_URL,
    *,
    as_json: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    out: TextIO | None = None,
    err: TextIO | None = None,
    journal: str | None = None,
    show_fills: bool = False,
) -> int:
    """Print the bot's status; returns the exit code (0 healthy, 1 unhealthy, 2 unreachable)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        status_code, body = fetch_health(url, timeout_s=timeout_s)
    except Unreachable as exc:
        print(f"status: cannot read the bot's health: {exc}", file=err)
        return EXIT_UNREACHABLE
    if as_json:
        print(json.dumps(body, indent=2, sort_keys=True), file=out)
    else:
        for line in render(status_code, body) + (last_fills(journal) if show_fills else []):
            print(line, file=out)
    return EXIT_HEALTHY if is_healthy(status_code, body) else EXIT_UNHEALTHY


def handle(args: argparse.Namespace) -> int:
    return main(args.url, as_json=args.json, timeout_s=args.timeout, journal=args.journal, show_fills=True)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show the state of a running bot (from its /healthz endpoint)",
        description=(
            "Read a running bot's /healthz endpoint and print its state. Exit 0 when healthy, "
            "1 when unhealthy, 2 when it cannot be reached."
        ),
    )
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"the bot's metrics address (default {DEFAULT_URL})"
    )
    parser.add_argument("--json", action="store_true", help="print the /healthz JSON as is")
    parser.add_argument("--journal", default=None, metavar="PATH",
                        help="journal to read the last fills from (default $XDG_STATE_HOME/extmm/journal.db)")
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long to wait for an answer (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.set_defaults(handler=handle)
