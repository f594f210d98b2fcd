"""Binance USD-M futures raw stream captures ↔ our recordings.

Inputs (any number of files, plain or `.gz`, kinds told by content):
- diff-depth captures (`<symbol>@depth`, `@depth@100ms`, `@depth@500ms`): one JSON object per
  line, the raw payload `{"e":"depthUpdate","E","T","s","U","u","pu","b","a"}` or the
  combined-stream wrapper `{"stream": ..., "data": {...}}`;
- trade captures (`aggTrade` or `trade` payloads, raw or wrapped);
- REST depth snapshots (`GET /fapi/v1/depth`): `{"lastUpdateId","E","T","bids","asks"}`,
  one per file or one per line; the symbol comes from a `"symbol"` key next to them, or
  from the file name (`BTCUSDT...json`), or — with a single mapped symbol — is that one.

Receive time: a capture line may carry the local receive time as a top-level `"recv_ms"`
(integer epoch ms) beside the payload or wrapper, e.g. `{"recv_ms": 1591270260950,
"stream": "btcusdt@depth@100ms", "data": {...}}`; without it the event time `E` is used.
The exchange time is `T` (else `E`).

Synchronisation, per symbol, by Binance's rules ("How to manage a local order book
correctly", USD-M): depth events are buffered in capture order; the book starts from the
first snapshot with events after it: events with `u < lastUpdateId` are dropped; the first
applied event must have `U ≤ lastUpdateId ≤ u`; afterwards each event's `pu` must equal the
previous event's `u`. A broken chain (or a snapshot that no captured event bridges)
resynchronises at the next snapshot whose `lastUpdateId` lies at or after the break; if
there is none, the import stops with a message naming the line. Quantities are absolute; 0
removes a level; removing an absent level is normal. Trades: `m` is "buyer is the maker",
so `m=true` means the aggressor SOLD; prints of one market received in the same millisecond
make one trades frame.

Write (`export_binance`): the inverse for round-trip tests: depth updates with a consistent
`U/u/pu` chain, broken on purpose at each recorded SNAPSHOT frame, with a REST snapshot
there to resynchronise at.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from extmm.research.dataimport.common import Event, ImportError_, Level, merge
from extmm.sim.recording import read_recording


def _open_text(path: Path) -> io.TextIOBase:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _objects(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file:line, object) for every JSON object in a file (one per line, or one per file)."""
    with _open_text(path) as fh:
        text = fh.read()
    stripped = text.strip()
    if stripped.startswith("{") and "\n" in stripped:
        try:  # a pretty-printed single object (a saved REST response)
            whole = json.loads(stripped)
        except ValueError:
            whole = None
        if isinstance(whole, dict):
            yield f"{path}:1", whole
            return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ImportError_(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ImportError_(f"{path}:{number}: expected a JSON object")
        yield f"{path}:{number}", obj


def _unwrap(obj: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    recv = obj.get("recv_ms")
    data = obj.get("data")
    payload = data if isinstance(data, dict) else obj
    return payload, int(recv) if isinstance(recv, int | float) else None


@attrs.frozen
class _Depth:
    where: str
    symbol: str
    first: int  # U
    last: int  # u
    prev: int | None  # pu
    recv_ms: int
    exch_ms: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@attrs.frozen
class _Snapshot:
    where: str
    symbol: str
    last_update_id: int
    at_ms: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


def _levels(raw: Any, where: str) -> tuple[Level, ...]:
    try:
        return tuple(Level(str(p), str(q)) for p, q in raw)
    except (TypeError, ValueError):
        raise ImportError_(f"{where}: levels must be [price, quantity] pairs") from None


def _symbol_from_name(path: Path, symbols: Mapping[str, str]) -> str | None:
    name = path.name.upper()
    found = [s for s in symbols if name.startswith(s.upper())]
    if len(found) == 1:
        return found[0]
    return next(iter(symbols)) if len(symbols) == 1 else None


def classify(
    paths: Sequence[Path], symbols: Mapping[str, str], skipped: Any = None
) -> tuple[dict[str, list[_Depth]], dict[str, list[_Snapshot]], list[list[Event]]]:
    depth: dict[str, list[_Depth]] = {s: [] for s in symbols}
    snaps: dict[str, list[_Snapshot]] = {s: [] for s in symbols}
    trade_streams: list[list[Event]] = []
    for path in paths:
        trades: list[Event] = []
        for where, obj in _objects(path):
            payload, recv = _unwrap(obj)
            if "lastUpdateId" in payload:
                symbol = payload.get("symbol") or obj.get("symbol") or _symbol_from_name(path, symbols)
                if not isinstance(symbol, str) or symbol not in symbols:
                    _skip(skipped, f"snapshots of unmapped symbol {symbol!r}")
                    continue
                at = int(payload.get("T") or payload.get("E") or 0)
                snaps[symbol].append(_Snapshot(where, symbol, int(payload["lastUpdateId"]), recv or at,
                                               _levels(payload.get("bids", []), where),
                                               _levels(payload.get("asks", []), where)))
                continue
            kind = payload.get("e")
            symbol = payload.get("s")
            if kind not in ("depthUpdate", "aggTrade", "trade"):
                _skip(skipped, f"lines of event type {kind!r}")
                continue
            if not isinstance(symbol, str) or symbol not in symbols:
                _skip(skipped, f"{kind} of unmapped symbol {symbol!r}")
                continue
            try:
                event_ms = int(payload["E"])
                exch_ms = int(payload.get("T") or event_ms)
                recv_ms = recv if recv is not None else event_ms
                if kind == "depthUpdate":
                    pu = payload.get("pu")
                    depth[symbol].append(_Depth(where, symbol, int(payload["U"]), int(payload["u"]),
                                                None if pu is None else int(pu), recv_ms, exch_ms,
                                                _levels(payload.get("b", []), where),
                                                _levels(payload.get("a", []), where)))
                else:
                    trade_id = int(payload["a"] if kind == "aggTrade" else payload["t"])
                    side = "SELL" if payload["m"] else "BUY"  # m: the buyer is the maker
                    trades.append(Event(kind="trades", market=symbols[symbol], recv_ms=recv_ms, exch_ms=exch_ms,
                                        where=where,
                                        trades=((trade_id, side, str(payload["p"]), str(payload["q"]), exch_ms),)))
            except (KeyError, TypeError, ValueError) as exc:
                raise ImportError_(f"{where}: {kind} without a usable field: {exc!r}") from None
        if trades:
            trades.sort(key=lambda e: e.recv_ms)  # stable: capture order within a millisecond
            trade_streams.append(_group_trades(trades))
    return depth, snaps, trade_streams


def _group_trades(trades: list[Event]) -> list[Event]:
    """Prints of one market received in the same millisecond become one trades frame (as a
    venue batches them, and as Tardis' rows with one local_timestamp are one message)."""
    out: list[Event] = []
    for event in trades:
        last = out[-1] if out else None
        if last is not None and last.market == event.market and last.recv_ms == event.recv_ms:
            out[-1] = attrs.evolve(last, trades=last.trades + event.trades)
        else:
            out.append(event)
    return out


def _skip(skipped: Any, why: str) -> None:
    if skipped is not None:
        skipped[why] += 1


def synchronise(symbol: str, market: str, events: list[_Depth], snapshots: list[_Snapshot],
                resyncs: list[str] | None = None) -> Iterator[Event]:
    """Book events of one symbol by Binance's rules (see the module docstring)."""
    snaps = sorted(snapshots, key=lambda s: (s.last_update_id, s.at_ms))
    if events and not snaps:
        raise ImportError_(f"{symbol}: depth updates but no REST depth snapshot to start the book from")
    si = 0  # the next snapshot that may start (or restart) the book
    synced = False
    prev_u: int | None = None
    broken = ""  # why the book was last resynchronised, for the message when no snapshot is left
    i = 0
    while i < len(events):
        ev = events[i]
        if not synced:
            if si >= len(snaps):
                raise ImportError_(
                    f"{ev.where}: {symbol}: {broken or 'the updates do not reach the snapshots'}, and no later "
                    f"REST depth snapshot bridges the updates (last lastUpdateId={snaps[-1].last_update_id}, "
                    f"updates resume at U={ev.first}); stopped"
                )
            snap = snaps[si]
            if ev.last < snap.last_update_id:
                i += 1  # older than the snapshot: dropped (rule 3)
                continue
            if not ev.first <= snap.last_update_id <= ev.last:
                si += 1  # updates already past this snapshot: it cannot be bridged, try the next
                continue
            # rule 4: U ≤ lastUpdateId ≤ u — the book starts from this snapshot
            yield Event(kind="book", market=market, recv_ms=ev.recv_ms, exch_ms=ev.exch_ms, where=snap.where,
                        snapshot=True, bids=snap.bids, asks=snap.asks)
            synced = True
            si += 1
        elif ev.prev is not None and ev.prev != prev_u:
            broken = f"the update chain broke at {ev.where} (pu={ev.prev}, previous u={prev_u})"
            if resyncs is not None:
                resyncs.append(broken)
            synced = False  # rule 5: re-initialise from a new snapshot
            continue
        yield Event(kind="book", market=market, recv_ms=ev.recv_ms, exch_ms=ev.exch_ms, where=ev.where,
                    bids=ev.bids, asks=ev.asks)
        prev_u = ev.last
        i += 1


def read_events(paths: Sequence[Path], symbols: Mapping[str, str], skipped: Any = None,
                resyncs: list[str] | None = None) -> Iterator[Event]:
    depth, snaps, trade_streams = classify(paths, symbols, skipped)
    streams: list[Iterator[Event]] = []
    for symbol, market in symbols.items():
        events = sorted(depth[symbol], key=lambda d: d.recv_ms)  # stable: capture order
        streams.append(synchronise(symbol, market, events, snaps[symbol], resyncs))
    streams.extend(iter(t) for t in trade_streams)
    return merge(streams)


# -- export -----------------------------------------------------------------------------------


def export_binance(recording: Sequence[Path], out_dir: Path, *, symbols: Mapping[str, str]) -> dict[str, Path]:
    """A recording as Binance captures: depth.jsonl.gz, trades.jsonl.gz, snapshots.jsonl (with recv_ms)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "depth": out_dir / "depth.jsonl.gz",
        "trades": out_dir / "trades.jsonl.gz",
        "snapshots": out_dir / "snapshots.jsonl",
    }
    update_id: dict[str, int] = {}
    with gzip.open(paths["depth"], "wt", encoding="utf-8") as depth, \
            gzip.open(paths["trades"], "wt", encoding="utf-8") as trades, \
            paths["snapshots"].open("w", encoding="utf-8") as snaps:
        for record in read_recording(recording):
            kind, market, frame = record.get("k"), record.get("m"), record.get("f")
            if not isinstance(market, str) or market not in symbols or not isinstance(frame, dict):
                continue
            symbol = symbols[market]
            t = int(record["t"])
            ts = int(frame.get("ts") or t)
            data: Any = frame.get("data")  # recorded JSON, as the venue sent it
            if kind == "orderbook":
                last = update_id.get(symbol, 1000)
                if frame.get("type") == "SNAPSHOT":
                    # A recorded snapshot is a resynchronisation point: an empty update breaks the
                    # `pu` chain (pu = last − 1) and bridges a REST snapshot taken at last + 1.
                    snaps.write(json.dumps({"symbol": symbol, "lastUpdateId": last + 1, "E": ts, "T": ts,
                                            "bids": [[lv["p"], lv.get("q", lv.get("c"))] for lv in data["b"]],
                                            "asks": [[lv["p"], lv.get("q", lv.get("c"))] for lv in data["a"]]})
                                + "\n")
                    payload = {"e": "depthUpdate", "E": ts, "T": ts, "s": symbol, "U": last + 1, "u": last + 2,
                               "pu": last - 1, "b": [], "a": []}
                    depth.write(json.dumps({"recv_ms": t, "stream": f"{symbol.lower()}@depth@100ms",
                                            "data": payload}) + "\n")
                    update_id[symbol] = last + 2
                    continue
                n = len(data.get("b") or []) + len(data.get("a") or [])
                payload = {"e": "depthUpdate", "E": ts, "T": ts, "s": symbol, "U": last + 1, "u": last + max(n, 1),
                           "pu": last,
                           "b": [[lv["p"], lv.get("c", lv.get("q"))] for lv in data.get("b") or []],
                           "a": [[lv["p"], lv.get("c", lv.get("q"))] for lv in data.get("a") or []]}
                depth.write(json.dumps({"recv_ms": t, "stream": f"{symbol.lower()}@depth@100ms",
                                        "data": payload}) + "\n")
                update_id[symbol] = last + max(n, 1)
            elif kind == "trades":
                for tr in data:
                    payload = {"e": "aggTrade", "E": ts, "s": symbol, "a": tr["i"], "p": tr["p"], "q": tr["q"],
                               "f": tr["i"], "l": tr["i"], "T": int(tr.get("T") or ts), "m": tr["S"] == "SELL"}
                    trades.write(json.dumps({"recv_ms": t, "stream": f"{symbol.lower()}@aggTrade",
                                             "data": payload}) + "\n")
    return paths

