"""What every importer shares: normalised events, the price/size grid, the recording writer.

An importer yields `Event`s per input in time order (receive time first); `merge` interleaves
inputs by receive time (ties: book, prints, mark, funding, then the order of the inputs); `write_recording` keeps a
book per market, turns absolute level sizes into Extended SNAPSHOT/DELTA frames (`p`, `q`
change, `c` absolute — SPEC §5.3, as `extmm.sim.recording` stores them) and prints/mark/funding
into their frames, re-sequenced per market and stream. Prices and sizes must lie on the
market's grid: the first one that does not is an error naming its file and line.
"""

from __future__ import annotations

import copy
import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import attrs

from extmm.markets import bundled_markets
from extmm.sim.recording import RecordingWriter

TEMPLATE_MARKET = "BTC-USD"  # the market object an unknown market's header entry is built from


class ImportError_(Exception):
    """The input cannot be imported (unreadable line, off-grid price, broken update chain...)."""


@attrs.frozen
class Level:
    price: str
    amount: str  # absolute size after the update; 0 removes the level


@attrs.frozen(kw_only=True)
class Event:
    """One normalised input event. Times are epoch ms; `where` is "file:line" for messages."""

    kind: str  # book | trades | mark | funding
    market: str
    recv_ms: int
    exch_ms: int
    where: str
    snapshot: bool = False  # book: a full book (reset first)
    bids: tuple[Level, ...] = ()
    asks: tuple[Level, ...] = ()
    trades: tuple[tuple[int, str, str, str, int], ...] = ()  # (id, BUY|SELL, price, qty, ts ms)
    value: str = ""  # mark price or funding rate
    funding_ms: int = 0


def merge(streams: Iterable[Iterator[Event]]) -> Iterator[Event]:
    """Interleave per-input event streams by receive time (stable across inputs)."""
    tagged = [_tag(i, s) for i, s in enumerate(streams)]
    for _key, event in heapq.merge(*tagged, key=lambda item: item[0]):
        yield event


# Frames of one millisecond from different inputs: the book first, then prints, mark, funding
# (separate files carry no order between them; this one is fixed, so imports are canonical).
_RANK = {"book": 0, "trades": 1, "mark": 2, "funding": 3}


def _tag(index: int, stream: Iterator[Event]) -> Iterator[tuple[tuple[int, int, int, int], Event]]:
    last = None
    for n, event in enumerate(stream):
        if last is not None and event.recv_ms < last:
            raise ImportError_(f"{event.where}: time goes backwards ({event.recv_ms} ms after {last} ms)")
        last = event.recv_ms
        yield (event.recv_ms, _RANK[event.kind], index, n), event


def decimal(text: str, what: str, where: str) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise ImportError_(f"{where}: {what} {text!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise ImportError_(f"{where}: {what} {text!r} is not a finite non-negative number")
    return value


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


@attrs.define
class GridScan:
    """Pass one: the finest decimal step each market's prices and sizes need, and the counts."""

    price_places: Counter[str] = attrs.Factory(Counter)
    size_places: Counter[str] = attrs.Factory(Counter)

    def see(self, event: Event) -> None:
        m = event.market
        for level in (*event.bids, *event.asks):
            self.price_places[m] = max(self.price_places[m], _places(decimal(level.price, "price", event.where)))
            amount = decimal(level.amount, "amount", event.where)
            if amount:
                self.size_places[m] = max(self.size_places[m], _places(amount))
        for _id, _side, price, qty, _ts in event.trades:
            self.price_places[m] = max(self.price_places[m], _places(decimal(price, "price", event.where)))
            self.size_places[m] = max(self.size_places[m], _places(decimal(qty, "qty", event.where)))

    def tick(self, market: str) -> Decimal:
        return Decimal(1).scaleb(-self.price_places[market])

    def lot(self, market: str) -> Decimal:
        return Decimal(1).scaleb(-self.size_places[market])


def market_object(name: str, tick: Decimal, lot: Decimal) -> dict[str, Any]:
    """The header's `/info/markets` object: the bundled one (or a template's) on this grid."""
    bundled = bundled_markets()
    obj = copy.deepcopy(bundled.get(name) or bundled[TEMPLATE_MARKET])
    if name not in bundled:
        obj["name"] = obj["uiName"] = name
        obj["assetName"] = name.split("-")[0]
        obj.pop("marketStats", None)
    tc = obj["tradingConfig"]
    tc["minPriceChange"] = _text(tick)
    tc["minOrderSizeChange"] = _text(lot)
    min_size = Decimal(tc.get("minOrderSize", "0"))
    if min_size <= 0 or (min_size / lot) != (min_size / lot).to_integral_value():
        tc["minOrderSize"] = _text(lot)
    return obj


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


@attrs.define
class ImportStats:
    level_updates: int = 0  # book levels written (snapshot levels + delta level changes)
    trades: int = 0
    book_frames: int = 0
    snapshots: int = 0
    marks: int = 0
    funding: int = 0
    ignored_removals: int = 0  # removals of a level that was not in the book (normal, skipped)
    skipped: Counter[str] = attrs.Factory(Counter)  # why input was left out

    def to_json(self) -> dict[str, Any]:
        return {
            "level_updates": self.level_updates,
            "trades": self.trades,
            "book_frames": self.book_frames,
            "snapshots": self.snapshots,
            "marks": self.marks,
            "funding": self.funding,
            "ignored_removals": self.ignored_removals,
            "skipped": dict(self.skipped),
        }


class _Grid:
    def __init__(self, market: str, tick: Decimal, lot: Decimal) -> None:
        self.market, self.tick, self.lot = market, tick, lot
        self._tick_exp, self._lot_exp = tick.as_tuple().exponent, lot.as_tuple().exponent

    def price(self, text: str, where: str) -> Decimal:
        value = decimal(text, "price", where)
        if value <= 0 or (value / self.tick) != (value / self.tick).to_integral_value():
            raise ImportError_(f"{where}: {self.market} price {text} is not a multiple of the tick {self.tick}")
        return value

    def size(self, text: str, where: str) -> Decimal:
        value = decimal(text, "amount", where)
        if (value / self.lot) != (value / self.lot).to_integral_value():
            raise ImportError_(f"{where}: {self.market} amount {text} is not a multiple of the lot {self.lot}")
        return value

    def ptext(self, value: Decimal) -> str:
        return format(value.quantize(self.tick), "f")

    def stext(self, value: Decimal) -> str:
        return format(value.quantize(self.lot), "f")


def write_recording(
    events: Callable[[], Iterator[Event]],
    out: Path,
    *,
    markets: Iterable[str],
    source: str,
    tick: Decimal | None = None,
    lot: Decimal | None = None,
    stats: ImportStats | None = None,
) -> ImportStats:
    """Two passes over `events()`: the grid (unless given), then the recording at `out`."""
    markets = list(markets)
    scan = GridScan()
    start_ms: int | None = None
    if tick is None or lot is None:
        for event in events():
            scan.see(event)
            start_ms = event.recv_ms if start_ms is None else start_ms
    grids = {
        m: _Grid(m, tick if tick is not None else scan.tick(m), lot if lot is not None else scan.lot(m))
        for m in markets
    }
    stats = stats if stats is not None else ImportStats()
    iterator = events()
    first = next(iterator, None)
    if first is None:
        raise ImportError_("the input holds no events for the mapped symbols")
    header = {
        "source": source,
        "start_ms": first.recv_ms,
        "kinds": ["orderbook", "trades", "funding", "mark"],
        "markets": {m: market_object(m, grids[m].tick, grids[m].lot) for m in markets},
    }
    tmp = out.with_name(out.name + ".partial")
    writer = RecordingWriter(tmp, header=header)
    try:
        _write_events(writer, _chain(first, iterator), grids, stats)
    except BaseException:
        writer.close()
        for part in writer.parts:
            part.unlink(missing_ok=True)
        raise
    writer.close()
    tmp.replace(out)
    return stats


def _chain(first: Event, rest: Iterator[Event]) -> Iterator[Event]:
    yield first
    yield from rest


def _write_events(
    writer: RecordingWriter, events: Iterable[Event], grids: Mapping[str, _Grid], stats: ImportStats
) -> None:
    import orjson

    books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
    seqs: Counter[tuple[str, str]] = Counter()
    opened: set[tuple[str, str]] = set()

    def emit(kind: str, market: str, t: int, frame: dict[str, Any]) -> None:
        if (kind, market) not in opened:
            opened.add((kind, market))
            writer.mark_open(t, kind, market)
        seqs[(kind, market)] += 1
        frame["seq"] = seqs[(kind, market)]
        writer.write_frame(t, kind, market, orjson.dumps(frame))

    for e in events:
        grid = grids[e.market]
        if e.kind == "book":
            if e.snapshot:
                bids: dict[Decimal, Decimal] = {}
                asks: dict[Decimal, Decimal] = {}
                for levels, side in ((e.bids, bids), (e.asks, asks)):
                    for lv in levels:
                        size = grid.size(lv.amount, e.where)
                        price = grid.price(lv.price, e.where)
                        if size > 0:
                            side[price] = size
                        else:
                            side.pop(price, None)
                books[e.market] = (bids, asks)
                data = {
                    "t": "SNAPSHOT",
                    "m": e.market,
                    "b": [{"p": grid.ptext(p), "q": grid.stext(q)} for p, q in sorted(bids.items(), reverse=True)],
                    "a": [{"p": grid.ptext(p), "q": grid.stext(q)} for p, q in sorted(asks.items())],
                }
                stats.snapshots += 1
                stats.level_updates += len(bids) + len(asks)
                emit("orderbook", e.market, e.recv_ms, {"type": "SNAPSHOT", "data": data, "ts": e.exch_ms})
                stats.book_frames += 1
                continue
            book = books.get(e.market)
            if book is None:
                stats.skipped["book update before the first snapshot"] += 1
                continue
            out_levels: dict[str, list[dict[str, str]]] = {"b": [], "a": []}
            for key, levels, side in (("b", e.bids, book[0]), ("a", e.asks, book[1])):
                for lv in levels:
                    price = grid.price(lv.price, e.where)
                    size = grid.size(lv.amount, e.where)
                    before = side.get(price, Decimal(0))
                    if size == 0 and before == 0:
                        stats.ignored_removals += 1  # removing an absent level: normal, nothing to do
                        continue
                    if size > 0:
                        side[price] = size
                    else:
                        del side[price]
                    out_levels[key].append(
                        {"q": grid.stext(size - before) if size >= before else "-" + grid.stext(before - size),
                         "p": grid.ptext(price), "c": grid.stext(size)}
                    )
            count = len(out_levels["b"]) + len(out_levels["a"])
            if not count:
                continue
            stats.level_updates += count
            stats.book_frames += 1
            data = {"t": "DELTA", "m": e.market, "b": out_levels["b"], "a": out_levels["a"]}
            emit("orderbook", e.market, e.recv_ms, {"type": "DELTA", "data": data, "ts": e.exch_ms})
        elif e.kind == "trades":
            prints = []
            for trade_id, side_text, price_text, qty_text, ts in e.trades:
                q = grid.size(qty_text, e.where)
                if q <= 0:
                    stats.skipped["trade of size 0"] += 1
                    continue
                prints.append({"i": trade_id, "m": e.market, "S": side_text, "tT": "TRADE", "T": ts,
                               "p": grid.ptext(grid.price(price_text, e.where)), "q": grid.stext(q)})
            if prints:
                stats.trades += len(prints)
                emit("trades", e.market, e.recv_ms, {"data": prints, "ts": e.exch_ms})
        elif e.kind == "mark":
            price = decimal(e.value, "mark price", e.where)
            stats.marks += 1
            emit("mark", e.market, e.recv_ms,
                 {"type": "MP", "data": {"m": e.market, "p": format(price, "f"), "ts": 0}, "ts": e.exch_ms})
        elif e.kind == "funding":
            try:
                rate = Decimal(e.value)
            except InvalidOperation:
                raise ImportError_(f"{e.where}: funding rate {e.value!r} is not a number") from None
            stats.funding += 1
            emit("funding", e.market, e.recv_ms,
                 {"data": {"m": e.market, "T": e.funding_ms or e.exch_ms, "f": format(rate, "f")}, "ts": e.exch_ms})


def parse_map(items: Iterable[str]) -> dict[str, str]:
    """`SYMBOL=MARKET` pairs → {SYMBOL: MARKET}; ImportError_ on a malformed pair."""
    out: dict[str, str] = {}
    for item in items:
        symbol, sep, market = item.partition("=")
        if not sep or not symbol.strip() or not market.strip():
            raise ImportError_(f"--map {item!r}: expected SYMBOL=MARKET, e.g. BTCUSDT=BTC-USD")
        out[symbol.strip()] = market.strip()
    if len(set(out.values())) != len(out):
        raise ImportError_("--map: two symbols map to one market")
    return out
