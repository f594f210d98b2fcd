"""`WriteLane`: persistent HTTP/1.1 connections for the latency-critical writes.

Placing and cancelling orders is the bot's tick-to-wire path. httpx serves every other
request, but its client, pool and HTTP/1.1 layers cost about a millisecond of CPU per
request here and write the headers and the body separately with a scheduling point in
between. This lane keeps a few keep-alive connections to the REST host and speaks
HTTP/1.1 through h11 (the protocol library under httpx): one request is one `send_all`
of headers and body, and the response is read straight into a small `LaneResponse`.

Semantics match the httpx path: no retries (writes are never blindly repeated), a
timeout or a broken connection raises `LaneError` (the REST client maps it to
`NetworkError`, which makes a place ambiguous and settled by externalId). An idle
connection the server has closed (readable while idle) or that is older than the
keep-alive expiry is dropped before use, so a stale socket does not eat a write.
"""

from __future__ import annotations

import select
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import h11
import httpx
import trio

RECEIVE_CHUNK = 65536


class LaneError(Exception):
    """The request may or may not have reached the server (no complete response)."""


class LaneTimeout(LaneError):
    pass


@attrs.frozen
class LaneResponse:
    """What `RestClient` reads of a response: status, headers (lower-case names), body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


class _Connection:
    def __init__(self, stream: trio.abc.Stream, sock: Any) -> None:
        self.stream = stream
        self.sock = sock  # the raw socket, to see whether an idle peer has closed
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.idle_since = 0.0

    def looks_closed(self) -> bool:
        """Readable while idle means EOF or garbage: either way not reusable."""
        try:
            readable, _, _ = select.select([self.sock.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class WriteLane:
    """Keep-alive HTTP/1.1 to the host of `base_url` (http or https), at most
    `max_connections` at once; `request(method, path, ...)` takes paths relative to the
    base URL's path, like the httpx client's. `on_write(body, at)` (tests, the latency
    bench) is called with `trio.current_time()` just before a request goes out."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] = {},
        timeout_s: float = 10.0,
        max_connections: int = 16,
        keepalive_s: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        on_write: Callable[[bytes, float], None] | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https"):
            raise ValueError(f"WriteLane: unsupported scheme {url.scheme!r}")
        self._tls = url.scheme == "https"
        self._host = url.host
        self._port = url.port or (443 if self._tls else 80)
        default_port = 443 if self._tls else 80
        self._host_header = self._host if self._port == default_port else f"{self._host}:{self._port}"
        self._base_path = url.raw_path.decode("ascii").rstrip("/")
        self._headers = [(k.encode("ascii"), v.encode("latin-1")) for k, v in headers.items()]
        self._timeout_s = timeout_s
        self._keepalive_s = keepalive_s
        self._ssl_context = ssl_context
        self._slots = trio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._on_write = on_write
        self._closed = False
        self.connections_opened = 0

    def __repr__(self) -> str:
        return f"WriteLane({'https' if self._tls else 'http'}://{self._host_header}{self._base_path})"

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        headers: Mapping[str, str] = {},
        body: bytes | None = None,
    ) -> LaneResponse:
        if self._closed:
            raise LaneError("the write lane is closed")
        target = self._base_path + path + (f"?{query}" if query else "")
        all_headers = [(b"host", self._host_header.encode("ascii")), *self._headers]
        all_headers += [(k.encode("ascii"), v.encode("latin-1")) for k, v in headers.items()]
        all_headers.append((b"content-length", str(len(body) if body else 0).encode("ascii")))
        request = h11.Request(method=method, target=target.encode("ascii"), headers=all_headers)
        try:
            with trio.fail_after(self._timeout_s):
                try:
                    self._slots.acquire_nowait()  # the usual case: no scheduling point before the write
                except trio.WouldBlock:
                    await self._slots.acquire()
                try:
                    return await self._exchange(request, body or b"")
                finally:
                    self._slots.release()
        except trio.TooSlowError:
            raise LaneTimeout(f"{method} {path}: no response within {self._timeout_s}s") from None

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)

    # -- internals -----------------------------------------------------------------------
    async def _exchange(self, request: h11.Request, body: bytes) -> LaneResponse:
        conn = await self._checkout()
        reusable = False
        try:
            data = conn.h11.send(request) + conn.h11.send(h11.Data(data=body)) + conn.h11.send(h11.EndOfMessage())
            if self._on_write is not None:
                self._on_write(body, trio.current_time())
            try:
                await conn.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise LaneError(f"connection broke while sending: {type(exc).__name__}") from exc
            response = await self._read_response(conn)
            reusable = conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE
            if reusable:
                conn.h11.start_next_cycle()
            return response
        finally:
            if reusable and not self._closed:
                conn.idle_since = trio.current_time()
                self._idle.append(conn)
            else:
                await trio.aclose_forcefully(conn.stream)

    async def _checkout(self) -> _Connection:
        now = trio.current_time()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: warmest, least likely closed
            if now - conn.idle_since < self._keepalive_s and not conn.looks_closed():
                return conn
            await trio.aclose_forcefully(conn.stream)
        return await self._connect()

    async def _connect(self) -> _Connection:
        try:
            tcp = await trio.open_tcp_stream(self._host, self._port)
        except OSError as exc:
            raise LaneError(f"cannot connect to {self._host_header}: {exc}") from exc
        self.connections_opened += 1
        if not self._tls:
            return _Connection(tcp, tcp.socket)
        context = self._ssl_context or ssl.create_default_context()
        stream = trio.SSLStream(tcp, context, server_hostname=self._host, https_compatible=True)
        try:
            await stream.do_handshake()
        except (trio.BrokenResourceError, OSError) as exc:
            await trio.aclose_forcefully(stream)
            raise LaneError(f"TLS handshake with {self._host_header} failed: {exc}") from exc
        return _Connection(stream, tcp.socket)

    @staticmethod
    async def _read_response(conn: _Connection) -> LaneResponse:
        status: int | None = None
        headers: dict[str, str] = {}
        chunks: list[bytes] = []
        eof = False
        while True:
            try:
                event = conn.h11.next_event()
            except h11.RemoteProtocolError as exc:
                if eof:
                    raise LaneError("the server closed the connection before a complete response") from exc
                raise LaneError(f"malformed HTTP response: {exc}") from exc
            if event is h11.NEED_DATA:
                try:
                    data = await conn.stream.receive_some(RECEIVE_CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise LaneError(f"connection broke while reading: {type(exc).__name__}") from exc
                eof = not data
                try:
                    conn.h11.receive_data(bytes(data))  # b"" = EOF
                except h11.RemoteProtocolError as exc:
                    raise LaneError(f"malformed HTTP response: {exc}") from exc
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert status is not None
                return LaneResponse(status_code=status, headers=headers, content=b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise LaneError("the server closed the connection before a complete response")
            # h11.InformationalResponse (1xx): keep reading
