"""The tick-to-wire latency bench and the simulator's probe mode.

Pairing of book frames with order requests is checked with made-up times; the ASGI taps
on a probe simulator served in this process with a hand-driven client; the whole bench
end to end as a subprocess (simulator in a third process), asserting only that it
measured something coherent — timings are reported, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from functools import partial

import httpx
import pytest
import trio
import trio_websocket
from hypothesis import given
from hypothesis import strategies as st

from extmm.domain.units import Side
from extmm.markets import bundled_spec
from extmm.research.bench._latency_bot import LatencyOptions, bench_config, signing_floor
from extmm.research.bench.latency import percentile
from extmm.sim.probe import LatencyProbe, build_probe_engine, probe_market_objects
from extmm.sim.probe_server import ProbeHandle, _seq_of, serve_probe_simulator
from extmm.sim.probe_track import MarketTrack, ProbeFrame, ProbeSettings, grid_cycle
from extmm.venue.signing import OrderSigner
from extmm.venue.types import OrderRequest
from tests.botharness import sim_signer

START_MS = 1_790_000_000_000
UA = {"User-Agent": "extmm-tests/1"}

# -- the mid path and markets -------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=200))
def test_grid_cycle_visits_each_position_once_and_moves_at_most_two(levels: int) -> None:
    cycle = grid_cycle(levels)
    assert sorted(cycle) == list(range(2 * levels + 1))
    for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        assert 1 <= abs(a - b) <= 2


def test_probe_markets_are_distinct_copies_of_btc() -> None:
    markets = probe_market_objects(3)
    assert [m["name"] for m in markets] == ["P1-USD", "P2-USD", "P3-USD"]
    assert len({m["l2Config"]["syntheticId"] for m in markets}) == 3
    assert all(m["tradingConfig"] == probe_market_objects(1)[0]["tradingConfig"] for m in markets)


def test_probe_engine_book_stands_still_without_the_probe() -> None:
    engine = build_probe_engine(2, start_ms=START_MS)
    before = {name: engine.book_snapshot(name, depth=1) for name in engine.market_names()}
    engine.advance(START_MS + 60_000)
    for name, snapshot in before.items():
        after = engine.book_snapshot(name, depth=1)
        assert (after.bids, after.asks) == (snapshot.bids, snapshot.asks)
        assert engine.public_trades(name) == []


def test_seq_is_read_from_the_envelope_tail() -> None:
    assert _seq_of('{"type":"DELTA","data":{"m":"P1-USD","b":[]},"ts":1,"seq":42}') == 42
    assert _seq_of('{"data":{"seq":7}}') is None
    assert _seq_of("garbage") is None


# -- pairing ------------------------------------------------------------------------------------------


def order_body(market: str, side: Side, price: int, external_id: str = "x") -> bytes:
    return json.dumps({"market": market, "side": side.value, "price": str(price), "id": external_id}).encode()


def running_probe(settings: ProbeSettings | None = None) -> tuple[LatencyProbe, MarketTrack]:
    """A probe with one calibrated market (quotes 40 ticks either side of a mid of 1000)."""
    settings = settings or ProbeSettings(step_ticks=6, levels=3, settle_s=0.5)
    probe = LatencyProbe(settings, clock=lambda: 0.0)
    track = MarketTrack(bundled_spec("BTC-USD"), 1000, settings)
    probe.tracks["BTC-USD"] = track
    assert not track.calibrate([("b1", 960)], [("a1", 1040)], 10.0, settings.settle_s)
    assert not track.calibrate([("b1", 960)], [("a1", 1040)], 10.4, settings.settle_s)
    assert track.calibrate([("b1", 960)], [("a1", 1040)], 10.5, settings.settle_s)
    assert (track.bid_offset, track.ask_offset) == (40, 40)
    track.state = "running"
    return probe, track


def add_frame(probe: LatencyProbe, track: MarketTrack, written_at: float | None, seq: int) -> ProbeFrame:
    frame = probe.note_frame(track, track.advance(), pushed_at=0.0, seqs=(seq,))
    if written_at is not None:
        probe.on_frame_written(track.name, seq, written_at)
    return frame


def test_calibration_needs_one_steady_quote_a_side() -> None:
    track = MarketTrack(bundled_spec("BTC-USD"), 1000, ProbeSettings())
    assert not track.calibrate([("b1", 960), ("b2", 950)], [("a1", 1040)], 0.0, 0.0)
    assert not track.calibrate([("b1", 960)], [], 1.0, 0.0)
    assert not track.calibrate([("b1", 960)], [("a1", 1040)], 2.0, 0.3)
    assert not track.calibrate([("b2", 961)], [("a1", 1040)], 2.5, 0.3)  # changed: the clock restarts
    assert track.calibrate([("b2", 961)], [("a1", 1040)], 2.9, 0.3)
    assert (track.bid_offset, track.ask_offset) == (39, 40)


def test_an_order_answers_the_newest_written_frame_with_its_price() -> None:
    probe, track = running_probe()
    first = add_frame(probe, track, written_at=1.0, seq=5)  # mid 1012
    second = add_frame(probe, track, written_at=1.1, seq=6)  # mid 1024
    assert (first.mid_ticks, second.mid_ticks) == (1012, 1024)
    late = probe.on_order(order_body("BTC-USD", Side.BUY, 1012 - 40 - 1, "late"), 1.25)
    assert late is not None and late.frame == first.number
    assert late.latency_s == pytest.approx(0.25)
    fresh = probe.on_order(order_body("BTC-USD", Side.SELL, 1024 + 40 + 2, "fresh"), 1.15)
    assert fresh is not None and fresh.frame == second.number and fresh.external_id == "fresh"
    assert fresh.latency_s == pytest.approx(0.05)
    # the same frame and side again (a retry) is not a second sample
    assert probe.on_order(order_body("BTC-USD", Side.SELL, 1024 + 40), 1.2) is None
    assert track.repeats == 1
    assert [s.external_id for s in probe.samples] == ["late", "fresh"]


def test_frames_not_yet_written_and_prices_between_frames_do_not_match() -> None:
    probe, track = running_probe()
    frame = add_frame(probe, track, written_at=None, seq=1)
    assert probe.on_order(order_body("BTC-USD", Side.BUY, frame.mid_ticks - 40), 0.5) is None
    probe.on_frame_written(track.name, 1, 0.6)
    assert probe.on_order(order_body("BTC-USD", Side.BUY, frame.mid_ticks - 40), 0.55) is None  # before
    assert probe.on_order(order_body("BTC-USD", Side.BUY, frame.mid_ticks - 40 + 3), 0.7) is None  # between
    assert track.unmatched == 3 and track.matched == 0
    assert probe.on_order(order_body("BTC-USD", Side.BUY, frame.mid_ticks - 40), 0.7) is not None
    assert probe.on_order(order_body("ETH-USD", Side.BUY, 100), 0.7) is None  # not a probe market
    assert probe.on_order(b"{not json", 0.7) is None
    assert probe.on_order(order_body("BTC-USD", Side.BUY, 1).replace(b'"1"', b'"abc"'), 0.7) is None
    assert probe.malformed_orders == 2
    assert track.matched == 1


def test_frames_older_than_a_cycle_are_forgotten() -> None:
    probe, track = running_probe()
    frames = [add_frame(probe, track, written_at=float(i), seq=i) for i in range(len(track.cycle) + 1)]
    assert frames[0].mid_ticks == frames[-1].mid_ticks
    answer = probe.on_order(order_body("BTC-USD", Side.BUY, frames[0].mid_ticks - 40), 100.0)
    assert answer is not None and answer.frame == frames[-1].number


def test_percentile_is_nearest_rank() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 0.5) == 3.0
    assert percentile(values, 0.99) == 5.0
    assert percentile(values, 1.0) == 5.0
    assert percentile(values, 0.0) == 1.0
    assert percentile([], 0.5) is None


def test_bench_config_quotes_at_a_fixed_distance_and_answers_every_move() -> None:
    cfg = bench_config(["P1-USD", "P2-USD"], LatencyOptions())
    assert [m.name for m in cfg.enabled_markets] == ["P1-USD", "P2-USD"]
    assert cfg.replace_coalesce_ms == 0
    for market in cfg.markets:
        assert (market.alpha, market.beta, market.k, market.replace_threshold_bps) == (0, 0, 0, 0)
        assert market.model.type == "seed" and market.model.funding_horizon_s == 0


def test_signing_floor_times_every_order() -> None:
    from extmm.research.bench.sign import SDK_TEST_CREDENTIALS
    from extmm.venue.endpoints import SN_MAIN

    market = probe_market_objects(1)[0]
    orders = [
        OrderRequest(market="P1-USD", side=Side.BUY, qty=Decimal("0.001"), price=Decimal(84000 + i),
                     external_id=f"floor-{i}", expiry_ms=START_MS, max_fee_rate=Decimal(0))
        for i in range(5)
    ]
    times = signing_floor(orders, SDK_TEST_CREDENTIALS, SN_MAIN, [market])
    assert len(times) == 5 and all(t > 0 for t in times)
    assert signing_floor([], SDK_TEST_CREDENTIALS, SN_MAIN, [market]) == []


# -- the taps, on a real socket ----------------------------------------------------------------------


def signer_for(handle: ProbeHandle) -> OrderSigner:
    return sim_signer(handle.sim)


async def test_taps_stamp_frames_and_orders_on_a_served_probe() -> None:
    settings = ProbeSettings(rate_hz=5.0, step_ticks=6, levels=3, settle_s=0.05, calibrate_timeout_s=5.0)
    async with trio.open_nursery() as nursery:
        handle: ProbeHandle = await nursery.start(
            partial(serve_probe_simulator, markets=1, settings=settings, seed=3, start_ms=START_MS)
        )
        probe, signer = handle.probe, signer_for(handle)
        track = probe.tracks["P1-USD"]
        spec = track.spec
        offset = 100  # far enough that the still test quotes never meet the moving crowd

        def order(ext: str, side: Side, ticks: int, cancel_id: str | None = None) -> bytes:
            return signer.sign_json(OrderRequest(
                market="P1-USD", side=side, qty=Decimal("0.001"), price=spec.ticks_to_price(ticks),
                external_id=ext, expiry_ms=handle.sim.runner.now_ms() + 3_600_000,
                max_fee_rate=Decimal("0.0005"), post_only=True, cancel_id=cancel_id))

        headers = {**UA, "X-Api-Key": handle.sim.account.api_key, "Content-Type": "application/json"}
        async with (
            httpx.AsyncClient(base_url=handle.sim.rest_url, headers=headers) as rest,
            httpx.AsyncClient(base_url=handle.probe_url) as control,
            trio_websocket.open_websocket_url(
                handle.sim.stream_url + "/orderbooks/P1-USD", extra_headers=[(b"User-Agent", b"t")]
            ) as ws,
        ):
            async def drain() -> None:
                try:
                    while True:
                        await ws.get_message()
                except trio_websocket.ConnectionClosed:
                    pass

            nursery.start_soon(drain)
            mid = track.mid_ticks
            for ext, side, ticks in (("bid-0", Side.BUY, mid - offset), ("ask-0", Side.SELL, mid + offset)):
                assert (await rest.post("/user/order", content=order(ext, side, ticks))).status_code == 200
            assert (await control.get("/latency")).json()["state"] == "idle"
            assert (await control.post("/start")).status_code == 200
            with trio.fail_after(10):
                while True:
                    state = (await control.get("/latency", params={"samples": "0"})).json()["state"]
                    if state == "running" and any(f.written_at is not None for f in track.frames):
                        break
                    await trio.sleep(0.01)
            assert (track.bid_offset, track.ask_offset) == (offset, offset)
            frame = next(f for f in reversed(track.frames) if f.written_at is not None)
            answer = order("bid-1", Side.BUY, frame.mid_ticks - offset, cancel_id="bid-0")
            assert (await rest.post("/user/order", content=answer)).status_code == 200
            between = order("bid-2", Side.BUY, frame.mid_ticks - offset - 3)
            assert (await rest.post("/user/order", content=between)).status_code == 200
            bad = await rest.post("/user/order", content=b"{oops")
            assert bad.status_code == 400  # the tap does not get in the handler's way
            assert (await control.post("/stop")).json()["state"] == "stopped"
            report = (await control.get("/latency")).json()
        nursery.cancel_scope.cancel()
    [sample] = report["samples"]
    assert (sample["external_id"], sample["side"], sample["frame"]) == ("bid-1", "BUY", frame.number)
    assert sample["received_at"] >= sample["written_at"] >= sample["pushed_at"]
    stats = report["markets"]["P1-USD"]
    assert (stats["matched"], stats["unmatched"]) == (1, 1)
    assert stats["frames_written"] >= 1 and stats["frames"] >= stats["frames_written"]
    assert report["malformed_orders"] == 1


# -- end to end -----------------------------------------------------------------------------------------


def test_bench_latency_end_to_end_prints_one_coherent_json_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "extmm", "bench", "latency", "--markets", "1", "--rate", "10", "--duration", "4"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert set(result) == {"p50_ms", "p99_ms", "max_ms", "floor_ms", "samples"}
    assert result["samples"] > 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    # the floor is signing alone, which the full path also does
    assert 0 < result["floor_ms"] < result["p50_ms"]
    [detail_line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("bench latency detail: ")]
    detail = json.loads(detail_line.removeprefix("bench latency detail: "))
    market = detail["probe"]["markets"]["P1-USD"]
    assert market["matched"] == result["samples"]
    assert result["samples"] <= 2 * market["frames"]  # a frame is answered at most once per side
    if len(os.sched_getaffinity(0)) >= 2:  # the bot and the simulator got a core each
        cpus = detail["cpus"]
        assert len(cpus["bot"]) == 1 and cpus["bot"][0] not in cpus["simulator"]


def test_cpu_plan_gives_the_bot_one_core_and_the_simulator_the_rest(monkeypatch) -> None:
    from extmm.research.bench._latency_bot import LatencyOptions
    from extmm.research.bench._latency_sim import cpu_plan

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2})
    assert cpu_plan(LatencyOptions()) == {"bot": {0}, "simulator": {1, 2}}
    assert cpu_plan(LatencyOptions(pin_cpus=False)) is None
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {3})
    assert cpu_plan(LatencyOptions()) is None
