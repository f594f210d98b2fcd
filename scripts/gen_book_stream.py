#!/usr/bin/env python3
"""Write a realistic stream-v1 order-book recording (one envelope per line, SPEC §5.3).

Shape: a full-depth SNAPSHOT first (seq 1) and again about every 600 frames (~1,500 levels a
side, `q` only, some prices in non-canonical form such as "84050.000000"), DELTAs of 0–8 levels
in between carrying signed `q` and absolute `c` (removals `c: "0"`), a random-walking mid, one
frame every 100 ms, seq continuous. Feeds `python -m extmm bench book`.

    python scripts/gen_book_stream.py --out /tmp/book.jsonl --frames 100000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from decimal import Decimal

from extmm.markets import bundled_markets, bundled_spec

LEVELS_PER_SIDE = 1500
FILL_RATIO = 0.6  # share of ticks that hold a level in the initial book
SNAPSHOT_EVERY = 600
DELTA_MAX_LEVELS = 8
FRAME_MS = 100


class _Generator:
    def __init__(self, market: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.spec = bundled_spec(market)
        stats = bundled_markets()[market].get("marketStats", {})
        start_price = Decimal(stats.get("bidPrice") or stats.get("lastPrice") or "1000")
        self.market = market
        # Bids at ticks <= mid_tick, asks at ticks > mid_tick.
        self.mid_tick = self.spec.price_to_ticks(start_price)
        self.fair = float(self.mid_tick) + 0.5
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.seq = 0
        self.ts = 1_790_000_000_000
        span = int(LEVELS_PER_SIDE / FILL_RATIO)
        for k in range(span):
            if k < 3 or self.rng.random() < FILL_RATIO:
                self.bids[self.mid_tick - k] = self._size(k)
            if k < 3 or self.rng.random() < FILL_RATIO:
                self.asks[self.mid_tick + 1 + k] = self._size(k)
        self._price_cache: dict[int, str] = {}
        self._qty_cache: dict[int, str] = {}

    # -- formatting ---------------------------------------------------------------------
    def _price(self, ticks: int) -> str:
        text = self._price_cache.get(ticks)
        if text is None:
            text = self._price_cache[ticks] = str(self.spec.ticks_to_price(ticks))
        return text

    def _noncanonical_price(self, ticks: int) -> str:
        text = self._price(ticks)
        suffix = (
            self.rng.choice((".0", ".00", ".000000")) if "." not in text else self.rng.choice(("0", "000"))
        )
        return text + suffix

    def _qty(self, lots: int) -> str:
        text = self._qty_cache.get(lots)
        if text is None:
            text = str(self.spec.lots_to_qty(lots))
            if len(self._qty_cache) < 200_000:
                self._qty_cache[lots] = text
        return text

    def _size(self, depth: int) -> int:
        # Log-normal sizes, larger away from the touch; a few tiny resting orders.
        lots = int(self.rng.lognormvariate(0, 1.2) * (2_000 + 40 * depth))
        if self.rng.random() < 0.1:
            lots = self.rng.randint(1, 500)
        return max(lots, 1)

    # -- frames -------------------------------------------------------------------------
    def _envelope(self, kind: str, bids: list[dict[str, str]], asks: list[dict[str, str]]) -> str:
        self.seq += 1
        self.ts += FRAME_MS + self.rng.randint(-3, 3)
        data = {"t": kind, "m": self.market, "b": bids, "a": asks, "d": "f"}
        return json.dumps({"type": kind, "data": data, "ts": self.ts, "seq": self.seq}, separators=(",", ":"))

    def snapshot(self) -> str:
        def levels(side: dict[int, int], reverse: bool) -> list[dict[str, str]]:
            out = []
            for ticks in sorted(side, reverse=reverse):
                price = self._noncanonical_price(ticks) if self.rng.random() < 0.02 else self._price(ticks)
                out.append({"q": self._qty(side[ticks]), "p": price})
            return out

        return self._envelope("SNAPSHOT", levels(self.bids, True), levels(self.asks, False))

    def _change(self, side: dict[int, int], ticks: int, new_lots: int) -> dict[str, str]:
        old = side.get(ticks, 0)
        if new_lots > 0:
            side[ticks] = new_lots
        else:
            side.pop(ticks, None)
        return {
            "q": self._qty(new_lots - old),
            "p": self._price(ticks),
            "c": self._qty(new_lots) if new_lots else "0",
        }

    def delta(self) -> str:
        rng = self.rng
        changes: dict[tuple[str, int], int] = {}  # one change per level per frame
        budget = rng.choice((0, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 7, 8)) if rng.random() > 0.05 else 0

        # Random walk of the fair price; the mid tick follows, clearing levels it crosses.
        self.fair += rng.gauss(0.0, 0.35)
        target = int(self.fair // 1)
        if target != self.mid_tick and budget >= 2:
            step = 1 if target > self.mid_tick else -1
            self.mid_tick += step
            if step > 0:
                if self.mid_tick in self.asks:
                    changes[("a", self.mid_tick)] = 0
                changes[("b", self.mid_tick)] = self._size(0)
            else:
                if self.mid_tick + 1 in self.bids:
                    changes[("b", self.mid_tick + 1)] = 0
                changes[("a", self.mid_tick + 1)] = self._size(0)

        while len(changes) < budget:
            is_bid = rng.random() < 0.5
            distance = min(int(rng.expovariate(1 / 6.0)), 400)
            ticks = self.mid_tick - distance if is_bid else self.mid_tick + 1 + distance
            side = self.bids if is_bid else self.asks
            key = ("b" if is_bid else "a", ticks)
            if key in changes:
                continue
            if ticks in side:
                roll = rng.random()
                if roll < 0.3 and len(side) > 50:
                    changes[key] = 0
                elif roll < 0.65:
                    changes[key] = side[ticks] + rng.randint(1, 3_000)
                else:
                    changes[key] = max(side[ticks] - rng.randint(1, 3_000), 1)
            else:
                changes[key] = self._size(distance)

        bids = [self._change(self.bids, t, lots) for (s, t), lots in changes.items() if s == "b"]
        asks = [self._change(self.asks, t, lots) for (s, t), lots in changes.items() if s == "a"]
        # A new level appears with c = q; a removal sends c = "0" and q = minus the old size.
        return self._envelope("DELTA", bids, asks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output file (JSON lines)")
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--market", default="BTC-USD")
    args = parser.parse_args(argv)
    gen = _Generator(args.market, args.seed)
    next_snapshot = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for index in range(args.frames):
            if index == next_snapshot:
                line = gen.snapshot()
                next_snapshot = index + gen.rng.randint(SNAPSHOT_EVERY - 60, SNAPSHOT_EVERY + 60)
            else:
                line = gen.delta()
            out.write(line)
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
