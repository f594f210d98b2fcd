"""A small L2 book for reading recordings: Extended SNAPSHOT/DELTA frames in integer ticks and lots.

Pure (no I/O, no clock). Unlike the bot's `extmm.domain.book.Book` it reports which
levels each frame changed and answers "how much rests at this price", which the replay's
queue model and the calibration need; sequence numbers are the caller's business.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from extmm.domain.units import MarketSpec

# Plain decimal text read without Decimal (`_Units`): ≤ 18 digits either side, so exact.
_PLAIN = re.compile(r"-?[0-9]{1,18}(?:\.[0-9]{1,18})?").fullmatch


class BadFrame(ValueError):
    """A book frame or print that cannot be read (missing key, off-grid or non-numeric value)."""


class _Units(dict[str, int]):
    """Decimal string → integer units of `step`, cached (the same strings recur in every frame)."""

    __slots__ = ("_decimals", "_step", "_what")

    def __init__(self, step: Decimal, what: str) -> None:
        super().__init__()
        self._step = step
        self._what = what
        # A step of 10**-n (n ≥ 0): a plain decimal text with at most n decimals is read
        # as an integer, the same value as the Decimal division below, without it.
        sign, digits, exponent = step.normalize().as_tuple()
        plain = not sign and digits == (1,) and isinstance(exponent, int) and exponent <= 0
        self._decimals = -exponent if plain else -1  # type: ignore[operator]

    def __missing__(self, text: Any) -> int:
        decimals = self._decimals
        count: int | None = None
        if decimals >= 0 and type(text) is str and _PLAIN(text):
            whole, _, fraction = text.partition(".")
            if len(fraction) <= decimals:
                count = int(whole + fraction.ljust(decimals, "0"))
        if count is None:
            try:
                units = Decimal(text) / self._step
            except (InvalidOperation, TypeError, ValueError):
                raise BadFrame(f"{self._what}: not a number: {text!r}") from None
            if units != units.to_integral_value():
                raise BadFrame(f"{self._what} {text} is not a multiple of {self._step}")
            count = int(units)
        if len(self) > 1 << 16:
            self.clear()
        self[text] = count
        return count


class L2Book:
    """Both sides of one market as {ticks: lots}; `valid` until a frame could not be applied."""

    def __init__(self, spec: MarketSpec) -> None:
        self.spec = spec
        self.tick = float(spec.tick_size)
        self.lot = float(spec.lot_size)
        self.ticks = _Units(spec.tick_size, f"{spec.name} price")
        self.lots = _Units(spec.lot_size, f"{spec.name} qty")
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self._best_bid: int | None = None
        self._best_ask: int | None = None
        self.valid = False

    # -- frames -------------------------------------------------------------------------
    def apply(self, frame_type: str | None, data: Mapping[str, Any]) -> list[tuple[bool, int, int]]:
        """Apply a SNAPSHOT or DELTA; returns the changed levels as (is_bid, ticks, lots after).

        A snapshot reports every level it holds. Raises BadFrame (and invalidates) on bad
        content; a DELTA on an invalid book is ignored (returns [])."""
        kind = frame_type or data.get("t")
        try:
            if kind == "SNAPSHOT":
                return self._snapshot(data)
            if kind == "DELTA":
                return self._delta(data) if self.valid else []
        except BadFrame:
            self.invalidate()
            raise
        except (KeyError, TypeError, AttributeError) as exc:
            self.invalidate()
            raise BadFrame(f"{self.spec.name} {kind}: {exc!r}") from None
        raise BadFrame(f"{self.spec.name}: unknown book frame type {kind!r}")

    def _snapshot(self, data: Mapping[str, Any]) -> list[tuple[bool, int, int]]:
        ticks, lots = self.ticks, self.lots
        bids = {ticks[lv["p"]]: lots[lv.get("q", lv.get("c"))] for lv in data["b"]}
        asks = {ticks[lv["p"]]: lots[lv.get("q", lv.get("c"))] for lv in data["a"]}
        self.bids = {t: q for t, q in bids.items() if q > 0}
        self.asks = {t: q for t, q in asks.items() if q > 0}
        self._best_bid = max(self.bids) if self.bids else None
        self._best_ask = min(self.asks) if self.asks else None
        self.valid = True
        return [(True, t, q) for t, q in self.bids.items()] + [(False, t, q) for t, q in self.asks.items()]

    def _delta(self, data: Mapping[str, Any]) -> list[tuple[bool, int, int]]:
        changed: list[tuple[bool, int, int]] = []
        ticks, lots = self.ticks, self.lots
        for is_bid, levels in ((True, data["b"]), (False, data["a"])):
            if not levels:
                continue
            side = self.bids if is_bid else self.asks
            best = self._best_bid if is_bid else self._best_ask
            for lv in levels:
                tick = ticks[lv["p"]]
                absolute = lv.get("c")
                size = lots[absolute] if absolute is not None else side.get(tick, 0) + lots[lv["q"]]
                if size > 0:
                    side[tick] = size
                    if best is None or (tick > best if is_bid else tick < best):
                        best = tick
                else:
                    size = 0
                    if side.pop(tick, None) is not None and tick == best:
                        best = _next_best(side, tick, is_bid)
                changed.append((is_bid, tick, size))
            if is_bid:
                self._best_bid = best
            else:
                self._best_ask = best
        return changed

    def invalidate(self) -> None:
        self.bids, self.asks = {}, {}
        self._best_bid = self._best_ask = None
        self.valid = False

    # -- reads ---------------------------------------------------------------------------
    @property
    def best_bid(self) -> int | None:
        return self._best_bid

    @property
    def best_ask(self) -> int | None:
        return self._best_ask

    @property
    def mid(self) -> float | None:
        """Mid price (float) of a valid, uncrossed two-sided book, else None."""
        bid, ask = self._best_bid, self._best_ask
        if not self.valid or bid is None or ask is None or bid >= ask:
            return None
        return (bid + ask) * 0.5 * self.tick

    def lots_at(self, is_bid: bool, ticks: int) -> int:
        return (self.bids if is_bid else self.asks).get(ticks, 0)

    def snapshot_data(self) -> dict[str, Any]:
        """The book as the `data` of an Extended SNAPSHOT frame (best first)."""
        spec = self.spec

        def side(levels: Iterable[tuple[int, int]]) -> list[dict[str, str]]:
            return [{"p": str(spec.ticks_to_price(t)), "q": str(spec.lots_to_qty(q))} for t, q in levels]

        return {
            "t": "SNAPSHOT",
            "m": spec.name,
            "b": side(sorted(self.bids.items(), reverse=True)),
            "a": side(sorted(self.asks.items())),
            "d": "f",
        }


def _next_best(side: dict[int, int], removed: int, is_bid: bool) -> int | None:
    """The best level left after the best one (`removed`) went: looked for tick by tick
    next to it first (books are dense near the touch), else the max/min over the side."""
    if not side:
        return None
    step = -1 if is_bid else 1
    tick = removed + step
    for _ in range(64):
        if tick in side:
            return tick
        tick += step
    return max(side) if is_bid else min(side)


def parse_prints(
    data: Any, spec: MarketSpec, ticks: _Units, lots: _Units
) -> list[tuple[bool, int, int, int]]:
    """Public trades `[{S, p, q, T, ...}]` → (taker is buy, ticks, lots, ts ms); BadFrame if unreadable."""
    if not isinstance(data, list):
        raise BadFrame(f"{spec.name} trades: expected a list, got {type(data).__name__}")
    out: list[tuple[bool, int, int, int]] = []
    try:
        for trade in data:
            side = trade["S"]
            if side not in ("BUY", "SELL"):
                raise BadFrame(f"{spec.name} trade side {side!r}")
            out.append((side == "BUY", ticks[trade["p"]], lots[trade["q"]], int(trade.get("T") or 0)))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BadFrame):
            raise
        raise BadFrame(f"{spec.name} trades: {exc!r}") from None
    return out
