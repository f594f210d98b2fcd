"""Startup gate: which markets have a valid order book within a deadline.

Before the root starts a market's actors it opens that market's book stream and applies
frames to a fresh `extmm.domain.book.Book` (the Book actor's own code) until the book is
two-sided and valid, for every market at once, for at most `timeout_s`. A market that
gets there is ready; one that does not is reported with the last thing seen (no frame at
all, a malformed frame such as prices off the tick grid, a one-sided book, the stream
failing). Without this gate the startup waited for every market for ever: the Feed's
first-snapshot timeout restarts it, more slowly than the restart intensity escalates.
The caller decides what a missing market means (`on_missing_book`: leave it out, or fail).
"""

from __future__ import annotations

from collections.abc import Mapping

import trio
from loguru import logger

from extmm.domain.book import Book, MalformedBookFrame
from extmm.domain.units import MarketSpec
from extmm.venue.errors import RECOVERABLE_STREAM_ERRORS as RECOVERABLE
from extmm.venue.port import ExchangePort


async def wait_for_books(
    port: ExchangePort,
    specs: Mapping[str, MarketSpec],
    *,
    timeout_s: float,
    retry_s: float = 1.0,
) -> dict[str, str]:
    """Markets whose book did not become valid within `timeout_s`, each with why (empty: all ready)."""
    why: dict[str, str] = {name: "no order book frame received" for name in specs}
    ready: set[str] = set()

    async def probe(name: str, spec: MarketSpec) -> None:
        while True:
            book = Book(spec)
            try:
                async with port.orderbook_stream(name) as stream:
                    while True:
                        msg = await stream.receive()
                        try:
                            book.apply(msg.data, None, msg.type)
                        except MalformedBookFrame as exc:
                            why[name] = f"unusable book frame: {exc}"
                            continue
                        if book.valid and book.best_bid() is not None and book.best_ask() is not None:
                            ready.add(name)
                            return
                        if book.valid:
                            why[name] = "the book is one-sided"
            except RECOVERABLE as exc:
                why[name] = f"book stream failed: {type(exc).__name__}: {exc}"
                logger.warning("{}: book stream failed while waiting for the first book: {}", name, exc)
            await trio.sleep(retry_s)

    with trio.move_on_after(timeout_s):
        async with trio.open_nursery() as nursery:
            for name, spec in specs.items():
                nursery.start_soon(probe, name, spec)
    return {name: text for name, text in why.items() if name not in ready}
