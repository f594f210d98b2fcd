"""Stream reconnects per market and topic, for the exit summary and Prometheus.

A reconnect is a connection of ours that ended other than by our own shutdown and was
opened again: a failure (closed, dead, sequence gap) or a resync the Book asked for.
Topics: `orderbook`, `trades`, `funding`, `mark` and `account` (the shared account
stream, one connection for every market, so its count appears under each market). A
quiet session shows zeros everywhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

TOPICS = ("orderbook", "trades", "funding", "mark", "account")


class StreamReconnects:
    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def record(self, market: str, topic: str) -> None:
        self._counts[(market, topic)] += 1

    def recorder(self, market: str) -> Callable[[str], None]:
        """`record` bound to one market (what a Feed is handed)."""
        return lambda topic: self.record(market, topic)

    def snapshot(self, markets: Iterable[str], *, account: int = 0) -> dict[str, dict[str, int]]:
        """`{market: {topic: n}}` over every topic, zeros included; `account` is the shared
        account stream's count."""
        out = {}
        for market in markets:
            row = {topic: self._counts[(market, topic)] for topic in TOPICS if topic != "account"}
            row["account"] = account
            out[market] = row
        return out
