"""The simulator on a real socket: REST paths, envelopes, auth, stream frames and their seq.

Clients are plain httpx and trio-websocket, as a venue client would be. Book streams are
checked by rebuilding the book from the frames (SPEC §5.3 rule: set level := `c`) and
comparing with the engine's own book once the engine is frozen and a heartbeat shows the
client has caught up.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from decimal import Decimal
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
import wsproto
import wsproto.events

from extmm.domain.units import Side
from extmm.sim.engine import EngineConfig, SimEngine
from extmm.sim.runner import SimRunner
from extmm.sim.server import SimHandle, serve_simulator
from extmm.sim.subscription import OutFrame
from extmm.venue.signing import OrderSigner
from extmm.venue.types import OrderRequest
from tests.botharness import sim_signer

START_MS = 1_790_000_000_000
UA = {"User-Agent": "extmm-tests/1"}
WS_UA = [(b"User-Agent", b"extmm-tests/1")]


# -- helpers ---------------------------------------------------------------------------------------


async def start_sim(nursery: trio.Nursery, **options: Any) -> SimHandle:
    options.setdefault("start_ms", START_MS)
    options.setdefault("seed", 7)
    return await nursery.start(partial(serve_simulator, **options))


def signer_for(sim: SimHandle) -> OrderSigner:
    return sim_signer(sim, nonce_start=1000)


def passive_order(
    sim: SimHandle, external_id: str, *, side: Side = Side.BUY, bps: int = 50, cancel_id: str | None = None
) -> OrderRequest:
    """A post-only BTC-USD order `bps` away from the mid: rests, never crosses."""
    mid = Decimal(str(sim.engine.mid("BTC-USD")))
    factor = (
        (Decimal(1) - Decimal(bps) / 10_000) if side is Side.BUY else (Decimal(1) + Decimal(bps) / 10_000)
    )
    price = (mid * factor).quantize(Decimal(1))
    return OrderRequest(
        market="BTC-USD",
        side=side,
        qty=Decimal("0.00100"),
        price=price,
        external_id=external_id,
        expiry_ms=sim.runner.now_ms() + 3_600_000,
        max_fee_rate=Decimal("0.0005"),
        post_only=True,
        cancel_id=cancel_id,
    )


def rest_client(sim: SimHandle, *, private: bool = True) -> httpx.AsyncClient:
    headers = dict(UA)
    if private:
        headers["X-Api-Key"] = sim.account.api_key
    return httpx.AsyncClient(base_url=sim.rest_url, headers=headers)


def ws_url(sim: SimHandle, path: str) -> str:
    return sim.stream_url + path


def account_headers(sim: SimHandle) -> list[tuple[bytes, bytes]]:
    return [*WS_UA, (b"X-Api-Key", sim.account.api_key.encode())]


class BookMirror:
    """Client-side book per SPEC §5.3: snapshot replaces; delta sets level := c."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.last_seq: int | None = None

    def apply(self, frame: dict[str, Any]) -> None:
        seq = frame["seq"]
        assert self.last_seq is None or seq == self.last_seq + 1, (self.last_seq, seq)
        self.last_seq = seq
        data = frame["data"]
        assert frame["type"] == data["t"]
        if frame["type"] == "SNAPSHOT":
            for level in data["b"] + data["a"]:
                assert "c" not in level
            self.bids = {Decimal(x["p"]): Decimal(x["q"]) for x in data["b"]}
            self.asks = {Decimal(x["p"]): Decimal(x["q"]) for x in data["a"]}
            return
        for side, book in ((data["b"], self.bids), (data["a"], self.asks)):
            for level in side:
                price, change, absolute = Decimal(level["p"]), Decimal(level["q"]), Decimal(level["c"])
                assert book.get(price, Decimal(0)) + change == absolute
                if absolute == 0:
                    book.pop(price, None)
                else:
                    book[price] = absolute

    def as_engine_levels(self) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        bids = sorted(self.bids.items(), key=lambda kv: -kv[0])
        asks = sorted(self.asks.items())
        return bids, asks


def engine_levels(
    engine: SimEngine, market: str
) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
    snap = engine.book_snapshot(market)
    return [(lv.price, lv.qty) for lv in snap.bids], [(lv.price, lv.qty) for lv in snap.asks]


async def read_json(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    return json.loads(await ws.get_message())


async def read_until_heartbeat(ws: trio_websocket.WebSocketConnection, mirror: BookMirror) -> None:
    """Apply frames until an empty DELTA: the client then holds everything the server flushed."""
    while True:
        frame = await read_json(ws)
        mirror.apply(frame)
        data = frame["data"]
        if frame["type"] == "DELTA" and not data["b"] and not data["a"]:
            return


# -- public REST --------------------------------------------------------------------------------------


async def test_public_rest_endpoints_use_the_venue_envelope(nursery):
    sim = await start_sim(nursery)
    async with rest_client(sim, private=False) as client:
        markets = (await client.get("/info/markets")).json()
        assert markets["status"] == "OK"
        assert [m["name"] for m in markets["data"]] == ["BTC-USD", "ETH-USD"]
        btc = markets["data"][0]
        for key in (
            "type",
            "isRfq",
            "isOffHours",
            "tradingHours",
            "tradingConfig",
            "l2Config",
            "marketStats",
        ):
            assert key in btc
        assert isinstance(btc["marketStats"]["nextFundingRate"], int)

        only_eth = (await client.get("/info/markets", params=[("market", "ETH-USD")])).json()
        assert [m["name"] for m in only_eth["data"]] == ["ETH-USD"]

        stats = (await client.get("/info/markets/BTC-USD/stats")).json()["data"]
        assert Decimal(stats["markPrice"]) == sim.engine.mark_price("BTC-USD")

        sim.runner.frozen = True
        book = (await client.get("/info/markets/BTC-USD/orderbook")).json()["data"]
        bids, asks = engine_levels(sim.engine, "BTC-USD")
        assert [(Decimal(x["price"]), Decimal(x["qty"])) for x in book["bid"]] == bids
        assert [(Decimal(x["price"]), Decimal(x["qty"])) for x in book["ask"]] == asks
        assert book["market"] == "BTC-USD"
        sim.runner.frozen = False

        domain = (await client.get("/info/starknet")).json()["data"]
        assert domain == {"name": "Perpetuals", "version": "v0", "chainId": "SN_SEPOLIA", "revision": 1}

        trades = (await client.get("/info/markets/BTC-USD/trades")).json()
        assert trades["status"] == "OK" and isinstance(trades["data"], list)

        funding = await client.get("/info/BTC-USD/funding", params={"startTime": 0, "endTime": START_MS * 2})
        assert funding.status_code == 200 and isinstance(funding.json()["data"], list)


async def test_public_rest_errors_have_codes_and_statuses(nursery):
    sim = await start_sim(nursery)
    async with rest_client(sim, private=False) as client:
        missing = await client.get("/info/markets/DOGE-USD/stats")
        assert missing.status_code == 404
        assert missing.json() == {
            "status": "ERROR",
            "error": {"code": 1001, "message": "market 'DOGE-USD' not found"},
        }

        no_range = await client.get("/info/BTC-USD/funding")
        assert no_range.status_code == 400
        assert no_range.json()["error"]["code"] == 400

        unknown_path = await client.get("/no/such/path")
        assert unknown_path.status_code == 404
        assert unknown_path.json()["status"] == "ERROR"

        wrong_method = await client.put("/info/markets")
        assert wrong_method.status_code == 405
        assert wrong_method.json()["error"]["code"] == 405


async def test_user_agent_is_required_on_rest_and_websocket(nursery):
    sim = await start_sim(nursery)
    async with httpx.AsyncClient(base_url=sim.rest_url) as client:
        client.headers.pop("User-Agent", None)
        response = await client.get("/info/markets")
        assert response.status_code == 400
        assert response.json()["error"] == {"code": 400, "message": "User-Agent header is required"}

    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket_url(ws_url(sim, "/orderbooks/BTC-USD")):
            pass
    assert rejected.value.status_code == 400


async def test_private_endpoints_need_a_valid_api_key(nursery):
    sim = await start_sim(nursery)
    async with rest_client(sim, private=False) as client:
        for path in ("/user/balance", "/user/orders", "/user/positions", "/user/account/info"):
            response = await client.get(path)
            assert response.status_code == 401, path
            assert response.json()["error"]["code"] == 401
        wrong = await client.get("/user/balance", headers={"X-Api-Key": "not-a-key"})
        assert wrong.status_code == 401

    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket_url(ws_url(sim, "/account"), extra_headers=WS_UA):
            pass
    assert rejected.value.status_code == 401


# -- private REST --------------------------------------------------------------------------------------


async def test_account_reads(nursery):
    sim = await start_sim(nursery, balance=Decimal(5000))
    async with rest_client(sim) as client:
        info = (await client.get("/user/account/info")).json()["data"]
        assert info["accountId"] == sim.account.account_id
        assert info["l2Vault"] == sim.account.vault
        assert info["l2Key"] == sim.account.stark_public_key

        balance = (await client.get("/user/balance")).json()["data"]
        assert Decimal(balance["balance"]) == 5000 and Decimal(balance["equity"]) == 5000

        assert (await client.get("/user/positions")).json() == {"status": "OK", "data": []}
        fees = (await client.get("/user/fees", params=[("market", "BTC-USD")])).json()["data"]
        assert fees == [
            {"market": "BTC-USD", "makerFeeRate": "0.0000", "takerFeeRate": "0.00025", "builderFeeRate": "0"}
        ]
        leverage = (await client.get("/user/leverage")).json()["data"]
        assert {row["market"] for row in leverage} == {"BTC-USD", "ETH-USD"}
        assert (await client.get("/user/funding/history")).json()["data"] == []


async def test_zero_balance_is_404(nursery):
    sim = await start_sim(nursery)
    broke = sim.engine.create_account(balance=0, api_key="broke-key")
    async with httpx.AsyncClient(base_url=sim.rest_url, headers={**UA, "X-Api-Key": broke.api_key}) as client:
        response = await client.get("/user/balance")
    assert response.status_code == 404
    assert response.json()["status"] == "ERROR"


async def test_order_lifecycle_over_rest(nursery):
    sim = await start_sim(nursery)
    signer = signer_for(sim)
    async with rest_client(sim) as client:
        body = signer.sign(passive_order(sim, "t-bid-1"))
        ack = (await client.post("/user/order", json=body)).json()
        assert ack["status"] == "OK"
        order_id = ack["data"]["id"]
        assert isinstance(order_id, int) and ack["data"]["externalId"] == "t-bid-1"

        open_orders = (await client.get("/user/orders")).json()["data"]
        assert [(o["id"], o["status"], o["postOnly"]) for o in open_orders] == [(order_id, "NEW", True)]
        one = (await client.get(f"/user/orders/{order_id}")).json()["data"]
        assert one["externalId"] == "t-bid-1" and one["qty"] == "0.00100"
        by_external = (await client.get("/user/orders/external/t-bid-1")).json()["data"]
        assert [o["id"] for o in by_external] == [order_id]

        # Replace: new id, cancelId = old externalId; the old one ends CANCELLED/ORDER_REPLACED.
        replace = signer.sign(passive_order(sim, "t-bid-2", bps=60, cancel_id="t-bid-1"))
        new_id = (await client.post("/user/order", json=replace)).json()["data"]["id"]
        old = (await client.get(f"/user/orders/{order_id}")).json()["data"]
        assert (old["status"], old["statusReason"]) == ("CANCELLED", "ORDER_REPLACED")

        assert (await client.delete(f"/user/order/{new_id}")).json() == {"status": "OK"}
        assert (await client.get("/user/orders")).json()["data"] == []

        await client.post("/user/order", json=signer.sign(passive_order(sim, "t-ask-1", side=Side.SELL)))
        assert (await client.delete("/user/order", params={"externalId": "t-ask-1"})).json()["status"] == "OK"

        for i in range(3):
            await client.post("/user/order", json=signer.sign(passive_order(sim, f"t-m-{i}", bps=40 + i)))
        assert len((await client.get("/user/orders")).json()["data"]) == 3
        mass = await client.post("/user/order/massCancel", json={"markets": ["BTC-USD"], "cancelAll": False})
        assert mass.json() == {"status": "OK"}
        assert (await client.get("/user/orders")).json()["data"] == []

        history = (await client.get("/user/orders/history", params={"limit": 2})).json()
        assert history["pagination"]["count"] == 2
        assert [o["status"] for o in history["data"]] == ["CANCELLED", "CANCELLED"]
        ids = [o["id"] for o in history["data"]]
        assert ids == sorted(ids, reverse=True)
        rest = (await client.get("/user/orders/history", params={"cursor": ids[-1]})).json()["data"]
        assert all(o["id"] < ids[-1] for o in rest) and len(rest) == 4


async def test_order_rejections_are_error_envelopes(nursery):
    sim = await start_sim(nursery)
    signer = signer_for(sim)
    async with rest_client(sim) as client:
        good = signer.sign(passive_order(sim, "r-1"))

        off_tick = dict(good, price=str(Decimal(good["price"]) + Decimal("0.5")))
        response = await client.post("/user/order", json=off_tick)
        assert response.status_code == 400 and response.json()["error"]["code"] == 1125

        tampered = dict(good, qty="0.00200")
        response = await client.post("/user/order", json=tampered)
        assert response.status_code == 400 and response.json()["error"]["code"] == 1101

        not_json = await client.post(
            "/user/order", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 400 and not_json.json()["error"]["code"] == 400

        assert (await client.post("/user/order", json=good)).status_code == 200
        duplicate = await client.post("/user/order", json=good)
        assert duplicate.status_code == 400 and duplicate.json()["error"]["code"] == 1134

        unknown = await client.delete("/user/order/12345")
        assert unknown.status_code == 404
        bad_id = await client.get("/user/orders/abc")
        assert bad_id.status_code == 400
        empty_mass = await client.post("/user/order/massCancel", json={"cancelAll": False})
        assert empty_mass.status_code == 400


async def test_dead_mans_switch_cancels_orders_and_zero_disarms(nursery):
    sim = await start_sim(nursery)
    signer = signer_for(sim)
    async with rest_client(sim) as client:
        assert (await client.post("/user/deadmanswitch")).status_code == 400
        assert (await client.post("/user/deadmanswitch", params={"countdownTime": -1})).status_code == 400

        await client.post("/user/order", json=signer.sign(passive_order(sim, "d-1")))
        armed_after = sim.engine.now_ms
        assert (await client.post("/user/deadmanswitch", params={"countdownTime": 60})).json() == {
            "status": "OK"
        }
        # The runner moves the engine on in real time, also between the reply and this line.
        deadline = sim.engine.dms_deadline(sim.account.account_id)
        assert deadline is not None and armed_after + 60_000 <= deadline <= sim.engine.now_ms + 60_000
        await client.post("/user/deadmanswitch", params={"countdownTime": 0})
        assert sim.engine.dms_deadline(sim.account.account_id) is None

        async with trio_websocket.open_websocket_url(
            ws_url(sim, "/account"), extra_headers=account_headers(sim)
        ) as ws:
            await client.post("/user/deadmanswitch", params={"countdownTime": 1})
            with trio.fail_after(10):
                while True:
                    frame = await read_json(ws)
                    if frame["type"] == "ORDER" and not frame["data"]["isSnapshot"]:
                        break
        assert (await client.get("/user/orders")).json()["data"] == []
        order = (await client.get("/user/orders/external/d-1")).json()["data"][0]
        assert order["status"] == "CANCELLED"
        assert sim.engine.dms_deadline(sim.account.account_id) is None


# -- streams ----------------------------------------------------------------------------------------------


async def test_book_stream_snapshot_then_deltas_rebuild_the_engine_book(nursery):
    sim = await start_sim(nursery, heartbeat_s=0.3)
    mirror = BookMirror()
    async with trio_websocket.open_websocket_url(
        ws_url(sim, "/orderbooks/BTC-USD"), extra_headers=WS_UA, max_message_size=2**24
    ) as ws:
        first = await read_json(ws)
        assert first["type"] == "SNAPSHOT" and first["seq"] == 1
        assert first["data"]["m"] == "BTC-USD" and first["data"]["d"] == "f"
        assert set(first) == {"type", "data", "ts", "seq"}
        mirror.apply(first)
        deltas = 0
        while deltas < 5:
            frame = await read_json(ws)
            mirror.apply(frame)
            if frame["type"] == "DELTA" and (frame["data"]["b"] or frame["data"]["a"]):
                deltas += 1
                assert all("c" in lv for lv in frame["data"]["b"] + frame["data"]["a"])
        sim.runner.frozen = True
        await read_until_heartbeat(ws, mirror)
        assert mirror.as_engine_levels() == engine_levels(sim.engine, "BTC-USD")
        assert len(mirror.bids) > 100 and len(mirror.asks) > 100


async def test_periodic_snapshots_continue_the_sequence(nursery):
    sim = await start_sim(nursery, snapshot_interval_s=0.5)
    types: list[tuple[str, int]] = []
    async with trio_websocket.open_websocket_url(
        ws_url(sim, "/orderbooks/ETH-USD"), extra_headers=WS_UA, max_message_size=2**24
    ) as ws:
        while sum(1 for t, _ in types if t == "SNAPSHOT") < 3:
            frame = await read_json(ws)
            types.append((frame["type"], frame["seq"]))
    assert [seq for _, seq in types] == list(range(1, len(types) + 1))
    assert types[0][0] == "SNAPSHOT"
    assert any(t == "DELTA" for t, _ in types)


async def test_two_connections_count_seq_independently(nursery):
    sim = await start_sim(nursery)
    async with trio_websocket.open_websocket_url(
        ws_url(sim, "/orderbooks/BTC-USD"), extra_headers=WS_UA, max_message_size=2**24
    ) as one:
        for _ in range(3):
            await read_json(one)
        async with trio_websocket.open_websocket_url(
            ws_url(sim, "/orderbooks/BTC-USD"), extra_headers=WS_UA, max_message_size=2**24
        ) as two:
            frame = await read_json(two)
            assert (frame["type"], frame["seq"]) == ("SNAPSHOT", 1)
        assert (await read_json(one))["seq"] == 4


async def test_depth_one_stream_sends_top_of_book_snapshots(nursery):
    sim = await start_sim(nursery)
    async with trio_websocket.open_websocket_url(
        ws_url(sim, "/orderbooks/BTC-USD?depth=1"), extra_headers=WS_UA
    ) as ws:
        for expected_seq in (1, 2):
            frame = await read_json(ws)
            assert frame["type"] == "SNAPSHOT" and frame["seq"] == expected_seq
            assert frame["data"]["d"] == "1"
            assert len(frame["data"]["b"]) == 1 and len(frame["data"]["a"]) == 1


async def test_public_trade_mark_and_funding_streams(nursery):
    engine = SimEngine(
        EngineConfig(seed=3, funding_estimate_interval_ms=1000, mark_interval_ms=500), start_ms=START_MS
    )
    sim = await start_sim(nursery, engine=engine)
    async with trio_websocket.open_websocket_url(
        ws_url(sim, "/prices/mark/BTC-USD"), extra_headers=WS_UA
    ) as ws:
        frame = await read_json(ws)
        assert frame["type"] == "MP" and frame["data"]["m"] == "BTC-USD" and frame["data"]["ts"] == 0
        assert frame["seq"] == 1 and Decimal(frame["data"]["p"]) > 0  # the current mark, at once
        following = await read_json(ws)
        assert (following["type"], following["seq"]) == ("MP", 2)
    async with trio_websocket.open_websocket_url(
        ws_url(sim, "/prices/index/BTC-USD"), extra_headers=WS_UA
    ) as ws:
        frame = await read_json(ws)
        assert frame["type"] == "IP" and frame["data"]["m"] == "BTC-USD" and Decimal(frame["data"]["p"]) > 0
    async with trio_websocket.open_websocket_url(ws_url(sim, "/funding/BTC-USD"), extra_headers=WS_UA) as ws:
        frame = await read_json(ws)
        assert "type" not in frame
        assert set(frame["data"]) == {"m", "T", "f"} and frame["seq"] == 1
    async with trio_websocket.open_websocket_url(
        ws_url(sim, "/publicTrades/BTC-USD"), extra_headers=WS_UA
    ) as ws:
        with trio.fail_after(30):
            frame = await read_json(ws)
        assert "type" not in frame
        trade = frame["data"][0]
        assert set(trade) == {"i", "m", "S", "tT", "T", "p", "q"}
        assert isinstance(trade["i"], int) and trade["S"] in ("BUY", "SELL")


async def test_unknown_market_stream_is_refused(nursery):
    sim = await start_sim(nursery)
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket_url(
            ws_url(sim, "/orderbooks/NOPE-USD"), extra_headers=WS_UA
        ):
            pass
    assert rejected.value.status_code == 404


async def test_account_stream_snapshots_then_updates(nursery):
    sim = await start_sim(nursery)
    signer = signer_for(sim)
    async with rest_client(sim) as client:
        await client.post("/user/order", json=signer.sign(passive_order(sim, "a-0")))
        async with trio_websocket.open_websocket_url(
            ws_url(sim, "/account"), extra_headers=account_headers(sim)
        ) as ws:
            snapshots = [await read_json(ws) for _ in range(3)]
            assert [(f["type"], f["seq"]) for f in snapshots] == [
                ("ORDER", 1),
                ("BALANCE", 2),
                ("POSITION", 3),
            ]
            assert all(f["data"]["isSnapshot"] is True for f in snapshots)
            assert [o["externalId"] for o in snapshots[0]["data"]["orders"]] == ["a-0"]
            assert snapshots[1]["data"]["balance"]["collateralName"] == "USD"
            assert snapshots[2]["data"]["positions"] == []

            ack = (
                await client.post("/user/order", json=signer.sign(passive_order(sim, "a-1", bps=70)))
            ).json()
            update = await read_json(ws)
            assert update["seq"] == 4 and update["type"] == "ORDER"
            assert update["data"]["isSnapshot"] is False
            assert [(o["id"], o["status"]) for o in update["data"]["orders"]] == [(ack["data"]["id"], "NEW")]

            await client.delete(f"/user/order/{ack['data']['id']}")
            cancelled = await read_json(ws)
            assert cancelled["seq"] == 5
            assert cancelled["data"]["orders"][0]["status"] == "CANCELLED"


async def test_account_stream_reports_fills_with_positions_and_balance(nursery):
    sim = await start_sim(nursery)
    signer = signer_for(sim)
    async with trio_websocket.open_websocket_url(
        ws_url(sim, "/account"), extra_headers=account_headers(sim)
    ) as ws:
        for _ in range(3):
            await read_json(ws)
        # A taker buy through the touch fills at once.
        best_ask = sim.engine.book_snapshot("BTC-USD", depth=1).asks[0].price
        request = passive_order(sim, "f-1")
        taker = OrderRequest(
            market="BTC-USD",
            side=Side.BUY,
            qty=Decimal("0.00010"),
            price=best_ask + 20,
            external_id="f-1",
            expiry_ms=request.expiry_ms,
            max_fee_rate=Decimal("0.0005"),
            post_only=False,
            time_in_force="IOC",
        )
        async with rest_client(sim) as client:
            assert (await client.post("/user/order", json=signer.sign(taker))).status_code == 200
        seen: dict[str, dict[str, Any]] = {}
        with trio.fail_after(10):
            while not {"ORDER", "TRADE", "POSITION", "BALANCE"} <= set(seen):
                frame = await read_json(ws)
                seen[frame["type"]] = frame["data"]
        assert seen["ORDER"]["orders"][-1]["status"] == "FILLED"
        fill = seen["TRADE"]["trades"][0]
        assert fill["externalOrderId"] == "f-1" and fill["isTaker"] is True
        assert seen["POSITION"]["positions"][0]["side"] == "LONG"
        assert Decimal(seen["BALANCE"]["balance"]["balance"]) < 10_000  # the taker fee


async def test_server_sends_websocket_pings(nursery):
    sim = await start_sim(nursery, ping_interval_s=0.2)
    stream = await trio.open_tcp_stream(sim.host, sim.port)
    async with stream:
        client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(
            client.send(
                wsproto.events.Request(
                    host=f"{sim.host}:{sim.port}",
                    target="/stream.extended.exchange/v1/funding/BTC-USD",
                    extra_headers=WS_UA,
                )
            )
        )
        pings = 0
        accepted = False
        with trio.fail_after(10):
            while pings < 2:
                data = await stream.receive_some()
                assert data, "server closed the connection"
                client.receive_data(data)
                for event in client.events():
                    if isinstance(event, wsproto.events.AcceptConnection):
                        accepted = True
                    elif isinstance(event, wsproto.events.Ping):
                        pings += 1
                        await stream.send_all(client.send(event.response()))
        assert accepted and pings == 2


# -- back-pressure ------------------------------------------------------------------------------------------


async def test_slow_consumer_is_disconnected_not_buffered(nursery):
    sim = await start_sim(nursery)
    runner: SimRunner = sim.runner
    sub = runner.subscribe("orderbook", market="BTC-USD", capacity=4)
    with trio.fail_after(10):
        await sub.wait_closed()
    assert sub.close_code == 1008
    assert sub not in runner.subscriptions()
    # What was queued before the overflow is still readable, then the channel ends.
    frames: list[OutFrame] = [frame async for frame in sub.frames]
    assert len(frames) == 4
    assert [json.loads(f.text)["seq"] for f in frames] == [1, 2, 3, 4]


# -- the `sim` command ---------------------------------------------------------------------------------------


async def test_sim_command_announces_itself_and_stops_on_sigint():
    command = [
        sys.executable,
        "-m",
        "extmm",
        "sim",
        "--seed",
        "3",
        "--markets",
        "ETH-USD",
        "--faults",
        "latency=1ms",
    ]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(
                    trio.run_process, command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False
                )
            )
            assert process.stdout is not None
            buffer = b""
            while b"\n" not in buffer:
                chunk = await process.stdout.receive_some()
                assert chunk, "sim exited before announcing itself"
                buffer += chunk
            announcement = json.loads(buffer.split(b"\n", 1)[0])
            assert set(announcement) == {"rest", "stream", "account"}
            assert announcement["rest"].startswith("http://127.0.0.1:") and announcement["rest"].endswith(
                "/api/v1"
            )
            assert announcement["stream"].endswith("/stream.extended.exchange/v1")
            account = announcement["account"]
            assert set(account) == {"api_key", "vault", "stark_private_key", "stark_public_key"}
            assert account["stark_private_key"].startswith("0x") and account["stark_public_key"].startswith(
                "0x"
            )

            headers = {**UA, "X-Api-Key": account["api_key"]}
            async with httpx.AsyncClient(base_url=announcement["rest"], headers=headers) as client:
                markets = (await client.get("/info/markets")).json()["data"]
                assert [m["name"] for m in markets] == ["ETH-USD"]
                info = (await client.get("/user/account/info")).json()["data"]
                assert info["l2Key"] == account["stark_public_key"] and info["l2Vault"] == account["vault"]

            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0


async def test_all_markets_book_stream_names_each_market(nursery):
    sim = await start_sim(nursery)
    async with trio_websocket.open_websocket_url(
        ws_url(sim, "/orderbooks"), extra_headers=WS_UA, max_message_size=2**24
    ) as ws:
        first_two = [await read_json(ws) for _ in range(2)]
    assert [(f["type"], f["seq"]) for f in first_two] == [("SNAPSHOT", 1), ("SNAPSHOT", 2)]
    assert {f["data"]["m"] for f in first_two} == {"BTC-USD", "ETH-USD"}
