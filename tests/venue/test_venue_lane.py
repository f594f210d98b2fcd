"""`WriteLane` (keep-alive HTTP/1.1 for order writes) against a scripted raw TCP server."""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial

import h11
import pytest
import trio

from extmm.venue.errors import NetworkError, RateLimited
from extmm.venue.lane import LaneError, LaneTimeout, WriteLane
from extmm.venue.ratelimit import Priority, TokenBucket
from extmm.venue.rest import RestClient

# Each handler gets (connection number, request number on it, the h11 request, its body)
# and returns raw response bytes, or None to close the connection without answering.
Handler = Callable[[int, int, h11.Request, bytes], bytes | None]


def ok_response(body: bytes = b'{"status":"OK","data":{"id":1,"externalId":"x"}}', *, keep_alive: bool = True) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if not keep_alive:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


class ScriptedServer:
    def __init__(self, handler: Handler, *, close_after: int | None = None) -> None:
        self.handler = handler
        self.close_after = close_after  # close (silently) after this many answers
        self.connections = 0
        self.requests: list[tuple[int, str, str, dict[str, str], bytes]] = []
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._connection, listeners, task_status=task_status)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        conn = h11.Connection(our_role=h11.SERVER)
        served = 0
        async with stream:
            while True:
                request, body = None, b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                headers = {k.decode(): v.decode() for k, v in request.headers}
                self.requests.append((number, request.method.decode(), request.target.decode(), headers, body))
                reply = self.handler(number, served, request, body)
                served += 1
                if reply is None:
                    return
                await stream.send_all(reply)
                if b"Connection: close" in reply or served == self.close_after:
                    return
                conn = h11.Connection(our_role=h11.SERVER)  # a fresh parser per request is enough here


@pytest.fixture
async def server_factory(nursery):
    async def start(handler: Handler, **kwargs) -> ScriptedServer:
        server = ScriptedServer(handler, **kwargs)
        await nursery.start(server.serve)
        return server

    return start


def lane_for(server: ScriptedServer, **kwargs) -> WriteLane:
    return WriteLane(f"http://127.0.0.1:{server.port}/api/v1", headers={"User-Agent": "extmm-test"}, **kwargs)


async def test_requests_share_one_keep_alive_connection_and_carry_headers(server_factory):
    server = await server_factory(lambda *_: ok_response())
    written: list[bytes] = []
    lane = lane_for(server, on_write=lambda body, _at: written.append(body))
    for i in range(5):
        response = await lane.request(
            "POST", "/user/order", headers={"X-Api-Key": "k", "Content-Type": "application/json"},
            body=b'{"id":"%d"}' % i,
        )
        assert response.status_code == 200 and response.content.startswith(b'{"status":"OK"')
    cancel = await lane.request("DELETE", "/user/order", query="externalId=extmm-1")
    assert cancel.status_code == 200
    await lane.aclose()
    assert server.connections == 1 and lane.connections_opened == 1
    number, method, target, headers, body = server.requests[0]
    assert (method, target, body) == ("POST", "/api/v1/user/order", b'{"id":"0"}')
    assert headers["user-agent"] == "extmm-test" and headers["x-api-key"] == "k"
    assert headers["host"] == f"127.0.0.1:{server.port}" and headers["content-length"] == "10"
    assert server.requests[-1][1:3] == ("DELETE", "/api/v1/user/order?externalId=extmm-1")
    assert written[:2] == [b'{"id":"0"}', b'{"id":"1"}']


async def test_an_idle_connection_the_server_closed_is_not_used(server_factory):
    # The server answers once per connection and then closes it (without saying so).
    server = await server_factory(lambda *_: ok_response(), close_after=1)
    lane = lane_for(server)
    await lane.request("POST", "/user/order", body=b"{}")
    await trio.sleep(0.05)  # the server's close reaches us while the connection is idle
    response = await lane.request("POST", "/user/order", body=b"{}")
    assert response.status_code == 200
    assert server.connections == 2  # a fresh connection, not a failed write on the stale one
    await lane.aclose()


async def test_connection_close_responses_and_expired_idles_reconnect(server_factory, autojump_clock):
    server = await server_factory(lambda *_: ok_response(keep_alive=False))
    lane = lane_for(server, keepalive_s=1.0)
    for _ in range(3):
        assert (await lane.request("POST", "/user/order", body=b"{}")).status_code == 200
    assert server.connections == 3
    await lane.aclose()


async def test_a_close_before_the_answer_is_a_lane_error(server_factory):
    server = await server_factory(lambda *_: None)
    lane = lane_for(server)
    with pytest.raises(LaneError, match="closed the connection"):
        await lane.request("POST", "/user/order", body=b"{}")
    await lane.aclose()


async def test_a_missing_answer_times_out(server_factory):
    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, silent, listeners))
        lane = WriteLane(f"http://127.0.0.1:{port}", timeout_s=0.2)
        with pytest.raises(LaneTimeout):
            await lane.request("POST", "/user/order", body=b"{}")
        await lane.aclose()
        nursery.cancel_scope.cancel()


async def test_chunked_bodies_and_garbage_answers(server_factory):
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\n{\"sta\r\n"
        b"e\r\ntus\":\"OK\"}    \r\n0\r\n\r\n"
    )
    replies = [chunked, b"NOT HTTP AT ALL\r\n\r\n"]
    server = await server_factory(lambda conn, served, *_: replies[min(conn - 1, 1)])
    lane = lane_for(server)
    response = await lane.request("POST", "/user/order", body=b"{}")
    assert response.content == b'{"status":"OK"}    '
    with pytest.raises(LaneError, match="malformed"):
        # the first connection is reused for this one; make the next be a new one
        await lane.aclose()
        lane = lane_for(server)
        await lane.request("POST", "/user/order", body=b"{}")
    await lane.aclose()


async def test_rest_client_maps_lane_answers_and_failures(server_factory):
    answers = iter(
        [
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n",
            None,
        ]
    )
    server = await server_factory(lambda *_: next(answers))
    lane = lane_for(server)
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}/api/v1") as client:
        rest = RestClient(
            client, limiter=TokenBucket.per_minute(1000), api_key="k", lane=lane, rng=random.Random(0)
        )
        with pytest.raises(RateLimited) as limited:
            await rest.request("POST", "/user/order", operation="place_order", body=b"{}",
                               private=True, priority=Priority.PLACE, fast=True)
        assert limited.value.retry_after == 2.0
        with pytest.raises(NetworkError):
            await rest.request("POST", "/user/order", operation="place_order", body=b"{}",
                               private=True, priority=Priority.PLACE, fast=True)
    await lane.aclose()
    assert server.requests[0][3]["x-api-key"] == "k"


def test_only_http_and_https():
    with pytest.raises(ValueError, match="scheme"):
        WriteLane("ws://127.0.0.1:1/x")


async def test_https_keeps_one_verified_tls_connection(nursery):
    import ssl

    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    server = ScriptedServer(lambda *_: ok_response())

    async def handler(stream: trio.SSLStream) -> None:
        try:
            await server._connection(stream)
        except trio.BrokenResourceError:
            pass  # the untrusting client below hangs up during the handshake

    listeners = await nursery.start(partial(trio.serve_ssl_over_tcp, handler, 0, server_context, host="127.0.0.1"))
    port = listeners[0].transport_listener.socket.getsockname()[1]

    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    lane = WriteLane(f"https://127.0.0.1:{port}/api/v1", ssl_context=client_context)
    for _ in range(3):
        response = await lane.request("POST", "/user/order", body=b"{}")
        assert response.status_code == 200
    await lane.aclose()
    assert lane.connections_opened == 1 and server.connections == 1
    assert server.requests[0][2] == "/api/v1/user/order"

    # A certificate the client does not trust: a LaneError, nothing sent.
    untrusting = WriteLane(f"https://127.0.0.1:{port}/api/v1")
    with pytest.raises(LaneError, match="TLS handshake"):
        await untrusting.request("POST", "/user/order", body=b"{}")
    assert len(server.requests) == 3


def test_the_lane_steps_aside_for_an_environment_proxy(monkeypatch):
    from extmm.venue.network import NetworkVenue, proxied

    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert not proxied("https://api.starknet.extended.exchange/api/v1")
    assert NetworkVenue("https://venue.test/api/v1", "wss://venue.test/stream")._use_lane
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert proxied("https://api.starknet.extended.exchange/api/v1")
    assert not NetworkVenue("https://venue.test/api/v1", "wss://venue.test/stream")._use_lane
    monkeypatch.setenv("NO_PROXY", "venue.test")
    assert NetworkVenue("https://venue.test/api/v1", "wss://venue.test/stream")._use_lane
