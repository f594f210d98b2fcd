"""v1 streams against a small trio-websocket server on 127.0.0.1: seq, malformed, close, stall, account."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from extmm.venue.errors import AuthError, SequenceGap, StreamClosed
from extmm.venue.network import NetworkVenue
from extmm.venue.signing import Credentials
from extmm.venue.streams import StreamOptions, open_stream, orderbook_url
from extmm.venue.types import BalanceUpdate, OrdersUpdate, PositionsUpdate, TradesUpdate
from tests.apifixtures import FIXTURES

API_KEY = "stream-test-key"
CREDENTIALS = Credentials(
    api_key=API_KEY,
    vault=10002,
    stark_private_key="0x7a7ff6fd3cab02ccdcd4a572563f5976f8976899b03a39773795a3c486d4986",
    stark_public_key="0x61c5e7e8339b7d56f197f54ea91b776776690e3232313de0f2ecbd0ef76f466",
)
FAST = StreamOptions(stall_timeout_s=5.0, connect_timeout_s=5.0, disconnect_timeout_s=1.0)

Script = Callable[[WebSocketRequest, dict[str, Any]], Awaitable[None]]


def frame(name: str, **changes: Any) -> str:
    payload = json.loads((FIXTURES / name).read_text())
    payload.update(changes)
    return json.dumps(payload)


@asynccontextmanager
async def server(script: Script) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Serve `script(request, seen)` per connection; yields (base ws:// URL, seen)."""
    seen: dict[str, Any] = {}

    async def handler(request: WebSocketRequest) -> None:
        seen["path"] = request.path
        seen["headers"] = {k.decode().lower(): v.decode() for k, v in request.headers}
        await script(request, seen)

    async with trio.open_nursery() as nursery:
        ws_server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        yield f"ws://127.0.0.1:{ws_server.port}", seen
        nursery.cancel_scope.cancel()


def sending(*frames: str, then: str = "hold") -> Script:
    async def script(request: WebSocketRequest, seen: dict[str, Any]) -> None:
        ws = await request.accept()
        for text in frames:
            await ws.send_message(text)
        if then == "close":
            await ws.aclose(code=4000, reason="maintenance")
        else:
            await trio.sleep_forever()

    return script


async def test_book_stream_delivers_in_order_with_user_agent_and_no_api_key() -> None:
    snapshot = frame("v1_orderbook_snapshot_btc_mainnet.trimmed.json", seq=1)
    delta = frame("v1_orderbook_delta_btc_mainnet.trimmed.json", seq=2)
    async with server(sending(snapshot, delta)) as (url, seen):
        venue = NetworkVenue("http://unused.test/api/v1", url, stream_options=FAST, user_agent="extmm/test")
        async with venue.orderbook_stream("BTC-USD") as stream:
            first = await stream.receive()
            second = await stream.receive()
    assert (first.type, first.seq, second.type, second.seq) == ("SNAPSHOT", 1, "DELTA", 2)
    assert second.data["b"][0] == {"q": "-0.00005", "p": "63717", "c": "0.85928"}
    assert seen["path"] == "/orderbooks/BTC-USD"
    assert seen["headers"]["user-agent"] == "extmm/test"
    assert "x-api-key" not in seen["headers"]


async def test_book_stream_seq_gap_raises() -> None:
    frames = [frame("v1_orderbook_empty_delta_nvda.json", seq=s) for s in (174, 175, 177)]
    async with server(sending(*frames)) as (url, _):
        async with open_stream(url, user_agent="t", strict_seq=True, options=FAST) as stream:
            assert (await stream.receive()).seq == 174  # the first seq seen is the base
            assert (await stream.receive()).seq == 175
            with pytest.raises(SequenceGap) as caught:
                await stream.receive()
    assert (caught.value.expected, caught.value.got) == (176, 177)


async def test_trade_stream_tolerates_gaps_and_counts_them() -> None:
    frames = [frame("v1_public_trades_btc.json", seq=s) for s in (2, 5, 6)]
    async with server(sending(*frames)) as (url, seen):
        venue = NetworkVenue("http://unused.test/api/v1", url, stream_options=FAST)
        async with venue.public_trades_stream("BTC-USD") as stream:
            seqs = [(await stream.receive()).seq for _ in range(3)]
            stats = stream.statistics()
    assert seqs == [2, 5, 6]
    assert (stats.seq_skips, stats.delivered, stats.last_seq) == (1, 3, 6)
    assert seen["path"] == "/publicTrades/BTC-USD"


async def test_malformed_frames_are_skipped_and_counted() -> None:
    good = frame("v1_mark_price_btc_mainnet.json", seq=1)
    junk = ["not json at all", "[1, 2, 3]", json.dumps({"data": {}, "ts": 1}), json.dumps({"error": "x"})]
    async with server(sending(*junk, good)) as (url, seen):
        venue = NetworkVenue("http://unused.test/api/v1", url, stream_options=FAST)
        async with venue.mark_price_stream("BTC-USD") as stream:
            message = await stream.receive()
            stats = stream.statistics()
    assert (message.type, message.seq) == ("MP", 1)
    assert message.data["p"] == "63807.605956624996"
    assert (stats.frames, stats.malformed, stats.delivered) == (5, 4, 1)
    assert seen["path"] == "/prices/mark/BTC-USD"


async def test_server_close_raises_stream_closed_with_code_and_reason() -> None:
    async with server(sending(frame("v1_public_trades_btc.json", seq=1), then="close")) as (url, seen):
        venue = NetworkVenue("http://unused.test/api/v1", url, stream_options=FAST)
        async with venue.funding_stream("BTC-USD") as stream:
            await stream.receive()
            with pytest.raises(StreamClosed) as caught:
                await stream.receive()
    assert "4000" in str(caught.value)
    assert "maintenance" in str(caught.value)
    assert seen["path"] == "/funding/BTC-USD"


async def test_silent_stream_is_reported_stalled() -> None:
    options = StreamOptions(stall_timeout_s=0.2, disconnect_timeout_s=0.5)
    async with server(sending(frame("v1_orderbook_snapshot_btc_mainnet.trimmed.json", seq=1))) as (url, _):
        async with open_stream(url, user_agent="t", strict_seq=True, options=options) as stream:
            await stream.receive()
            with pytest.raises(StreamClosed, match="stalled"):
                await stream.receive()


async def test_snapshots_larger_than_the_library_default_are_accepted() -> None:
    levels = [{"p": str(10_000 + i), "q": "1.00000"} for i in range(60_000)]
    big = json.dumps(
        {
            "type": "SNAPSHOT",
            "data": {"t": "SNAPSHOT", "m": "BTC-USD", "b": levels, "a": []},
            "ts": 1,
            "seq": 1,
        }
    )
    assert len(big) > 1024 * 1024  # trio-websocket's default max_message_size
    async with server(sending(big)) as (url, _):
        async with open_stream(url, user_agent="t", strict_seq=True, options=FAST) as stream:
            message = await stream.receive()
    assert len(message.data["b"]) == 60_000


async def test_pings_are_answered_while_the_consumer_is_busy() -> None:
    outcome: dict[str, bool] = {}
    ping_settled = trio.Event()

    async def script(request: WebSocketRequest, seen: dict[str, Any]) -> None:
        ws = await request.accept()
        for seq in range(1, 6):
            await ws.send_message(frame("v1_public_trades_btc.json", seq=seq))
        with trio.move_on_after(1.0):
            await ws.ping()
            outcome["pong"] = True
        outcome.setdefault("pong", False)
        ping_settled.set()
        await trio.sleep_forever()

    async with server(script) as (url, _):
        async with open_stream(url, user_agent="t", strict_seq=False, options=FAST) as stream:
            with trio.move_on_after(1.5):
                await ping_settled.wait()  # busy elsewhere: not receiving at all
            assert (await stream.receive()).seq == 1
    assert outcome == {"pong": True}


async def test_account_stream_parses_snapshots_and_updates_and_skips_other_types() -> None:
    order = {
        "id": 1,
        "externalId": "extmm-r-BTC-USD-b-000001",
        "market": "BTC-USD",
        "type": "LIMIT",
        "side": "BUY",
        "status": "NEW",
        "price": "84000",
        "qty": "0.001",
        "createdTime": 1,
        "updatedTime": 1,
    }
    frames = [
        frame("v1_account_order_snapshot_empty.json"),  # seq 1
        frame("v1_account_balance_snapshot.json"),  # seq 2
        frame("v1_account_position_snapshot_empty.json"),  # seq 3
        json.dumps({"type": "DEPOSIT", "data": {"deposits": []}, "ts": 5, "seq": 4}),
        json.dumps({"type": "ORDER", "data": {"orders": [order]}, "ts": 6, "seq": 5}),
        frame("sdk_test_v1_account_trade_message.json", seq=6),
    ]
    async with server(sending(*frames)) as (url, seen):
        venue = NetworkVenue("http://unused.test/api/v1", url, CREDENTIALS, stream_options=FAST)
        async with venue.account_stream() as stream:
            updates = [await stream.receive() for _ in range(5)]
            stats = stream.statistics()
    orders, balance, positions, live, trades = updates
    assert orders == OrdersUpdate(orders=(), is_snapshot=True)
    assert isinstance(balance, BalanceUpdate) and balance.is_snapshot
    assert balance.balance.balance == Decimal("7.667333")
    assert positions == PositionsUpdate(positions=(), is_snapshot=True)
    assert isinstance(live, OrdersUpdate) and not live.is_snapshot
    assert live.orders[0].external_id == "extmm-r-BTC-USD-b-000001"
    assert isinstance(trades, TradesUpdate) and trades.trades[0].id == 1811328331296018432
    assert (stats.ignored, stats.malformed, stats.last_seq) == (1, 0, 6)
    assert seen["path"] == "/account"
    assert seen["headers"]["x-api-key"] == API_KEY


async def test_account_stream_gap_raises_and_bad_payload_is_skipped() -> None:
    frames = [
        frame("v1_account_order_snapshot_empty.json"),  # seq 1
        json.dumps({"type": "BALANCE", "data": {"balance": {"balance": "oops"}}, "ts": 2, "seq": 2}),
        frame("v1_account_position_snapshot_empty.json"),  # seq 3
        frame("v1_account_balance_snapshot.json", seq=5),
    ]
    async with server(sending(*frames)) as (url, _):
        venue = NetworkVenue("http://unused.test/api/v1", url, CREDENTIALS, stream_options=FAST)
        async with venue.account_stream() as stream:
            assert isinstance(await stream.receive(), OrdersUpdate)
            assert isinstance(await stream.receive(), PositionsUpdate)  # the bad BALANCE was skipped
            assert stream.statistics().malformed == 1
            with pytest.raises(SequenceGap):
                await stream.receive()


async def test_rejected_handshakes() -> None:
    async def reject(status: int) -> Script:
        async def script(request: WebSocketRequest, seen: dict[str, Any]) -> None:
            await request.reject(status)

        return script

    async with server(await reject(401)) as (url, _):
        venue = NetworkVenue("http://unused.test/api/v1", url, CREDENTIALS, stream_options=FAST)
        with pytest.raises(AuthError):
            async with venue.account_stream():
                pytest.fail("connected despite a 401")
    async with server(await reject(503)) as (url, _):
        with pytest.raises(StreamClosed, match="503"):
            async with open_stream(url, user_agent="t", strict_seq=True, options=FAST):
                pytest.fail("connected despite a 503")


async def test_unreachable_server_raises_stream_closed() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nothing listens there now
    with pytest.raises(StreamClosed, match="could not connect"):
        async with open_stream(f"ws://127.0.0.1:{port}/x", user_agent="t", strict_seq=True, options=FAST):
            pytest.fail("connected to a closed port")


async def test_consumer_errors_pass_through_unchanged() -> None:
    async with server(sending(frame("v1_public_trades_btc.json", seq=1))) as (url, _):
        with pytest.raises(KeyError, match="boom"):
            async with open_stream(url, user_agent="t", strict_seq=False, options=FAST) as stream:
                await stream.receive()
                raise KeyError("boom")


def test_topic_urls() -> None:
    assert orderbook_url("wss://h/v1", "BTC-USD", depth=1) == "wss://h/v1/orderbooks/BTC-USD?depth=1"
    assert orderbook_url("wss://h/v1", "NVDA_24_5-USD") == "wss://h/v1/orderbooks/NVDA_24_5-USD"
