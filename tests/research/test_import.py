"""`python -m extmm import`: Tardis CSV and Binance USD-M captures into recordings (issue #15).

The input files are generated here from the publishers' documented formats."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from loguru import logger

from extmm.cli import main as cli_main
from extmm.config import load_config
from extmm.research.backtest.observe import book_levels
from extmm.research.backtest.options import BacktestOptions
from extmm.research.backtest.run import backtest
from extmm.research.dataimport.binance_futures import export_binance
from extmm.research.dataimport.tardis import BOOK_COLUMNS, TICKER_COLUMNS, TRADE_COLUMNS, export_tardis
from extmm.research.record import record_synthetic
from extmm.sim.recording import read_recording

US = 1_000  # µs per ms
T0 = 1_790_000_000_000  # ms


@pytest.fixture(autouse=True)
def quiet_logs():
    logger.disable("")
    yield
    logger.enable("")


def _csv_gz(path: Path, columns: list[str], rows: list[list]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    path.write_bytes(gzip.compress(buf.getvalue().encode()))
    return path


def _import(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = cli_main(["import", *argv])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


def _frames(path: Path) -> list[dict]:
    return [r for r in read_recording([path]) if r.get("k") not in ("header", "open")]


# -- Tardis ------------------------------------------------------------------------------------


def _tardis_files(tmp: Path) -> tuple[list[Path], dict]:
    ex, sym = "binance-futures", "BTCUSDT"
    book: list[list] = []
    # a snapshot in two messages (one run), 3 bids + 3 asks, plus a zero row (not a level)
    t = (T0 + 100) * US
    for i, (side, price, amount) in enumerate(
        [("bid", "6443.9", "1.5"), ("bid", "6443.8", "2"), ("bid", "6443.5", "0.004"),
         ("ask", "6444.0", "1"), ("ask", "6444.1", "0.25"), ("ask", "6444.5", "3"), ("ask", "6450", "0")]
    ):
        book.append([ex, sym, t - 90 * US, t + (i // 4) * US, "true", side, price, amount])
    # updates: three messages; one removes a level that is not in the book (ignored)
    t = (T0 + 200) * US
    book += [[ex, sym, t - 50 * US, t, "false", "bid", "6443.9", "1.25"],
             [ex, sym, t - 50 * US, t, "false", "ask", "6444.0", "0"],
             [ex, sym, t - 50 * US, t, "false", "ask", "6447.7", "0"]]  # absent: ignored
    book += [[ex, sym, t + 40 * US, t + 100 * US, "false", "ask", "6444.2", "0.5"]]
    book += [["binance-futures", "ETHUSDT", t + 40 * US, t + 100 * US, "false", "ask", "200.1", "1"]]  # unmapped
    book += [[ex, sym, t + 90 * US, t + 150 * US, "false", "bid", "6444.0", "0.1"]]
    # a new snapshot run after updates: the book is reset (2 levels)
    t = (T0 + 400) * US
    book += [[ex, sym, t - 10 * US, t, "true", "bid", "6440.0", "1"], [ex, sym, t - 10 * US, t, "true", "ask", "6441.0", "2"]]
    book += [[ex, sym, t + 90 * US, t + 100 * US, "false", "bid", "6440.5", "0.3"]]
    trades = [
        [ex, sym, (T0 + 210) * US, (T0 + 220) * US, 1001, "buy", "6444.1", "0.2"],
        [ex, sym, (T0 + 210) * US, (T0 + 220) * US, 1002, "sell", "6443.9", "0.1"],
        [ex, sym, (T0 + 300) * US, (T0 + 320) * US, 1003, "unknown", "6444.2", "0.05"],  # at the ask: buy
        [ex, sym, (T0 + 300) * US, (T0 + 330) * US, 1004, "unknown", "6444.05", "0.05"],  # inside: skipped
    ]
    ticker = [
        [ex, sym, (T0 + 150) * US, (T0 + 160) * US, (T0 + 3_600_000) * US, "0.0001", "0.0002", "100", "6444", "6443.5", "6443.7"],
        [ex, sym, (T0 + 350) * US, (T0 + 360) * US, (T0 + 3_600_000) * US, "0.0001", "0.0002", "100", "6444", "6443.5", "6443.8"],
    ]
    paths = [
        _csv_gz(tmp / "binance-futures_incremental_book_L2_2020-04-01_BTCUSDT.csv.gz", BOOK_COLUMNS, book),
        _csv_gz(tmp / "binance-futures_trades_2020-04-01_BTCUSDT.csv.gz", TRADE_COLUMNS, trades),
        _csv_gz(tmp / "binance-futures_derivative_ticker_2020-04-01_BTCUSDT.csv.gz", TICKER_COLUMNS, ticker),
    ]
    expected = {
        "level_updates": 6 + 4 + 2 + 1,  # snapshot levels, updates (absent removal ignored), 2nd snapshot, 1
        "trades": 3,
        "snapshots": 2,
        "book_frames": 2 + 3 + 1,
        "marks": 2,
        "funding": 1,
        "ignored_removals": 1,
    }
    return paths, expected


def test_tardis_csv_imports_with_exact_counts(tmp_path, capsys):
    paths, expected = _tardis_files(tmp_path)
    out = tmp_path / "btc.ndjson.gz"
    code, line, err = _import(capsys, "--format", "tardis", "--input", *map(str, paths),
                              "--map", "BTCUSDT=BTC-USD", "--out", str(out))
    assert code == 0, err
    for key, value in expected.items():
        assert line[key] == value, key
    assert line["skipped"] == {"book rows of unmapped symbol 'ETHUSDT'": 1,
                               "trades of unknown side inside the spread": 1}
    reader = read_recording([out])
    tc = reader.header["markets"]["BTC-USD"]["tradingConfig"]
    assert (tc["minPriceChange"], tc["minOrderSizeChange"]) == ("0.1", "0.001")  # what the data needs
    frames = _frames(out)
    book = [r for r in frames if r["k"] == "orderbook"]
    assert sum(book_levels(r["f"]["data"]) for r in book) == expected["level_updates"]
    assert [r["f"]["type"] for r in book] == ["SNAPSHOT", "DELTA", "DELTA", "DELTA", "SNAPSHOT", "DELTA"]
    assert book[0]["t"] == T0 + 100 and book[0]["f"]["ts"] == T0 + 10  # receive time, exchange time
    assert [r["f"]["seq"] for r in book] == list(range(1, 7))
    first = book[0]["f"]["data"]
    assert [lv["p"] for lv in first["b"]] == ["6443.9", "6443.8", "6443.5"]
    assert book[1]["f"]["data"]["b"] == [{"q": "-0.250", "p": "6443.9", "c": "1.250"}]
    assert book[4]["f"]["data"] == {"t": "SNAPSHOT", "m": "BTC-USD", "b": [{"p": "6440.0", "q": "1.000"}],
                                    "a": [{"p": "6441.0", "q": "2.000"}]}
    prints = [p for r in frames if r["k"] == "trades" for p in r["f"]["data"]]
    assert [(p["i"], p["S"]) for p in prints] == [(1001, "BUY"), (1002, "SELL"), (1003, "BUY")]
    marks = [r["f"]["data"]["p"] for r in frames if r["k"] == "mark"]
    assert marks == ["6443.7", "6443.8"]
    funding = [r["f"]["data"] for r in frames if r["k"] == "funding"]
    assert funding == [{"m": "BTC-USD", "T": T0 + 3_600_000, "f": "0.0001"}]


def test_tardis_prices_off_the_given_tick_name_the_first_bad_line(tmp_path, capsys):
    paths, _ = _tardis_files(tmp_path)
    out = tmp_path / "x.ndjson.gz"
    code, line, err = _import(capsys, "--format", "tardis", "--input", *map(str, paths),
                              "--map", "BTCUSDT=BTC-USD", "--tick", "0.2", "--out", str(out))
    assert code == 2 and line is None and "incremental_book_L2" in err and ".csv.gz:2:" in err
    assert "6443.9 is not a multiple of the tick 0.2" in err
    assert not out.exists()


# -- Binance USD-M ---------------------------------------------------------------------------


def _depth(U, u, pu, b, a, E, wrap=True, recv=None):
    payload = {"e": "depthUpdate", "E": E, "T": E - 3, "s": "BTCUSDT", "U": U, "u": u, "pu": pu, "b": b, "a": a}
    obj = {"stream": "btcusdt@depth@100ms", "data": payload} if wrap else payload
    if recv is not None:
        obj = {"recv_ms": recv, **obj}
    return json.dumps(obj)


def _binance_files(tmp: Path, *, second_snapshot: bool = True) -> tuple[list[Path], dict]:
    E = T0
    lines = [
        _depth(90, 95, 80, [["100.0", "1"]], [], E + 0),  # u < lastUpdateId (100): dropped
        _depth(96, 103, 95, [["100.1", "2"]], [["100.9", "0"]], E + 100, wrap=False),  # bridges 100: first
        _depth(104, 110, 103, [["100.1", "0"], ["99.5", "4"]], [["101.0", "3"]], E + 200, recv=E + 230),
        _depth(111, 115, 110, [], [["100.8", "0.5"]], E + 300),
        # the chain breaks (pu 120 ≠ 115): resynchronise at the snapshot with lastUpdateId 130
        _depth(121, 125, 120, [["99.0", "1"]], [], E + 400),  # u < 130: dropped
        _depth(126, 133, 125, [["99.9", "7"]], [], E + 500),  # bridges 130
        _depth(134, 140, 133, [], [["101.5", "1"]], E + 600),
    ]
    depth = tmp / "btcusdt@depth@100ms.jsonl.gz"
    depth.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    snap1 = tmp / "BTCUSDT-depth-snapshot-1.json"
    snap1.write_text(json.dumps({"lastUpdateId": 100, "E": E + 50, "T": E + 49,
                                 "bids": [["100.0", "5"], ["99.8", "1"]],
                                 "asks": [["100.9", "2"], ["101.2", "1"]]}, indent=1))
    paths = [depth, snap1]
    if second_snapshot:
        snap2 = tmp / "BTCUSDT-depth-snapshot-2.json"
        snap2.write_text(json.dumps({"lastUpdateId": 130, "E": E + 450, "T": E + 449,
                                     "bids": [["99.9", "6"]], "asks": [["100.7", "1"]]}))
        paths.append(snap2)
    trades = tmp / "btcusdt@aggTrade.jsonl"
    trades.write_text("\n".join([
        json.dumps({"e": "aggTrade", "E": E + 150, "s": "BTCUSDT", "a": 5933014, "p": "100.9", "q": "0.5",
                    "f": 100, "l": 105, "T": E + 149, "m": False}),
        json.dumps({"stream": "btcusdt@aggTrade", "data": {"e": "aggTrade", "E": E + 250, "s": "BTCUSDT",
                    "a": 5933015, "p": "100.0", "q": "1", "f": 106, "l": 106, "T": E + 248, "m": True}}),
        json.dumps({"e": "trade", "E": E + 350, "T": E + 349, "s": "BTCUSDT", "t": 12345, "p": "100.8",
                    "q": "0.25", "X": "MARKET", "m": False}),
        json.dumps({"e": "aggTrade", "E": E + 360, "s": "ETHUSDT", "a": 1, "p": "2000", "q": "1",
                    "f": 1, "l": 1, "T": E + 360, "m": False}),
    ]) + "\n")
    paths.append(trades)
    expected = {
        # snapshot 1 (4 levels) + updates 2 (absent removal of 100.9? no: 100.9 is in the book)
        "level_updates": 4 + 2 + 3 + 1 + 2 + 1 + 1,
        "snapshots": 2,
        "trades": 3,
        "book_frames": 1 + 3 + 1 + 2,
        "ignored_removals": 0,
    }
    return paths, expected


def test_binance_futures_captures_synchronise_by_the_rules(tmp_path, capsys):
    paths, expected = _binance_files(tmp_path)
    out = tmp_path / "btc.ndjson.gz"
    code, line, err = _import(capsys, "--format", "binance-futures", "--input", *map(str, paths),
                              "--map", "BTCUSDT=BTC-USD", "--out", str(out))
    assert code == 0, err
    for key, value in expected.items():
        assert line[key] == value, key
    assert line["resyncs"] == 1
    assert line["skipped"] == {"aggTrade of unmapped symbol 'ETHUSDT'": 1}
    frames = _frames(out)
    book = [r for r in frames if r["k"] == "orderbook"]
    assert [r["f"]["type"] for r in book] == ["SNAPSHOT", "DELTA", "DELTA", "DELTA", "SNAPSHOT", "DELTA", "DELTA"]
    # the first snapshot comes with the update that bridges it; receive time: recv_ms, else E
    assert book[0]["t"] == T0 + 100 and book[2]["t"] == T0 + 230 and book[2]["f"]["ts"] == T0 + 197
    assert book[1]["f"]["data"]["a"] == [{"q": "-2.00", "p": "100.9", "c": "0.00"}]
    assert book[4]["f"]["data"]["b"] == [{"p": "99.9", "q": "6.00"}]
    prints = [p for r in frames if r["k"] == "trades" for p in r["f"]["data"]]
    # m=false: the buyer took (BUY); m=true: the seller took (SELL)
    assert [(p["i"], p["S"], p["p"]) for p in prints] == [(5933014, "BUY", "100.9"), (5933015, "SELL", "100.0"),
                                                         (12345, "BUY", "100.8")]
    assert sum(book_levels(r["f"]["data"]) for r in book) == expected["level_updates"]


def test_binance_futures_a_broken_chain_without_a_later_snapshot_stops_clearly(tmp_path, capsys):
    paths, _ = _binance_files(tmp_path, second_snapshot=False)
    out = tmp_path / "btc.ndjson.gz"
    code, line, err = _import(capsys, "--format", "binance-futures", "--input", *map(str, paths),
                              "--map", "BTCUSDT=BTC-USD", "--out", str(out))
    assert code == 2 and line is None and not out.exists()
    assert "btcusdt@depth@100ms.jsonl.gz:5" in err and "pu=120, previous u=115" in err


def test_import_refuses_bad_arguments(tmp_path, capsys):
    paths, _ = _tardis_files(tmp_path)
    code, _, err = _import(capsys, "--format", "tardis", "--input", str(paths[0]), "--map", "BTCUSDT",
                           "--out", str(tmp_path / "o.gz"))
    assert code == 2 and "SYMBOL=MARKET" in err
    code, _, err = _import(capsys, "--format", "tardis", "--input", str(tmp_path / "nope.csv"),
                           "--map", "A=BTC-USD", "--out", str(tmp_path / "o.gz"))
    assert code == 2 and "no such file" in err


# -- round trips -----------------------------------------------------------------------------


def _result(cfg, path: Path) -> dict:
    line = backtest(cfg, BacktestOptions(hours=1.0, replay=(path,))).to_json(wall_seconds=1.0)
    for key in ("replay", "wall_seconds", "events_per_s", "market_events_per_s", "messages_per_s",
                "replayed_frames"):
        line.pop(key)
    return line


def test_a_recording_exported_in_each_format_and_imported_again_replays_the_same(tmp_path, capsys):
    raw = tmp_path / "raw.ndjson.gz"
    record_synthetic(raw, markets=["BTC-USD"], seconds=120, seed=3, kinds=["orderbook", "trades"])

    def via(fmt: str, src: Path, name: str) -> Path:
        folder = tmp_path / name
        exported = (export_tardis if fmt == "tardis" else export_binance)(
            [src], folder, symbols={"BTC-USD": "BTCUSDT"}
        )
        out = tmp_path / f"{name}.ndjson.gz"
        code, _, err = _import(capsys, "--format", fmt, "--input", *map(str, exported.values()),
                               "--map", "BTCUSDT=BTC-USD", "--out", str(out))
        assert code == 0, err
        return out

    # CSV files carry no order between files within one millisecond: the first import puts
    # such frames in a fixed order (book, prints, mark, funding); that recording is the reference.
    reference = via("tardis", raw, "ref")
    ref_book = [r["f"] for r in _frames(reference) if r["k"] == "orderbook"]
    raw_book = [r["f"] for r in _frames(raw) if r["k"] == "orderbook"]
    def levels(frame: dict) -> tuple:
        snapshot = frame["type"] == "SNAPSHOT"
        return frame["type"], tuple(
            tuple((Decimal(lv["p"]), Decimal(lv["q"] if snapshot else lv["c"])) for lv in frame["data"][k])
            for k in ("b", "a")
        )

    assert [levels(f) for f in ref_book] == [levels(f) for f in raw_book]  # the same book, frame by frame
    raw_prints = Counter(json.dumps(p, sort_keys=True) for r in _frames(raw) if r["k"] == "trades" for p in r["f"]["data"])
    ref_prints = Counter(json.dumps(p, sort_keys=True) for r in _frames(reference) if r["k"] == "trades" for p in r["f"]["data"])
    assert raw_prints == ref_prints
    cfg = load_config("config/config.json")
    cfg = attrs.evolve(cfg, markets=[m for m in cfg.markets if m.name == "BTC-USD"])
    expected = _result(cfg, reference)
    assert expected["fills"] > 0
    again = via("tardis", reference, "tardis")
    assert [(r["t"], r["k"], r["f"]) for r in _frames(again)] == [(r["t"], r["k"], r["f"]) for r in _frames(reference)]
    assert _result(cfg, again) == expected
    assert _result(cfg, via("binance-futures", reference, "binance")) == expected
