"""`python -m extmm bench book` end to end on a small generated stream: one JSON line of
the documented shape, and best prices equal to a plain Decimal rebuild (no timings asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import extmm.research.bench.book as bench_book
from extmm.cli import main

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 1300  # three snapshots (~600 apart) and the deltas between them


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "book.jsonl"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/gen_book_stream.py"),
            "--out",
            str(out),
            "--frames",
            str(FRAMES),
            "--seed",
            "3",
        ],
        check=True,
    )
    return out


def reference_top(path: Path) -> tuple[Decimal, Decimal]:
    """Rebuild with Decimal keys: snapshots replace, deltas set `c` (0 deletes) or add `q`."""
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    for line in path.read_text().splitlines():
        data = json.loads(line)["data"]
        if data["t"] == "SNAPSHOT":
            bids = {Decimal(x["p"]): Decimal(x["q"]) for x in data["b"]}
            asks = {Decimal(x["p"]): Decimal(x["q"]) for x in data["a"]}
            continue
        for side, levels in ((bids, data["b"]), (asks, data["a"])):
            for x in levels:
                price = Decimal(x["p"])
                size = Decimal(x["c"]) if "c" in x else side.get(price, Decimal(0)) + Decimal(x["q"])
                if size > 0:
                    side[price] = size
                else:
                    side.pop(price, None)
    return max(bids), min(asks)


def test_generated_stream_has_the_documented_shape(stream: Path) -> None:
    frames = [json.loads(line) for line in stream.read_text().splitlines()]
    assert len(frames) == FRAMES
    assert [f["seq"] for f in frames] == list(range(1, FRAMES + 1))
    snapshots = [f for f in frames if f["type"] == "SNAPSHOT"]
    assert frames[0]["type"] == "SNAPSHOT" and 2 <= len(snapshots) <= 4
    for snap in snapshots:
        assert snap["data"]["t"] == "SNAPSHOT" and snap["data"]["m"] == "BTC-USD"
        assert 1200 <= len(snap["data"]["b"]) <= 1800 and 1200 <= len(snap["data"]["a"]) <= 1800
        assert all(set(level) == {"p", "q"} for level in snap["data"]["b"] + snap["data"]["a"])
    assert any("." in level["p"] for s in snapshots for level in s["data"]["b"])  # non-canonical
    deltas = [f["data"] for f in frames if f["type"] == "DELTA"]
    sizes = [len(d["b"]) + len(d["a"]) for d in deltas]
    assert min(sizes) == 0 and max(sizes) <= 8
    levels = [level for d in deltas for level in d["b"] + d["a"]]
    assert all(set(level) == {"p", "q", "c"} for level in levels)
    assert any(level["c"] == "0" for level in levels)  # removals


@pytest.mark.parametrize("decoder", ["auto", "json"])
def test_bench_book_prints_one_json_line_matching_the_reference(
    stream: Path, decoder: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "book", "--input", str(stream), "--sdk", "--json", decoder]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    result = json.loads(out[0])
    assert {"frames", "seconds", "frames_per_s", "best_bid", "best_ask"} <= result.keys()
    assert {"sdk_frames_per_s", "sdk_best_bid", "sdk_best_ask", "ratio"} <= result.keys()
    assert result["frames"] == FRAMES
    assert result["seconds"] > 0 and result["frames_per_s"] > 0 and result["sdk_frames_per_s"] > 0
    assert result["ratio"] > 0
    best_bid, best_ask = reference_top(stream)
    assert Decimal(result["best_bid"]) == best_bid and Decimal(result["best_ask"]) == best_ask
    assert result["sdk_best_bid"] == result["best_bid"] and result["sdk_best_ask"] == result["best_ask"]
    if decoder == "json":
        assert result["json"] == "json"


def test_bench_book_without_sdk(stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "book", "--input", str(stream), "--market", "BTC-USD"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"frames", "seconds", "frames_per_s", "best_bid", "best_ask", "json"}


def test_bench_book_fails_when_the_paths_disagree(
    stream: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_book, "run_sdk", lambda lines, market: (1.0, Decimal("1"), Decimal("2")))
    assert main(["bench", "book", "--input", str(stream), "--sdk"]) == 1
    assert "differ" in capsys.readouterr().err


def test_bench_without_a_name_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench"]) == 2
    assert "book" in capsys.readouterr().out
