"""Per-topic stream liveness (issue 12; SPEC §5.1, §5.5, §5.7, §5.8, §12).

Quiet is normal on the funding, trades and account streams: a connection there lives as
long as the server's WebSocket pings arrive or our own ping is answered. The order book
keeps its data stall limit, and a connection that is really dead (no frames, no pings, no
pongs) is declared dead within `probe_after_s + pong_timeout_s` on every topic. Real
sockets on 127.0.0.1, with short limits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketRequest

from extmm.venue.errors import SequenceGap, StreamClosed
from extmm.venue.network import NetworkVenue
from extmm.venue.streams import StreamOptions, account_url, open_account_stream, open_stream
from tests.venue.test_venue_streams import frame, sending, server

QUICK = StreamOptions(
    stall_timeout_s=1.0, probe_after_s=0.3, pong_timeout_s=0.3, connect_timeout_s=5.0, disconnect_timeout_s=0.5
)


def pinging(*frames: str, every_s: float) -> Any:
    """Send `frames`, then only WebSocket pings every `every_s` (the venue's quiet stream)."""

    async def script(request: WebSocketRequest, seen: dict[str, Any]) -> None:
        ws = await request.accept()
        for text in frames:
            await ws.send_message(text)
        while True:
            await trio.sleep(every_s)
            await ws.ping()

    return script


def test_topics_have_their_own_rules():
    options = StreamOptions()
    assert options.liveness("orderbook").data_stall_s == options.stall_timeout_s
    assert options.liveness(None).data_stall_s == options.stall_timeout_s
    for quiet in ("funding", "account", "trades"):
        assert options.liveness(quiet).data_stall_s is None, quiet
    assert options.liveness("mark").data_stall_s is not None
    # A dead connection is found in seconds on every topic.
    assert options.probe_after_s + options.pong_timeout_s <= 15.0


async def test_quiet_funding_stream_lives_on_server_pings_without_probing():
    first = frame("v1_public_trades_btc.json", seq=1)
    async with server(pinging(first, every_s=0.1)) as (url, _):
        venue = NetworkVenue("http://unused.test/api/v1", url, stream_options=QUICK)
        async with venue.funding_stream("BTC-USD") as stream:
            await stream.receive()
            with trio.move_on_after(2.0) as quiet:  # ≫ stall, probe and pong limits
                await stream.receive()
            assert quiet.cancelled_caught  # no frame, no failure
            assert stream.probes == 0  # the server's pings were proof enough


async def test_quiet_stream_without_server_pings_lives_on_answered_probes():
    async with server(sending(frame("v1_public_trades_btc.json", seq=1))) as (url, _):
        venue = NetworkVenue("http://unused.test/api/v1", url, stream_options=QUICK)
        async with venue.public_trades_stream("BTC-USD") as stream:
            await stream.receive()
            with trio.move_on_after(2.0) as quiet:
                await stream.receive()
            assert quiet.cancelled_caught
            assert stream.probes >= 2  # our pings, answered by the server's pongs


async def test_book_stream_still_stalls_on_data_silence_despite_pings():
    snapshot = frame("v1_orderbook_snapshot_btc_mainnet.trimmed.json", seq=1)
    async with server(pinging(snapshot, every_s=0.1)) as (url, _):
        async with open_stream(url, user_agent="t", strict_seq=True, options=QUICK, topic="orderbook") as stream:
            await stream.receive()
            with trio.fail_after(5), pytest.raises(StreamClosed, match="stalled"):
                await stream.receive()


async def test_mark_stream_is_strict_about_seq():
    frames = [frame("v1_mark_price_btc_mainnet.json", seq=s) for s in (1, 2, 4)]
    async with server(sending(*frames)) as (url, _):
        venue = NetworkVenue("http://unused.test/api/v1", url, stream_options=QUICK)
        async with venue.mark_price_stream("BTC-USD") as stream:
            assert (await stream.receive()).seq == 1
            assert (await stream.receive()).seq == 2
            with pytest.raises(SequenceGap):
                await stream.receive()


# -- a dead connection: a TCP relay that stops relaying --------------------------------------------


class Relay:
    """127.0.0.1 TCP relay to `target_port`; `freeze()` drops everything both ways from then
    on, as a dead NAT or a vanished host would: no frames, no pings, no pongs."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False
        self.port = 0

    def freeze(self) -> None:
        self.frozen = True

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            async for chunk in source:
                if not self.frozen:
                    await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _handle(self, client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, upstream)
            nursery.start_soon(self._pump, upstream, client)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)


@asynccontextmanager
async def simulator_behind_relay(**sim_options: Any) -> AsyncIterator[tuple[Any, Relay, str]]:
    from extmm.sim.server import serve_simulator

    async with trio.open_nursery() as nursery:
        sim = await nursery.start(lambda task_status: serve_simulator(markets=["BTC-USD"], seed=3,
                                                                     task_status=task_status, **sim_options))
        relay = Relay(sim.port)
        await nursery.start(relay.run)
        stream_url = sim.stream_url.replace(f":{sim.port}/", f":{relay.port}/")
        yield sim, relay, stream_url
        nursery.cancel_scope.cancel()


async def _snapshots(stream: Any) -> None:
    for _ in range(3):  # orders, balance, positions
        await stream.receive()


async def test_idle_account_stream_on_the_simulator_stays_up_on_pings():
    """The simulator's account stream is silent when nothing changes; its pings keep it."""
    async with simulator_behind_relay(ping_interval_s=0.2) as (sim, _, stream_url):
        async with open_account_stream(account_url(stream_url), user_agent="t", api_key=sim.account.api_key,
                                       options=QUICK) as stream:
            await _snapshots(stream)
            with trio.move_on_after(2.0) as quiet:
                await stream.receive()
            assert quiet.cancelled_caught  # nothing happened on the account: no frame, no failure


async def test_dead_account_connection_is_detected_within_probe_and_pong_limits():
    async with simulator_behind_relay(ping_interval_s=0.2) as (sim, relay, stream_url):
        limit = QUICK.probe_after_s + QUICK.pong_timeout_s
        with pytest.raises(StreamClosed, match="dead"):
            async with open_account_stream(account_url(stream_url), user_agent="t", api_key=sim.account.api_key,
                                           options=QUICK) as stream:
                await _snapshots(stream)
                relay.freeze()
                with trio.fail_after(limit + 2.0):
                    await stream.receive()
