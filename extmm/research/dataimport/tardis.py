"""Tardis.dev downloadable CSV files (docs.tardis.dev/downloadable-csv-files) ↔ our recordings.

Read: `incremental_book_L2`, `trades` and `derivative_ticker` files (plain or `.gz`; the kind
is told by the header row), timestamps in µs since the epoch: `local_timestamp` (arrival at
Tardis' collector) is our receive time, `timestamp` the exchange time. Book rows carry the
NEW absolute amount of a level (0 removes it; removing an absent level is normal and
skipped); rows sharing one `local_timestamp` came in one exchange message and become one
frame; a run of `is_snapshot=true` rows is one full book (the book is reset when such a run
starts after update rows). Trade `side` is the aggressor's (`buy`/`sell`); `unknown` is
decided against the book in force (at or above the best ask: buy; at or below the best bid:
sell; otherwise the print is skipped and counted). `derivative_ticker` gives a mark price
for every row with `mark_price`, and funding (`funding_rate`, `funding_timestamp`) when
either changes.

Write (`export_tardis`): the inverse, for round-trip tests and for sharing data.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from extmm.research.dataimport.common import Event, ImportError_, Level, merge
from extmm.sim.recording import read_recording

BOOK_COLUMNS = ["exchange", "symbol", "timestamp", "local_timestamp", "is_snapshot", "side", "price", "amount"]
TRADE_COLUMNS = ["exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount"]
TICKER_COLUMNS = [
    "exchange", "symbol", "timestamp", "local_timestamp", "funding_timestamp", "funding_rate",
    "predicted_funding_rate", "open_interest", "last_price", "index_price", "mark_price",
]


def _open_text(path: Path) -> TextIO:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _kind_of(columns: Sequence[str]) -> str:
    cols = set(columns)
    if {"is_snapshot", "side", "price", "amount"} <= cols:
        return "book"
    if {"id", "side", "price", "amount"} <= cols:
        return "trades"
    if "mark_price" in cols or "funding_rate" in cols:
        return "ticker"
    raise ImportError_(f"not a Tardis incremental_book_L2, trades or derivative_ticker CSV (columns: {', '.join(columns)})")


def file_kind(path: Path) -> str:
    with _open_text(path) as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise ImportError_(f"{path}: empty file")
    try:
        return _kind_of(header)
    except ImportError_ as exc:
        raise ImportError_(f"{path}: {exc}") from None


def _us(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ImportError_(f"{where}: timestamp {text!r} is not an integer of µs") from None


def _rows(path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        for number, row in enumerate(reader, start=2):
            yield f"{path}:{number}", row


def read_events(paths: Sequence[Path], symbols: Mapping[str, str], skipped: Any = None) -> Iterator[Event]:
    """All inputs' events in receive-time order; rows of unmapped symbols are counted and skipped."""
    streams = []
    books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
    for path in paths:
        kind = file_kind(path)
        if kind == "book":
            streams.append(_book_events(path, symbols, books, skipped))
        elif kind == "trades":
            streams.append(_trade_events(path, symbols, books, skipped))
        else:
            streams.append(_ticker_events(path, symbols, skipped))
    return merge(streams)


def _skip(skipped: Any, why: str) -> None:
    if skipped is not None:
        skipped[why] += 1


def _book_events(
    path: Path,
    symbols: Mapping[str, str],
    books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]],
    skipped: Any,
) -> Iterator[Event]:
    # Per symbol: the rows of the current message (one local_timestamp), or of a snapshot run.
    pending: dict[str, dict[str, Any]] = {}

    def flush(market: str) -> Event | None:
        group = pending.pop(market, None)
        if group is None:
            return None
        book = books.setdefault(market, ({}, {}))
        if group["snapshot"]:
            book[0].clear()
            book[1].clear()
        for lv in group["bids"]:
            _track(book[0], lv)
        for lv in group["asks"]:
            _track(book[1], lv)
        return Event(kind="book", market=market, recv_ms=group["recv"] // 1000, exch_ms=group["exch"] // 1000,
                     where=group["where"], snapshot=group["snapshot"], bids=tuple(group["bids"]),
                     asks=tuple(group["asks"]))

    for where, row in _rows(path):
        market = symbols.get(row.get("symbol", ""))
        if market is None:
            _skip(skipped, f"book rows of unmapped symbol {row.get('symbol')!r}")
            continue
        local = _us(row["local_timestamp"], where)
        snapshot = row["is_snapshot"].strip().lower() == "true"
        side = row["side"].strip().lower()
        if side not in ("bid", "ask"):
            raise ImportError_(f"{where}: side {row['side']!r} is neither bid nor ask")
        group = pending.get(market)
        # A new frame: another message (local_timestamp), or a snapshot run starting or ending.
        if group is None or (
            (snapshot != group["snapshot"]) or (not snapshot and local != group["recv"])
        ):
            event = flush(market)
            if event is not None:
                yield event
            pending[market] = group = {
                "snapshot": snapshot, "recv": local, "exch": _us(row["timestamp"], where),
                "where": where, "bids": [], "asks": [],
            }
        group["bids" if side == "bid" else "asks"].append(Level(row["price"], row["amount"]))
    for market in list(pending):
        event = flush(market)
        if event is not None:
            yield event


def _track(side: dict[Decimal, Decimal], level: Level) -> None:
    try:
        price, amount = Decimal(level.price), Decimal(level.amount)
    except ArithmeticError:
        return  # the writer reports it with its line
    if amount > 0:
        side[price] = amount
    else:
        side.pop(price, None)


def _trade_events(
    path: Path,
    symbols: Mapping[str, str],
    books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]],
    skipped: Any,
) -> Iterator[Event]:
    group: dict[str, Any] | None = None

    def flush() -> Event | None:
        if group is None or not group["trades"]:
            return None
        return Event(kind="trades", market=group["market"], recv_ms=group["recv"] // 1000,
                     exch_ms=group["exch"] // 1000, where=group["where"], trades=tuple(group["trades"]))

    for where, row in _rows(path):
        market = symbols.get(row.get("symbol", ""))
        if market is None:
            _skip(skipped, f"trade rows of unmapped symbol {row.get('symbol')!r}")
            continue
        local = _us(row["local_timestamp"], where)
        exch = _us(row["timestamp"], where)
        side = row["side"].strip().lower()
        if side == "unknown":
            guessed = _side_from_book(books.get(market), row["price"])
            if guessed is None:
                _skip(skipped, "trades of unknown side inside the spread")
                continue
            side = guessed
        elif side not in ("buy", "sell"):
            raise ImportError_(f"{where}: trade side {row['side']!r} is not buy, sell or unknown")
        if group is None or group["market"] != market or group["recv"] != local:
            event = flush()
            if event is not None:
                yield event
            group = {"market": market, "recv": local, "exch": exch, "where": where, "trades": []}
        trade_id = _trade_id(row.get("id", ""), where)
        group["trades"].append((trade_id, side.upper(), row["price"], row["amount"], exch // 1000))
    event = flush()
    if event is not None:
        yield event


def _trade_id(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        # Some venues' ids are not numbers: a stable number from the row's place in the file.
        return int(where.rsplit(":", 1)[1])


def _side_from_book(book: tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]] | None, price: str) -> str | None:
    if book is None or not book[0] or not book[1]:
        return None
    p = Decimal(price)
    if p >= min(book[1]):
        return "buy"
    if p <= max(book[0]):
        return "sell"
    return None


def _ticker_events(path: Path, symbols: Mapping[str, str], skipped: Any) -> Iterator[Event]:
    last_funding: dict[str, tuple[str, str]] = {}
    for where, row in _rows(path):
        market = symbols.get(row.get("symbol", ""))
        if market is None:
            _skip(skipped, f"ticker rows of unmapped symbol {row.get('symbol')!r}")
            continue
        local = _us(row["local_timestamp"], where) // 1000
        exch = _us(row["timestamp"], where) // 1000
        mark = (row.get("mark_price") or "").strip()
        if mark:
            yield Event(kind="mark", market=market, recv_ms=local, exch_ms=exch, where=where, value=mark)
        rate = (row.get("funding_rate") or "").strip()
        funding_at = (row.get("funding_timestamp") or "").strip()
        if rate and (rate, funding_at) != last_funding.get(market):
            last_funding[market] = (rate, funding_at)
            yield Event(kind="funding", market=market, recv_ms=local, exch_ms=exch, where=where, value=rate,
                        funding_ms=_us(funding_at, where) // 1000 if funding_at else 0)


# -- export -----------------------------------------------------------------------------------


def export_tardis(
    recording: Sequence[Path], out_dir: Path, *, symbols: Mapping[str, str], exchange: str = "extended"
) -> dict[str, Path]:
    """Write a recording as Tardis CSVs (gzipped): {kind: path}. `symbols`: MARKET → SYMBOL."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "book": out_dir / "incremental_book_L2.csv.gz",
        "trades": out_dir / "trades.csv.gz",
        "ticker": out_dir / "derivative_ticker.csv.gz",
    }
    handles = {k: io.TextIOWrapper(gzip.open(p, "wb"), encoding="utf-8", newline="") for k, p in paths.items()}
    try:
        writers = {k: csv.writer(h, lineterminator="\n") for k, h in handles.items()}
        writers["book"].writerow(BOOK_COLUMNS)
        writers["trades"].writerow(TRADE_COLUMNS)
        writers["ticker"].writerow(TICKER_COLUMNS)
        mark: dict[str, str] = {}
        funding: dict[str, tuple[str, str]] = {}
        for record in read_recording(recording):
            kind, market = record.get("k"), record.get("m")
            frame = record.get("f")
            if not isinstance(market, str) or market not in symbols or not isinstance(frame, dict):
                continue
            symbol = symbols[market]
            local_us = int(record["t"]) * 1000
            exch_us = int(frame.get("ts") or record["t"]) * 1000
            data: Any = frame.get("data")  # recorded JSON, as the venue sent it
            head = [exchange, symbol, exch_us, local_us]
            if kind == "orderbook":
                snapshot = frame.get("type") == "SNAPSHOT"
                for key, side in (("b", "bid"), ("a", "ask")):
                    for lv in data.get(key) or []:
                        amount = lv.get("c", lv.get("q")) if not snapshot else lv.get("q", lv.get("c"))
                        writers["book"].writerow([*head, "true" if snapshot else "false", side, lv["p"], amount])
            elif kind == "trades":
                for t in data:
                    writers["trades"].writerow([*head, t["i"], t["S"].lower(), t["p"], t["q"]])
            elif kind in ("mark", "funding"):
                if kind == "mark":
                    mark[market] = data["p"]
                else:
                    funding[market] = (str(int(data.get("T") or 0) * 1000), data["f"])
                f_ts, f_rate = funding.get(market, ("", ""))
                writers["ticker"].writerow([*head, f_ts if kind == "funding" else "",
                                            f_rate if kind == "funding" else "", "", "", "", "",
                                            mark.get(market, "") if kind == "mark" else ""])
    finally:
        for h in handles.values():
            h.close()
    return paths
