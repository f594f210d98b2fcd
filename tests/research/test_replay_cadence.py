"""The replay delivers recorded book deltas at the venue's cadence (issue #15's faster replay):
fewer frames reach the bot, the book it builds is the recorded one, the engine sees every frame."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from loguru import logger

from extmm.domain.book import Book
from extmm.markets import spec_from_market
from extmm.research.bench.replay import dataset_events, split_deltas
from extmm.research.record import record_synthetic
from extmm.sim.recording import read_recording
from extmm.sim.replay import replay_venue


@pytest.fixture(autouse=True)
def quiet_logs():
    logger.disable("")
    yield
    logger.enable("")


@pytest.fixture(scope="module")
def busy(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cadence")
    raw = folder / "raw.ndjson.gz"
    record_synthetic(raw, markets=["BTC-USD"], seconds=60, seed=5, kinds=["orderbook", "trades"])
    path = folder / "busy.ndjson.gz"
    split_deltas(raw, path)  # one frame per level update, as raw exchange feeds send them
    return path


async def _replay(path: Path, interval_ms: int) -> tuple[int, int, dict, dict, tuple]:
    spec = spec_from_market(read_recording([path]).markets["BTC-USD"])
    book = Book(spec)
    frames = 0
    async with replay_venue([path], markets=["BTC-USD"], book_interval_ms=interval_ms,
                            feed_latency_s=0.05) as replay:
        async with replay.venue.orderbook_stream("BTC-USD") as stream:

            async def read() -> None:
                nonlocal frames
                while True:
                    msg = await stream.receive()
                    assert book.apply(msg.data, msg.seq, msg.type) is None  # no gap, ever
                    frames += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await replay.finished.wait()
                await trio.sleep(0.2)  # the last window's frame and its latency
                nursery.cancel_scope.cancel()
        recorded = replay.engine.books["BTC-USD"]
        truth = (dict(recorded.bids), dict(recorded.asks))
        applied = dict(replay.driver.stats.frames)
        conflated = replay.driver.stats.conflated_frames
    return frames, conflated, applied, truth, book.levels()


async def test_merged_windows_give_the_bot_the_recorded_book_in_fewer_frames(busy, autojump_clock):
    every = await _replay(busy, 0)
    merged = await _replay(busy, 100)
    book_frames = dataset_events(busy, "BTC-USD")["book_frames"]
    assert every[0] == book_frames and every[1] == 0  # every recorded frame, once
    assert merged[1] > 0 and merged[0] + merged[1] == book_frames  # delivered + merged away
    assert merged[0] * 3 < every[0]
    assert every[2] == merged[2]  # the matching engine applied every recorded frame either way
    for _, _, _, truth, levels in (every, merged):
        assert levels == truth  # the bot's book ends exactly as the recording's
