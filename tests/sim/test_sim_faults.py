"""Every fault knob of the simulator, seen from a client on the socket (httpx, trio-websocket).

Each test turns one knob (by flag text or at runtime through `handle.faults`) and checks
what a venue client would observe: status codes and bodies, close codes, sequence gaps,
garbage frames, silence on a still-open socket, rejected orders, early DMS expiry.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from extmm.domain.units import Side
from extmm.sim.faults import FaultController, FaultSpec, FaultSpecError, parse_duration, parse_faults
from extmm.sim.server import SimHandle, serve_simulator
from extmm.venue.types import OrderRequest
from tests.botharness import sim_signer

START_MS = 1_790_000_000_000
UA = {"User-Agent": "extmm-tests/1"}
WS_UA = [(b"User-Agent", b"extmm-tests/1")]


async def start_sim(nursery: trio.Nursery, **options: Any) -> SimHandle:
    options.setdefault("start_ms", START_MS)
    options.setdefault("seed", 11)
    return await nursery.start(partial(serve_simulator, **options))


def rest_client(sim: SimHandle) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=sim.rest_url, headers={**UA, "X-Api-Key": sim.account.api_key})


def signed_order(sim: SimHandle, external_id: str, *, nonce: int = 500) -> dict[str, Any]:
    signer = sim_signer(sim, nonce_start=nonce)
    mid = Decimal(str(sim.engine.mid("BTC-USD")))
    return signer.sign(
        OrderRequest(
            market="BTC-USD",
            side=Side.BUY,
            qty=Decimal("0.00100"),
            price=(mid * Decimal("0.995")).quantize(Decimal(1)),
            external_id=external_id,
            expiry_ms=sim.runner.now_ms() + 3_600_000,
            max_fee_rate=Decimal("0.0005"),
            post_only=True,
        )
    )


def book_ws(sim: SimHandle, market: str = "BTC-USD"):
    return trio_websocket.open_websocket_url(
        f"{sim.stream_url}/orderbooks/{market}", extra_headers=WS_UA, max_message_size=2**24
    )


def account_ws(sim: SimHandle):
    return trio_websocket.open_websocket_url(
        f"{sim.stream_url}/account", extra_headers=[*WS_UA, (b"X-Api-Key", sim.account.api_key.encode())]
    )


async def read_json(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    return json.loads(await ws.get_message())


# -- the flag ---------------------------------------------------------------------------------------


def test_fault_flag_parses_every_knob():
    spec = parse_faults(
        "latency=200ms,http429=0.2,http5xx=0.1,http5xx_applied=0.5,ws_drop_every=5s,seq_skip=0.01,"
        "malformed=0.01,stall=10s,stall_every=2m,reject_storm=0.5,reject_mode=rest,dms_early=1"
    )
    assert spec == FaultSpec(
        latency_s=0.2,
        http429=0.2,
        http5xx=0.1,
        http5xx_applied=0.5,
        ws_drop_every_s=5.0,
        seq_skip=0.01,
        malformed=0.01,
        stall_s=10.0,
        stall_every_s=120.0,
        reject_storm=0.5,
        reject_mode="rest",
        dms_early_s=1.0,
    )
    assert parse_faults("") == FaultSpec() and parse_faults(None) == FaultSpec()
    assert not FaultSpec().active and spec.active
    assert parse_duration("1.5") == 1.5 and parse_duration("250ms") == 0.25


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("nonsense=1", "unknown fault 'nonsense'"),
        ("http429=2", "between 0 and 1"),
        ("latency=fast", "duration"),
        ("latency", "knob=value"),
        ("reject_mode=sometimes", "engine or rest"),
        ("stall_every=0s", "positive"),
    ],
)
def test_fault_flag_errors_name_the_problem(text, needle):
    with pytest.raises(FaultSpecError, match=needle):
        parse_faults(text)


def test_periodic_stall_windows_follow_the_clock():
    now = [100.0]
    controller = FaultController(parse_faults("stall=2s,stall_every=10s"), clock=lambda: now[0])
    observed = []
    for t in (0, 5, 9.9, 10, 11.9, 12, 19, 20.5, 22.5):
        now[0] = 100.0 + t
        observed.append(controller.books_stalled("BTC-USD"))
    assert observed == [False, False, False, True, True, False, False, True, False]


def test_probabilistic_knobs_are_seeded():
    def decisions(seed: int) -> list[Any]:
        c = FaultController(
            parse_faults("http429=0.3,seq_skip=0.3,malformed=0.3"), seed=seed, clock=lambda: 0.0
        )
        return [(c.rest_fault(), c.frame_faults()) for _ in range(50)]

    assert decisions(1) == decisions(1)
    assert decisions(1) != decisions(2)
    statuses = [fault.http_status for fault, _ in decisions(1) if fault is not None]
    assert statuses and set(statuses) == {429}


# -- REST ----------------------------------------------------------------------------------------------


async def test_latency_delays_rest_responses(nursery):
    sim = await start_sim(nursery, faults="latency=300ms")
    async with rest_client(sim) as client:
        started = trio.current_time()
        assert (await client.get("/info/starknet")).status_code == 200
        # A lower bound only: the server sleeps at least this long before answering.
        assert trio.current_time() - started >= 0.3
        sim.faults.configure(latency_s=0.0)
        assert sim.faults.rest_latency_s() == 0.0


async def test_http429_by_probability_and_by_burst(nursery):
    sim = await start_sim(nursery, faults="http429=1")
    async with rest_client(sim) as client:
        response = await client.get("/info/markets")
        assert response.status_code == 429
        assert response.json() == {"status": "ERROR", "error": {"code": 429, "message": "Too Many Requests"}}
        sim.faults.clear()
        assert (await client.get("/info/markets")).status_code == 200

        sim.faults.burst_429(0.5)
        assert (await client.get("/user/balance")).status_code == 429
        await trio.sleep(0.6)
        assert (await client.get("/user/balance")).status_code == 200
    assert sim.faults.statistics()["rest_429"] == 2


async def test_http5xx_bursts_and_ambiguous_writes(nursery):
    sim = await start_sim(nursery, faults="http5xx=1")
    async with rest_client(sim) as client:
        response = await client.get("/user/positions")
        assert response.status_code == 500
        assert response.json()["error"] == {"code": 1006, "message": "Internal Server Error"}

        # Not applied: the order does not exist.
        assert (await client.post("/user/order", json=signed_order(sim, "x-1", nonce=1))).status_code == 500
        # Applied anyway: the client sees 500 but the order rests (it must look it up).
        sim.faults.configure(http5xx_applied=1.0)
        assert (await client.post("/user/order", json=signed_order(sim, "x-2", nonce=2))).status_code == 500
        sim.faults.clear()
        assert (await client.get("/user/orders/external/x-1")).json()["data"] == []
        placed = (await client.get("/user/orders/external/x-2")).json()["data"]
        assert [o["status"] for o in placed] == ["NEW"]

        sim.faults.burst_5xx(0.3)
        assert (await client.get("/info/markets")).status_code == 500
        await trio.sleep(0.4)
        assert (await client.get("/info/markets")).status_code == 200


async def test_reject_storm_engine_mode_rejects_on_the_account_stream(nursery):
    sim = await start_sim(nursery)
    sim.faults.reject_orders(count=1, mode="engine")
    async with account_ws(sim) as ws, rest_client(sim) as client:
        for _ in range(3):
            await read_json(ws)
        ack = await client.post("/user/order", json=signed_order(sim, "s-1", nonce=10))
        assert ack.status_code == 200
        update = await read_json(ws)
        order = update["data"]["orders"][0]
        assert (order["externalId"], order["status"], order["statusReason"]) == (
            "s-1",
            "REJECTED",
            "POST_ONLY_FAILED",
        )
        # The storm was one order long: the next one rests.
        await client.post("/user/order", json=signed_order(sim, "s-2", nonce=11))
        assert (await read_json(ws))["data"]["orders"][0]["status"] == "NEW"


async def test_reject_storm_rest_mode_refuses_with_1006(nursery):
    sim = await start_sim(nursery, faults="reject_storm=1,reject_mode=rest")
    async with rest_client(sim) as client:
        response = await client.post("/user/order", json=signed_order(sim, "s-3", nonce=12))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == 1006
        assert (await client.get("/user/orders/external/s-3")).json()["data"] == []
        assert (await client.post("/user/order", json=signed_order(sim, "s-4", nonce=13))).status_code == 400
    assert sim.faults.statistics()["rejected_orders"] == 2


async def test_dms_early_and_fire_now(nursery):
    sim = await start_sim(nursery, faults="dms_early=1s")
    async with account_ws(sim) as ws, rest_client(sim) as client:
        for _ in range(3):
            await read_json(ws)
        await client.post("/user/order", json=signed_order(sim, "d-1", nonce=20))
        assert (await read_json(ws))["data"]["orders"][0]["status"] == "NEW"
        armed_at = sim.engine.now_ms
        await client.post("/user/deadmanswitch", params={"countdownTime": 120})
        # The venue was asked for 120 s but fires after about one second.
        assert sim.engine.dms_deadline(sim.account.account_id) - armed_at < 60_000
        with trio.fail_after(10):
            cancelled = await read_json(ws)
        assert cancelled["data"]["orders"][0]["status"] == "CANCELLED"

        sim.faults.clear()
        await client.post("/user/order", json=signed_order(sim, "d-2", nonce=21))
        await read_json(ws)
        await client.post("/user/deadmanswitch", params={"countdownTime": 120})
        assert sim.faults.fire_dms() == 1
        fired = await read_json(ws)
        assert (fired["data"]["orders"][0]["externalId"], fired["data"]["orders"][0]["status"]) == (
            "d-2",
            "CANCELLED",
        )
        assert sim.engine.dms_deadline(sim.account.account_id) is None
        assert sim.faults.fire_dms() == 0  # nothing armed any more


# -- streams --------------------------------------------------------------------------------------------


async def test_drop_connections_closes_every_stream(nursery):
    sim = await start_sim(nursery)
    async with book_ws(sim) as book, account_ws(sim) as account:
        await book.get_message()
        await account.get_message()
        assert sim.runner.statistics()["subscriptions"] == {"orderbook": 1, "account": 1}
        assert sim.faults.drop_connections() == 2
        for ws in (book, account):
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert closed.value.reason.code == 1012
    assert sim.faults.statistics()["ws_drops"] == 2


async def test_periodic_drops(nursery):
    sim = await start_sim(nursery, faults="ws_drop_every=300ms")
    async with book_ws(sim) as ws:
        with trio.fail_after(10), pytest.raises(trio_websocket.ConnectionClosed) as closed:
            while True:
                await ws.get_message()
        assert closed.value.reason.code == 1012


async def test_seq_skip_shows_as_a_gap(nursery):
    sim = await start_sim(nursery)
    async with book_ws(sim) as ws:
        assert (await read_json(ws))["seq"] == 1
        assert (await read_json(ws))["seq"] == 2
        sim.faults.skip_seq(1)
        assert (await read_json(ws))["seq"] == 4
        assert (await read_json(ws))["seq"] == 5


async def test_seq_skip_by_probability(nursery):
    sim = await start_sim(nursery, faults="seq_skip=1")
    async with book_ws(sim) as ws:
        seqs = [(await read_json(ws))["seq"] for _ in range(3)]
    assert seqs == [2, 4, 6]


async def test_malformed_frames_precede_intact_ones(nursery):
    sim = await start_sim(nursery, seed=5)
    async with book_ws(sim) as ws:
        assert (await read_json(ws))["seq"] == 1
        sim.faults.send_malformed(2)
        garbage: list[str] = []
        seqs: list[int] = []
        while len(seqs) < 3:
            text = await ws.get_message()
            try:
                seqs.append(json.loads(text)["seq"])
            except json.JSONDecodeError:
                garbage.append(text)
        assert len(garbage) == 2
        assert seqs == [2, 3, 4]  # garbage takes no seq: the stream itself stays whole


async def test_stall_silences_book_streams_but_keeps_them_open(nursery):
    sim = await start_sim(nursery)
    async with book_ws(sim) as ws, book_ws(sim, "ETH-USD") as eth:
        last = (await read_json(ws))["seq"]
        await read_json(eth)
        sim.faults.stall_books(2.0, market="BTC-USD")
        # Frames flushed just before the stall may still be in flight; after them, silence.
        with trio.move_on_after(0.3):
            while True:
                last = (await read_json(ws))["seq"]
        silent = True
        with trio.move_on_after(0.8):
            await ws.get_message()
            silent = False
        assert silent
        assert (await read_json(eth))["seq"] >= 2  # other markets are not stalled
        with trio.fail_after(5):
            resumed = await read_json(ws)
        assert resumed["seq"] == last + 1
        assert resumed["type"] == "DELTA" and (resumed["data"]["b"] or resumed["data"]["a"])
    assert sim.faults.statistics()["stalls"] == 1


async def test_stream_latency_delays_frames(nursery):
    sim = await start_sim(nursery, faults="latency=300ms")
    before = trio.current_time()
    sub = sim.runner.subscribe("account", account_id=sim.account.account_id)
    frame = await sub.frames.receive()
    assert frame.due >= before + 0.3  # queued at once, deliverable only after the delay
    sim.runner.unsubscribe(sub)
    connecting = trio.current_time()
    async with book_ws(sim) as ws:
        await ws.get_message()
        # Lower bound only: the first frame cannot arrive before the injected delay.
        assert trio.current_time() - connecting >= 0.3


def test_dms_early_shortens_the_countdown_but_never_disarms():
    controller = FaultController(parse_faults("dms_early=2.5s"), clock=lambda: 0.0)
    assert [controller.dms_countdown_s(s) for s in (120, 2, 0)] == [3, 2, 0]
    assert FaultController(clock=lambda: 0.0).dms_countdown_s(120) == 120
