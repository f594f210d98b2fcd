"""v1 WebSocket streams (SPEC §5): one connection per topic, opened with trio-websocket.

`open_stream(url, ...)` is an async context manager yielding a subscription whose
`receive()` returns the next checked frame. Book, mark and account streams require `seq`
to advance by exactly 1 (else `SequenceGap`); trades/funding may skip (counted).
Malformed frames are logged, counted and skipped; a closed or dead connection raises
`StreamClosed`. The caller owns reconnects.

Liveness is per topic (`Liveness`): quiet is normal on some topics (funding frames come
hourly, an idle account stream sends nothing, SPEC §5.5, §5.8, §12), so there a
connection is alive while the server's WebSocket pings arrive (every 15 s, SPEC §5.1) or,
after `probe_after_s` of silence, while our own ping is answered within `pong_timeout_s`.
Topics with a steady cadence (the book: a frame every 100 ms, SPEC §5.3) also have a data
stall limit. A dead connection (no frames, no pings, no pongs) is therefore declared
dead within `probe_after_s + pong_timeout_s` on every topic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import attrs
import trio
from loguru import logger
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from extmm.venue._ws_patch import apply as _apply_ws_patch
from extmm.venue._ws_patch import last_server_ping_at
from extmm.venue.errors import AuthError, MalformedResponse, SequenceGap, StreamClosed, VenueError
from extmm.venue.parse import loads_stream, parse_account_update, parse_stream_message
from extmm.venue.types import AccountUpdate, StreamMessage

_apply_ws_patch()


@attrs.frozen(kw_only=True)
class Liveness:
    """When a connection of one topic counts as dead.

    `data_stall_s`: no frame for this long (None: silence is normal on this topic).
    `probe_after_s`: nothing heard (no frame, no server ping, no pong) for this long → we
    ping; `pong_timeout_s`: that ping unanswered for this long → dead."""

    data_stall_s: float | None
    probe_after_s: float = 10.0
    pong_timeout_s: float = 5.0

    def next_check_at(self, *, heard_at: float, frame_at: float) -> float:
        """When to look again if nothing arrives: the probe time, or the data stall if sooner."""
        at = heard_at + self.probe_after_s
        if self.data_stall_s is not None:
            at = min(at, frame_at + self.data_stall_s)
        return at

    def stalled(self, *, now: float, frame_at: float) -> bool:
        """No data frame for longer than this topic allows."""
        return self.data_stall_s is not None and now - frame_at >= self.data_stall_s


TOPICS = ("orderbook", "trades", "funding", "mark", "account")


@attrs.frozen(kw_only=True)
class StreamOptions:
    """Connection tuning. The reader task of trio-websocket answers the server's pings
    only while its queue has room (SPEC §5.1), hence a generous `message_queue_size`;
    full-depth snapshots exceed the 1 MiB default `max_message_size`.

    Data stall limits per topic (seconds; None = silence is normal there):
    - order book: pushes every 100 ms and a snapshot every minute (SPEC §5.3): `stall_timeout_s`;
    - mark price: published continuously by the venue (our simulator: every second; the
      exact cadence is not documented): `mark_stall_s`;
    - public trades: a calm market may print nothing for minutes: none;
    - funding: only applied rates, hourly per DOC26, about one a minute per one capture
      (SPEC §5.5, §11.11): none;
    - account: silent while nothing changes, no application heartbeat documented (§5.8): none.
    Every topic is also probed with our own ping after `probe_after_s` of silence."""

    stall_timeout_s: float = 30.0  # the order book's data stall limit
    mark_stall_s: float | None = 60.0
    trades_stall_s: float | None = None
    funding_stall_s: float | None = None
    account_stall_s: float | None = None
    probe_after_s: float = 10.0  # the venue pings every 15 s: usually one probe in between
    pong_timeout_s: float = 5.0  # the venue itself waits 10 s for our pong
    message_queue_size: int = 128
    max_message_size: int = 16 * 1024 * 1024
    receive_buffer_size: int = 64 * 1024
    connect_timeout_s: float = 10.0
    disconnect_timeout_s: float = 5.0

    def liveness(self, topic: str | None) -> Liveness:
        stall = {
            "trades": self.trades_stall_s,
            "funding": self.funding_stall_s,
            "mark": self.mark_stall_s,
            "account": self.account_stall_s,
        }.get(topic or "orderbook", self.stall_timeout_s)
        return Liveness(data_stall_s=stall, probe_after_s=self.probe_after_s, pong_timeout_s=self.pong_timeout_s)


@attrs.frozen(kw_only=True)
class StreamStatistics:
    frames: int  # every frame received, malformed ones included
    delivered: int  # frames handed to the consumer
    malformed: int
    seq_skips: int  # tolerated gaps on streams that may skip
    ignored: int  # well-formed frames of types nobody consumes (DEPOSIT…)
    last_seq: int | None


class StreamSubscription:
    """One open v1 topic. `receive()` returns the next well-formed frame in order.

    After StreamClosed or SequenceGap the subscription is spent: leave the context
    manager and open a new one (a fresh connection starts with a fresh snapshot).
    """

    def __init__(
        self, connection: WebSocketConnection, *, name: str, strict_seq: bool, liveness: Liveness
    ) -> None:
        self._ws = connection
        self.name = name
        self._strict_seq = strict_seq
        self._liveness = liveness
        self._last_frame_at = trio.current_time()
        self._last_pong_at = self._last_frame_at
        self.probes = 0  # our own pings sent on a quiet connection
        self._last_seq: int | None = None
        self._frames = 0
        self._delivered = 0
        self._malformed = 0
        self._seq_skips = 0
        self._ignored = 0

    async def receive(self) -> StreamMessage:
        while True:
            message = await self._next_message()
            if message is not None:
                self._delivered += 1
                return message

    def statistics(self) -> StreamStatistics:
        return StreamStatistics(
            frames=self._frames,
            delivered=self._delivered,
            malformed=self._malformed,
            seq_skips=self._seq_skips,
            ignored=self._ignored,
            last_seq=self._last_seq,
        )

    # -- shared with AccountSubscription -------------------------------------------------
    async def _next_message(self) -> StreamMessage | None:
        """The next frame with a valid envelope and seq, or None when it was skipped."""
        frame = await self._next_frame()
        try:
            message = parse_stream_message(loads_stream(frame))
        except MalformedResponse as exc:
            self._count_malformed(exc, frame)
            return None
        self._check_seq(message.seq)
        return message

    def _count_malformed(self, error: Exception, frame: str | bytes) -> None:
        self._malformed += 1
        logger.warning(
            "{}: malformed frame skipped ({} so far): {}; frame starts {!r}",
            self.name,
            self._malformed,
            error,
            frame[:120],
        )

    async def _next_frame(self) -> str | bytes:
        while True:
            with trio.move_on_at(self._next_check_at()) as waiting:
                try:
                    frame = await self._ws.get_message()
                except ConnectionClosed as exc:
                    raise self._closed(exc) from None
            if not waiting.cancelled_caught:
                self._frames += 1
                self._last_frame_at = trio.current_time()
                return frame
            await self._check_alive()

    def _heard_at(self) -> float:
        """The last sign of life: a frame, a server ping or a pong to our ping."""
        ping = last_server_ping_at(self._ws)
        return max(self._last_frame_at, self._last_pong_at, ping if ping is not None else float("-inf"))

    def _next_check_at(self) -> float:
        return self._liveness.next_check_at(heard_at=self._heard_at(), frame_at=self._last_frame_at)

    async def _check_alive(self) -> None:
        live = self._liveness
        now = trio.current_time()
        if live.stalled(now=now, frame_at=self._last_frame_at):
            raise StreamClosed(f"{self.name}: stalled, no frame for {live.data_stall_s:g}s")
        if now - self._heard_at() < live.probe_after_s:
            return
        # Quiet, and the server has not pinged lately either: ask it ourselves (the venue
        # answers client pings, SPEC §5.1). No pong in time means the connection is dead.
        self.probes += 1
        probed_at = trio.current_time()
        with trio.move_on_after(live.pong_timeout_s):
            try:
                await self._ws.ping()
            except ConnectionClosed as exc:
                raise self._closed(exc) from None
            self._last_pong_at = trio.current_time()
            return
        if self._heard_at() > probed_at:
            # No pong, but the server pinged meanwhile: alive (whether the venue answers
            # client pings is its documentation's word only, SPEC §5.1).
            return
        raise StreamClosed(
            f"{self.name}: connection dead, no frame or ping for {now - self._heard_at():.0f}s "
            f"and no pong within {live.pong_timeout_s:g}s"
        )

    def _closed(self, exc: ConnectionClosed) -> StreamClosed:
        reason = exc.reason
        code = getattr(reason, "code", None)
        text = getattr(reason, "reason", None) or getattr(reason, "name", "")
        return StreamClosed(f"{self.name}: connection closed (code {code} {text})".rstrip())

    def _check_seq(self, seq: int) -> None:
        last, self._last_seq = self._last_seq, seq
        if last is None or seq == last + 1:
            return
        if self._strict_seq:
            raise SequenceGap(expected=last + 1, got=seq)
        self._seq_skips += 1
        logger.debug("{}: seq {} after {} (tolerated on this stream)", self.name, seq, last)


class AccountSubscription(StreamSubscription):
    """The private `/account` stream, parsed: `receive()` returns an `AccountUpdate`."""

    async def receive(self) -> AccountUpdate:  # type: ignore[override]
        while True:
            message = await self._next_message()
            if message is None:
                continue
            try:
                update = parse_account_update(message)
            except MalformedResponse as exc:
                self._count_malformed(exc, f"type={message.type} seq={message.seq}")
                continue
            if update is None:
                self._ignored += 1
                logger.debug("{}: {} frame ignored (seq {})", self.name, message.type, message.seq)
                continue
            self._delivered += 1
            return update


def _headers(user_agent: str, api_key: str | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"User-Agent", user_agent.encode())]
    if api_key is not None:
        headers.append((b"X-Api-Key", api_key.encode()))
    return headers


@asynccontextmanager
async def _connect(
    url: str, *, name: str, user_agent: str, api_key: str | None, options: StreamOptions
) -> AsyncIterator[WebSocketConnection]:
    connected = False
    try:
        async with open_websocket_url(
            url,
            extra_headers=_headers(user_agent, api_key),
            message_queue_size=options.message_queue_size,
            max_message_size=options.max_message_size,
            receive_buffer_size=options.receive_buffer_size,
            connect_timeout=options.connect_timeout_s,
            disconnect_timeout=options.disconnect_timeout_s,
        ) as connection:
            connected = True
            yield connection
    except ConnectionRejected as exc:
        if exc.status_code in (401, 403):
            raise AuthError(f"{name}: handshake refused with HTTP {exc.status_code}") from None
        raise StreamClosed(f"{name}: handshake refused with HTTP {exc.status_code}") from None
    except HandshakeError as exc:
        if not connected:
            raise StreamClosed(f"{name}: could not connect ({type(exc).__name__}: {exc})") from None
        # The close handshake timed out; the consumer's own failure (if any) is the news.
        if isinstance(exc.__context__, VenueError):
            raise exc.__context__ from None
        raise StreamClosed(f"{name}: closing timed out") from None
    except OSError as exc:
        if connected:
            raise
        raise StreamClosed(f"{name}: could not connect ({exc})") from None


@asynccontextmanager
async def open_stream(
    url: str,
    *,
    user_agent: str,
    strict_seq: bool,
    name: str | None = None,
    options: StreamOptions = StreamOptions(),
    topic: str | None = None,
) -> AsyncIterator[StreamSubscription]:
    """A public v1 topic. Failing to connect raises StreamClosed (AuthError on 401/403).
    `topic` (one of `TOPICS`) picks its liveness rule; None is the order book's."""
    label = name or url
    async with _connect(url, name=label, user_agent=user_agent, api_key=None, options=options) as ws:
        yield StreamSubscription(ws, name=label, strict_seq=strict_seq, liveness=options.liveness(topic))


@asynccontextmanager
async def open_account_stream(
    url: str,
    *,
    user_agent: str,
    api_key: str,
    name: str = "account",
    options: StreamOptions = StreamOptions(),
) -> AsyncIterator[AccountSubscription]:
    """The private `/account` topic (X-Api-Key on the handshake), snapshots first."""
    async with _connect(url, name=name, user_agent=user_agent, api_key=api_key, options=options) as ws:
        yield AccountSubscription(ws, name=name, strict_seq=True, liveness=options.liveness("account"))


# -- topic URLs (SPEC §5) ------------------------------------------------------------------------


def orderbook_url(stream_url: str, market: str, *, depth: int | None = None) -> str:
    url = f"{stream_url}/orderbooks/{quote(market, safe='')}"
    return url if depth is None else f"{url}?depth={depth}"


def public_trades_url(stream_url: str, market: str) -> str:
    return f"{stream_url}/publicTrades/{quote(market, safe='')}"


def funding_url(stream_url: str, market: str) -> str:
    return f"{stream_url}/funding/{quote(market, safe='')}"


def mark_price_url(stream_url: str, market: str) -> str:
    return f"{stream_url}/prices/mark/{quote(market, safe='')}"


def account_url(stream_url: str) -> str:
    return f"{stream_url}/account"
