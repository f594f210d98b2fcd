"""L2 order book of one market in integer ticks and lots, fed by stream frames (SPEC §5.3, §6.4).

SNAPSHOT replaces both sides with absolute `q`; DELTA sets a level to `c` (0 deletes) and
falls back to `+= q` only when `c` is absent. Sequence numbers are checked: a gap, duplicate or
regression discards the book until the next snapshot, and `apply` says so (`BookGap`).
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Any

import attrs

from extmm.domain.units import MarketSpec, OffGridError

# Price and size strings repeat a lot (the same levels come back in every delta), so a
# string → units cache saves most conversions. Bounded: cleared when full.
_CACHE_LIMIT = 1 << 16


class MalformedBookFrame(ValueError):
    """A frame that cannot be applied: unknown type, wrong market, missing key, off-grid
    or non-numeric price/size, negative absolute size. The book is discarded (INVALID)
    because it no longer mirrors the venue; the caller logs, counts and resyncs."""


class BookState(enum.Enum):
    EMPTY = "empty"  # no snapshot yet
    VALID = "valid"
    INVALID = "invalid"  # discarded after a gap or a malformed frame; waiting for a snapshot


_VALID = BookState.VALID  # a module global: cheaper than the enum attribute on every frame


class GapReason(enum.Enum):
    NO_SNAPSHOT = "no_snapshot"  # a delta arrived before any snapshot
    SEQ_GAP = "seq_gap"  # seq was not last + 1 (gap, duplicate or regression)
    AWAITING_SNAPSHOT = "awaiting_snapshot"  # delta dropped: the book is already invalid


@attrs.frozen(kw_only=True)
class BookGap:
    """A delta that was not applied. `needs_resync` is true only on the frame that broke the
    book, so the caller asks for one resync, not one per dropped delta."""

    reason: GapReason
    expected_seq: int | None
    got_seq: int | None

    @property
    def needs_resync(self) -> bool:
        return self.reason is not GapReason.AWAITING_SNAPSHOT


@attrs.frozen(kw_only=True)
class BookTop:
    """Top of book after a frame; prices in ticks, sizes in lots, mid/microprice as float prices."""

    best_bid_ticks: int | None
    best_bid_lots: int | None
    best_ask_ticks: int | None
    best_ask_lots: int | None
    mid: float | None
    microprice: float | None
    valid: bool
    seq: int | None

    @property
    def spread_ticks(self) -> int | None:
        if self.best_bid_ticks is None or self.best_ask_ticks is None:
            return None
        return self.best_ask_ticks - self.best_bid_ticks


class _UnitCache(dict[str, int]):
    """Exact decimal string → integer units of `step`, as a bounded cache: `cache[text]`.

    A hit is a plain dict lookup; a miss (`__missing__`) converts plain strings
    (`-?digits[.digits]`) with integer arithmetic and anything else through Decimal. Both give
    the same answer; off-grid values raise OffGridError, non-numbers (and negative values
    unless `signed`) MalformedBookFrame, and None KeyError, as if the key were absent.
    """

    __slots__ = ("_step", "_scale", "_step_int", "_signed", "what")

    def __init__(self, step: Decimal, what: str, *, signed: bool) -> None:
        super().__init__()
        self._step = step
        self._signed = signed  # False: negative values are malformed (absolute sizes, prices)
        exponent = step.as_tuple().exponent
        assert isinstance(exponent, int)
        self._scale = max(-exponent, 0)  # decimal places of the step
        self._step_int = int(step.scaleb(self._scale))  # step × 10^scale, an integer
        self.what = what

    def __missing__(self, text: str) -> int:
        # Fast path, inline: plain unsigned `digits[.digits]`, the form the venue sends. A
        # sign, exponent, "_", whitespace and the like go through `convert` instead.
        if type(text) is str:
            whole, _, frac = text.partition(".")
            digits = whole + frac
            if digits.isdigit() and digits.isascii():
                units = int(digits)  # in units of 10^-len(frac)
                extra = len(frac) - self._scale  # decimal places beyond the step's
                if extra < 0:
                    units *= 10**-extra
                divisor = self._step_int * 10**extra if extra > 0 else self._step_int
                if divisor != 1:
                    units, rest = divmod(units, divisor)
                    if rest:
                        raise OffGridError(f"{self.what} {text} is not a multiple of {self._step}")
            else:
                units = self.convert(text)
                if units < 0 and not self._signed:
                    raise MalformedBookFrame(f"{self.what} {text!r} is negative")
        elif text is None:
            raise KeyError(text)  # JSON null: same as an absent key
        else:
            raise MalformedBookFrame(f"{self.what} must be a string, got {text!r}")
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        self[text] = units
        return units

    def convert(self, text: str) -> int:
        if type(text) is not str:
            raise MalformedBookFrame(f"{self.what} must be a string, got {text!r}")
        body = text[1:] if text[:1] == "-" else text
        whole, _, frac = body.partition(".")
        if whole.isascii() and whole.isdigit() and (not frac or (frac.isascii() and frac.isdigit())):
            scale = self._scale
            if len(frac) > scale:
                if frac[scale:].strip("0"):
                    raise OffGridError(f"{self.what} {text} is not a multiple of {self._step}")
                frac = frac[:scale]
            units, rest = divmod(int(whole + frac.ljust(scale, "0")), self._step_int)
            if rest:
                raise OffGridError(f"{self.what} {text} is not a multiple of {self._step}")
            return -units if body is not text else units
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise MalformedBookFrame(f"{self.what} {text!r} is not a decimal") from None
        if not value.is_finite():
            raise MalformedBookFrame(f"{self.what} {text!r} is not a finite decimal")
        units_dec = value / self._step
        whole_units = units_dec.to_integral_value()
        if whole_units != units_dec:
            raise OffGridError(f"{self.what} {text} is not a multiple of {self._step}")
        return int(whole_units)


# RPC v2 envelope types (SPEC §6.4), accepted as `frame_type` too.
_RPC_TYPES = {"ORDERBOOKS.SNAPSHOT": "SNAPSHOT", "ORDERBOOKS.DELTA": "DELTA"}
_get_p = itemgetter("p")
_get_q = itemgetter("q")
# What a malformed frame raises while being applied (besides our own MalformedBookFrame).
_BAD_CONTENT = (OffGridError, KeyError, TypeError, AttributeError, ValueError, IndexError)


class Book:
    """One market's book: each side a dict ticks → lots, plus the best tick of each side.

    No sorted index is kept: a new level only has to be compared with the best, and when the
    best level goes the next one is found by probing the ticks just behind it (levels near
    the touch are dense on the tick grid), with a scan of the side (O(levels)) only when none
    of them holds one. Ordered depth is built on request."""

    def __init__(self, spec: MarketSpec) -> None:
        self.spec = spec
        self._name = spec.name
        self._tick = float(spec.tick_size)
        self._price = _UnitCache(spec.tick_size, f"{spec.name} price", signed=False)
        self._size = _UnitCache(spec.lot_size, f"{spec.name} qty", signed=False)  # absolute sizes
        self._change = _UnitCache(spec.lot_size, f"{spec.name} qty change", signed=True)  # delta `q`
        self._bids: dict[int, int] = {}
        self._asks: dict[int, int] = {}
        self._bid: int | None = None  # best (highest) bid tick, None when there is no bid
        self._ask: int | None = None  # best (lowest) ask tick
        self.state = BookState.EMPTY
        self.last_seq: int | None = None

    # -- applying frames ---------------------------------------------------------------
    def apply(
        self, data: Mapping[str, Any], seq: int | None, frame_type: str | None = None
    ) -> BookGap | None:
        """Apply the `data` of one order-book frame.

        `seq` is the envelope seq, or None to skip the sequence check (RPC v2, whose seq is
        global to the connection, is checked there). `frame_type` (v1 `SNAPSHOT`/`DELTA` or
        RPC `ORDERBOOKS.*`) defaults to `data["t"]`. Returns None when applied, a BookGap
        when a delta was not; raises MalformedBookFrame (and discards the book) on bad content.
        """
        try:
            kind = data.get("t") if frame_type is None else frame_type
        except AttributeError:  # `data` is not an object
            kind = None
        if not isinstance(kind, str):
            self._discard()
            raise MalformedBookFrame(f"{self._name}: order book frame without a usable type: {kind!r}")
        if kind != "DELTA":
            if kind == "SNAPSHOT":
                self.apply_snapshot(data, seq)
                return None
            if kind in _RPC_TYPES:
                return self.apply(data, seq, _RPC_TYPES[kind])
            self._discard()
            raise MalformedBookFrame(f"{self._name}: unknown order book frame type {kind!r}")
        # The delta path is inline: it runs for almost every frame.
        if self.state is not _VALID:
            return self._not_applied(seq)
        last = self.last_seq
        if seq is not None and last is not None and seq != last + 1:
            self._discard()
            return BookGap(reason=GapReason.SEQ_GAP, expected_seq=last + 1, got_seq=seq)
        price, size, name = self._price, self._size, self._name
        try:
            if data.get("m", name) != name:
                raise MalformedBookFrame(f"frame for market {data['m']!r} sent to the {name} book")
            # Per level: `c` is the absolute size after the change (0 deletes); without `c`,
            # `q` is added (delete at <= 0). Both sides written out to keep the loop flat.
            levels = data["b"]
            if levels:
                side, best = self._bids, self._bid
                for level in levels:
                    tick = price[level["p"]]
                    try:
                        lots = size[level["c"]]
                    except KeyError:
                        lots = side.get(tick, 0) + self._change[level["q"]]
                    if lots > 0:
                        side[tick] = lots
                        if best is None or tick > best:
                            best = tick
                    elif side.pop(tick, None) is not None and tick == best:
                        best = _next_bid(side, tick)
                self._bid = best
            levels = data["a"]
            if levels:
                side, best = self._asks, self._ask
                for level in levels:
                    tick = price[level["p"]]
                    try:
                        lots = size[level["c"]]
                    except KeyError:
                        lots = side.get(tick, 0) + self._change[level["q"]]
                    if lots > 0:
                        side[tick] = lots
                        if best is None or tick < best:
                            best = tick
                    elif side.pop(tick, None) is not None and tick == best:
                        best = _next_ask(side, tick)
                self._ask = best
        except MalformedBookFrame:
            self._discard()
            raise
        except _BAD_CONTENT as exc:
            self._discard()
            raise MalformedBookFrame(f"{name} delta: {exc!r}") from exc
        self.last_seq = seq
        return None

    def apply_delta(self, data: Mapping[str, Any], seq: int | None) -> BookGap | None:
        return self.apply(data, seq, "DELTA")

    def apply_snapshot(self, data: Mapping[str, Any], seq: int | None) -> None:
        try:
            if data.get("m", self._name) != self._name:
                raise MalformedBookFrame(f"frame for market {data['m']!r} sent to the {self._name} book")
            bids = self._load_side(data["b"])
            asks = self._load_side(data["a"])
        except MalformedBookFrame:
            self._discard()
            raise
        except _BAD_CONTENT as exc:
            self._discard()
            raise MalformedBookFrame(f"{self._name} snapshot: {exc!r}") from exc
        self._bids, self._asks = bids, asks
        self._bid = max(bids) if bids else None
        self._ask = min(asks) if asks else None
        self.state = _VALID
        self.last_seq = seq

    def invalidate(self) -> None:
        """Discard the book (e.g. the connection dropped); the next snapshot re-establishes it."""
        self._discard()

    def _not_applied(self, seq: int | None) -> BookGap:
        if self.state is BookState.EMPTY:
            self.state = BookState.INVALID
            return BookGap(reason=GapReason.NO_SNAPSHOT, expected_seq=None, got_seq=seq)
        return BookGap(reason=GapReason.AWAITING_SNAPSHOT, expected_seq=None, got_seq=seq)

    def _discard(self) -> None:
        self._bids = {}
        self._asks = {}
        self._bid = self._ask = None
        self.state = BookState.INVALID
        self.last_seq = None

    def _load_side(self, levels: Sequence[Mapping[str, Any]]) -> dict[int, int]:
        # Fast path, all in C: every level has `q` (absolute here), no zero sizes.
        try:
            loaded = dict(
                zip(
                    map(self._price.__getitem__, map(_get_p, levels)),
                    map(self._size.__getitem__, map(_get_q, levels)),
                    strict=True,
                )
            )
        except KeyError:
            pass  # some level has no `q`
        else:
            if all(loaded.values()):  # sizes are never negative here; 0 means "no level"
                return loaded
        price, size = self._price, self._size
        side: dict[int, int] = {}
        for level in levels:
            try:
                units = size[level["q"]]
            except KeyError:
                units = size[level["c"]]
            if units:
                side[price[level["p"]]] = units
            else:
                side.pop(price[level["p"]], None)  # a repeated price listed again with size 0
        return side

    # -- reads -------------------------------------------------------------------------
    @property
    def valid(self) -> bool:
        return self.state is _VALID

    def best_bid(self) -> tuple[int, int] | None:
        """(ticks, lots) of the best bid, or None."""
        best = self._bid
        return None if best is None else (best, self._bids[best])

    def best_ask(self) -> tuple[int, int] | None:
        best = self._ask
        return None if best is None else (best, self._asks[best])

    @property
    def best_bid_ticks(self) -> int | None:
        return self._bid

    @property
    def best_ask_ticks(self) -> int | None:
        return self._ask

    @property
    def mid_ticks2(self) -> int | None:
        """Best bid + best ask in ticks (twice the mid, so it stays an integer)."""
        if self._bid is None or self._ask is None:
            return None
        return self._bid + self._ask

    @property
    def mid(self) -> float | None:
        if self._bid is None or self._ask is None:
            return None
        return (self._bid + self._ask) * 0.5 * self._tick

    @property
    def spread_ticks(self) -> int | None:
        if self._bid is None or self._ask is None:
            return None
        return self._ask - self._bid

    @property
    def microprice(self) -> float | None:
        """Size-weighted mid: leans toward the side with less size at the touch."""
        bid, ask = self._bid, self._ask
        if bid is None or ask is None:
            return None
        bid_lots, ask_lots = self._bids[bid], self._asks[ask]
        return (bid * ask_lots + ask * bid_lots) / (bid_lots + ask_lots) * self._tick

    def top(self) -> BookTop:
        bid = self.best_bid()
        ask = self.best_ask()
        mid = micro = None
        if bid is not None and ask is not None:
            mid = (bid[0] + ask[0]) * 0.5 * self._tick
            micro = (bid[0] * ask[1] + ask[0] * bid[1]) / (bid[1] + ask[1]) * self._tick
        return BookTop(
            best_bid_ticks=bid[0] if bid else None,
            best_bid_lots=bid[1] if bid else None,
            best_ask_ticks=ask[0] if ask else None,
            best_ask_lots=ask[1] if ask else None,
            mid=mid,
            microprice=micro,
            valid=self.state is _VALID,
            seq=self.last_seq,
        )

    def depth(self, n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Up to n levels a side, best first: (bids, asks) of (ticks, lots)."""
        if n <= 0:
            return [], []
        bids, asks = self._bids, self._asks
        return (
            [(t, bids[t]) for t in heapq.nlargest(n, bids)],
            [(t, asks[t]) for t in heapq.nsmallest(n, asks)],
        )

    def levels(self) -> tuple[dict[int, int], dict[int, int]]:
        """Copies of both sides, ticks → lots (for tests and diagnostics)."""
        return dict(self._bids), dict(self._asks)

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)


# How many ticks behind a removed best level to look for the next one before scanning the
# whole side; near the touch nearly every tick holds a level.
_PROBE = 16


def _next_bid(side: dict[int, int], gone: int) -> int | None:
    """The best bid once `gone`, the best so far, has been removed from `side`."""
    for tick in range(gone - 1, gone - 1 - _PROBE, -1):
        if tick in side:
            return tick
    return max(side) if side else None


def _next_ask(side: dict[int, int], gone: int) -> int | None:
    for tick in range(gone + 1, gone + 1 + _PROBE):
        if tick in side:
            return tick
    return min(side) if side else None
