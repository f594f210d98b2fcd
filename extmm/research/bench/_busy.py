"""`bench replay --deep-updates-per-s N`: a recording made as busy as a busy market's raw feed.

A busy perpetual's raw depth feed (Binance `@depth@0ms`, a Tardis `incremental_book_L2`
export) carries on the order of a thousand level updates a second, and most of them change
sizes away from the touch (quotes placed, resized and pulled deep in the book); the
simulator's synthetic flow makes about a tenth of that. `add_deep_updates` adds about
`per_s` level updates a second to a one-market recording: changes arriving as a Poisson
process (seeded) at `per_s / 2` a second, each setting a level between `MIN_DEPTH` and
`MAX_DEPTH` levels from its side's touch to another size, and each undone within
`RESTORE_S`, or at once when the recorded touch comes within `MIN_DEPTH // 2` levels of it
(back to the level's size in the recorded book at that moment; nothing to undo when the
recorded book changed the level meanwhile). The recorded book itself is unchanged
wherever it matters: the touch, the levels near it, every trade; a replay of the result
sees the original market plus the extra feed traffic. Book frames are renumbered (`seq`).
"""

from __future__ import annotations

import bisect
import heapq
import random
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import orjson

MIN_DEPTH = 10  # levels from the touch: never the touch or the levels next to it
MAX_DEPTH = 200
RESTORE_S = 1.0


class _Side:
    """One side of the recorded book: sizes by price string, prices sorted (as Decimal)."""

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.sizes: dict[str, str] = {}
        self.prices: list[Decimal] = []  # ascending
        self.text: dict[Decimal, str] = {}

    def clear(self) -> None:
        self.sizes.clear()
        self.prices.clear()
        self.text.clear()

    def apply(self, level: dict[str, str], snapshot: bool) -> None:
        """A recorded level: SPEC §5.3 — a delta's `q` is the change and `c` (when given) the
        new size; a snapshot's `q` is the size."""
        price = level["p"]
        if snapshot or "c" in level:
            qty = Decimal(level["c"] if not snapshot and "c" in level else level["q"])
        else:
            qty = Decimal(self.sizes.get(price, "0")) + Decimal(level["q"])
        self.set(price, qty)

    def set(self, price: str, qty: Decimal) -> None:
        key = Decimal(price)
        known = key in self.text
        if qty <= 0:
            if known:
                del self.sizes[self.text.pop(key)]
                del self.prices[bisect.bisect_left(self.prices, key)]
            return
        if not known:
            bisect.insort(self.prices, key)
            self.text[key] = price
        self.sizes[self.text[key]] = str(qty)

    def depth(self, key: Decimal) -> int:
        """Levels between `key` and this side's touch (0: it is the touch)."""
        i = bisect.bisect_left(self.prices, key)
        return len(self.prices) - 1 - i if self.is_bid else i

    def deep_level(self, rng: random.Random) -> str | None:
        """A price `MIN_DEPTH`..`MAX_DEPTH` levels from the touch; None when the book is shallow."""
        n = len(self.prices)
        if n <= MIN_DEPTH:
            return None
        depth = rng.randint(MIN_DEPTH, min(MAX_DEPTH, n - 1))
        return self.text[self.prices[n - 1 - depth] if self.is_bid else self.prices[depth]]


def add_deep_updates(src: Path, dst: Path, *, market: str, per_s: float, seed: int = 7) -> int:
    """Write `src` with `per_s` extra deep level updates a second of `market` to `dst`;
    returns how many level updates were added."""
    from extmm.sim.recording import RecordingWriter, read_recording

    rng = random.Random(seed)
    reader = read_recording([src])
    writer = RecordingWriter(dst, header={k: v for k, v in reader.header.items() if k not in ("k", "v", "part")})
    book = {"b": _Side(True), "a": _Side(False)}
    restores: list[tuple[int, int, str, str]] = []  # (at ms, n, side, price)
    next_ms: float | None = None
    seq = 0
    added = 0
    n = 0

    def write_book(at: int, frame: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        writer.write_frame(at, "orderbook", market, orjson.dumps({**frame, "seq": seq}))

    shown: dict[tuple[str, str], Decimal] = {}  # size the replayed book has where we changed it
    changed: dict[str, list[tuple[Decimal, str]]] = {"b": [], "a": []}  # those levels, sorted

    def forget(side: str, price: str) -> Decimal | None:
        before = shown.pop((side, price), None)
        if before is not None:
            levels = changed[side]
            del levels[bisect.bisect_left(levels, (Decimal(price), price))]
        return before

    def delta(at: int, side: str, price: str, qty: Decimal) -> None:
        before = forget(side, price)
        if before is None:
            before = Decimal(book[side].sizes.get(price, "0"))
        level = {"q": str(qty - before), "p": price, "c": str(qty)}
        data = {"t": "DELTA", "m": market, "b": [], "a": [], side: [level]}
        write_book(at, {"type": "DELTA", "data": data, "ts": at})

    def inject_until(t: int) -> None:
        """The extra updates (and their undoing) due before the recorded frame at `t`."""
        nonlocal next_ms, added, n
        while True:
            due_restore = restores[0][0] if restores else None
            if next_ms is not None and next_ms <= t and (due_restore is None or next_ms <= due_restore):
                at = int(next_ms)
                next_ms += rng.expovariate(per_s / 2) * 1000.0
                side = "b" if rng.random() < 0.5 else "a"
                price = book[side].deep_level(rng)
                if price is None:
                    continue
                qty = Decimal(book[side].sizes[price]) * rng.choice((2, 3))
                delta(at, side, price, qty)
                shown[(side, price)] = qty
                bisect.insort(changed[side], (Decimal(price), price))
                n += 1
                heapq.heappush(restores, (at + int(rng.uniform(0.1, RESTORE_S) * 1000), n, side, price))
                added += 1
            elif due_restore is not None and due_restore <= t:
                at, _, side, price = heapq.heappop(restores)
                if (side, price) in shown:  # not overwritten by the recorded book meanwhile
                    delta(at, side, price, Decimal(book[side].sizes.get(price, "0")))
                    added += 1
            else:
                return

    def undo_near(at: int, levels: int) -> None:
        """Undo every change within `levels` levels of its side's touch now (the market
        moved towards it): the touch stays the recording's own."""
        nonlocal added
        for side in ("b", "a"):
            near = changed[side]
            while near:
                key, price = near[-1] if side == "b" else near[0]
                if book[side].depth(key) >= levels:
                    break
                delta(at, side, price, Decimal(book[side].sizes.get(price, "0")))
                added += 1

    try:
        for record in reader:
            kind, rec_market = cast(str, record.get("k")), record.get("m")
            if kind == "header":
                continue
            if kind == "open":
                writer.mark_open(record["t"], record["s"], cast(str, rec_market))
                continue
            frame = record.get("f")
            if not isinstance(frame, dict):
                continue
            t = int(record["t"])
            if rec_market == market:
                if next_ms is None:
                    next_ms = t + rng.expovariate(per_s / 2) * 1000.0
                inject_until(t)
                undo_near(t, MIN_DEPTH // 2)
            if kind == "orderbook" and rec_market == market:
                data = frame.get("data") or {}
                if frame.get("type") == "SNAPSHOT":
                    for side in book.values():
                        side.clear()
                snapshot = frame.get("type") == "SNAPSHOT"
                if snapshot:
                    shown.clear()
                    changed["b"].clear()
                    changed["a"].clear()
                out = dict(data)
                for key in ("b", "a"):
                    levels = []
                    for level in data.get(key) or []:
                        book[key].apply(level, snapshot)
                        if not snapshot and "c" not in level and (key, level["p"]) in shown:
                            # a change relative to the size we replaced: say the new size too
                            level = {**level, "c": book[key].sizes.get(level["p"], "0")}
                        forget(key, level["p"])
                        levels.append(level)
                    out[key] = levels
                write_book(t, {**{k: v for k, v in frame.items() if k != "seq"}, "data": out})
                undo_near(t, 1)  # a frame that moved the touch by many levels at once
                continue
            writer.write_frame(t, kind, cast(str, rec_market), orjson.dumps(frame))
        next_ms = None  # the data ended: no more changes, but every change is undone
        inject_until(2**62)
    finally:
        writer.close()
    return added
