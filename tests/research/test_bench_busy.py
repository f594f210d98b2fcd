"""`bench replay --deep-updates-per-s`: the busier recording has the same market at the
touch (same best prices at every instant, same trades) and about the asked-for extra
level updates, all on the market's grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from extmm.domain.l2 import L2Book
from extmm.markets import spec_from_market
from extmm.research.bench._busy import add_deep_updates
from extmm.research.bench.replay import dataset_events, split_deltas
from extmm.research.record import record_synthetic
from extmm.sim.recording import read_recording


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> tuple[Path, Path, int]:
    tmp = tmp_path_factory.mktemp("busy")
    raw, split, busy = tmp / "raw.ndjson.gz", tmp / "split.ndjson.gz", tmp / "busy.ndjson.gz"
    record_synthetic(raw, markets=["BTC-USD"], seconds=30, seed=5, kinds=("orderbook", "trades", "mark"))
    split_deltas(raw, split)
    added = add_deep_updates(split, busy, market="BTC-USD", per_s=400.0, seed=5)
    return split, busy, added


Touch = tuple[int | None, int, int | None, int]


def _touch(book: L2Book) -> Touch:
    bid, ask = book.best_bid, book.best_ask
    return bid, book.bids.get(bid, 0) if bid is not None else 0, ask, book.asks.get(ask, 0) if ask is not None else 0


def _touches(path: Path) -> list[tuple[int, Touch]]:
    """(time, touch: best bid and its size, best ask and its size) whenever the time moves
    on, after every frame of the last one."""
    reader = read_recording([path])
    book = L2Book(spec_from_market(reader.markets["BTC-USD"]))  # raises on a level off the grid
    out: list[tuple[int, Touch]] = []
    last = None
    for record in reader:
        if record.get("k") != "orderbook":
            continue
        t = record["t"]
        if last is not None and t != last:
            out.append((last, _touch(book)))
        frame = record["f"]
        book.apply(frame["type"], frame["data"])
        last = t
    out.append((last, _touch(book)))
    return out


def _book_at_end(path: Path) -> tuple[dict[int, int], dict[int, int]]:
    reader = read_recording([path])
    book = L2Book(spec_from_market(reader.markets["BTC-USD"]))
    for record in reader:
        if record.get("k") == "orderbook":
            book.apply(record["f"]["type"], record["f"]["data"])
    return book.bids, book.asks


def test_the_touch_and_the_trades_are_the_recordings_own(recordings):
    split, busy, added = recordings
    original = dict(_touches(split))
    busier = _touches(busy)
    assert len(busier) > len(original)
    at_original_times = [(t, touch) for t, touch in busier if t in original]
    assert len(at_original_times) == len(original)
    for t, touch in at_original_times:
        assert touch == original[t], t
    # Every change was undone: the books end the same.
    assert _book_at_end(busy) == _book_at_end(split)
    trades = [r["f"] for r in read_recording([split]) if r.get("k") == "trades"]
    assert [r["f"] for r in read_recording([busy]) if r.get("k") == "trades"] == trades


def test_about_the_asked_for_rate_of_level_updates_is_added(recordings):
    split, busy, added = recordings
    before, after = dataset_events(split, "BTC-USD"), dataset_events(busy, "BTC-USD")
    assert after["level_updates"] - before["level_updates"] == added
    assert 0.7 * 400 * 30 <= added <= 1.1 * 400 * 30  # changes at 200/s, most undone once
    seqs = [r["f"]["seq"] for r in read_recording([busy]) if r.get("k") == "orderbook"]
    assert seqs == list(range(1, len(seqs) + 1))
