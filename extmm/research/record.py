"""The market-data recorder: public frames from the venue or the simulator into a recording.

The format (gzip NDJSON parts, one header each) is `extmm.sim.recording`.
`record(...)` reads one stream per (kind, market) from a `FrameSource` — WebSockets
(`WebSocketSource`, the venue or `python -m extmm sim`) or an in-process simulator
runner (`RunnerSource`, also under MockClock) — reconnecting with backoff, until
stopped or `duration_s` has passed, and writes every frame with its receive time.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio
from loguru import logger

from extmm.domain.backoff import Backoff
from extmm.sim.recording import KINDS, RecordingWriter

# -- sources ---------------------------------------------------------------------------------


class RawStream(Protocol):
    async def receive(self) -> str | bytes: ...


class FrameSource(Protocol):
    """Opens one raw stream per (kind, market); failures raise any of `RECONNECTABLE`."""

    def open(self, kind: str, market: str) -> AbstractAsyncContextManager[RawStream]: ...


class SourceClosed(Exception):
    """The source's stream ended; the recorder reconnects."""


class WebSocketSource:
    """The venue's (or the simulator's) v1 public WebSocket topics, raw text frames."""

    def __init__(
        self, stream_url: str, *, user_agent: str = "extmm-recorder/0.1", stall_timeout_s: float = 30.0
    ) -> None:
        self.stream_url = stream_url.rstrip("/")
        self.user_agent = user_agent
        self.stall_timeout_s = stall_timeout_s

    def url(self, kind: str, market: str) -> str:
        from extmm.venue import streams

        return {
            "orderbook": streams.orderbook_url,
            "trades": streams.public_trades_url,
            "funding": streams.funding_url,
            "mark": streams.mark_price_url,
        }[kind](self.stream_url, market)

    @asynccontextmanager
    async def open(self, kind: str, market: str) -> AsyncIterator[RawStream]:
        from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

        from extmm.venue.streams import StreamOptions

        # Per-topic liveness as the bot's streams (extmm.venue.streams): funding and trades
        # may be silent for long on the venue (SPEC §5.5, §12), so only the book (and mark)
        # have a data stall limit; every topic is probed with our own ping when quiet.
        live = StreamOptions(stall_timeout_s=self.stall_timeout_s).liveness(kind)

        class _Ws:
            def __init__(self, ws: Any) -> None:
                self.ws = ws
                self.heard_at = trio.current_time()
                self.frame_at = self.heard_at

            async def receive(self) -> str | bytes:
                while True:
                    with trio.move_on_at(live.next_check_at(heard_at=self.heard_at, frame_at=self.frame_at)):
                        try:
                            frame: str | bytes = await self.ws.get_message()
                        except ConnectionClosed as exc:
                            raise SourceClosed(f"{kind}/{market}: connection closed ({exc.reason})") from None
                        self.heard_at = self.frame_at = trio.current_time()
                        return frame
                    if live.stalled(now=trio.current_time(), frame_at=self.frame_at):
                        raise SourceClosed(f"{kind}/{market}: no frame for {live.data_stall_s:g}s")
                    with trio.move_on_after(live.pong_timeout_s):
                        try:
                            await self.ws.ping()
                        except ConnectionClosed as exc:
                            raise SourceClosed(f"{kind}/{market}: connection closed ({exc.reason})") from None
                        self.heard_at = trio.current_time()
                        continue
                    raise SourceClosed(f"{kind}/{market}: no pong within {live.pong_timeout_s:g}s")

        try:
            async with open_websocket_url(
                self.url(kind, market),
                extra_headers=[(b"User-Agent", self.user_agent.encode())],
                message_queue_size=1024,
                max_message_size=16 * 1024 * 1024,
                connect_timeout=10.0,
                disconnect_timeout=5.0,
            ) as ws:
                yield _Ws(ws)
        except HandshakeError as exc:
            raise SourceClosed(f"{kind}/{market}: {type(exc).__name__}: {exc}") from None


class RunnerSource:
    """An in-process `SimRunner`'s subscriptions: the very text a WebSocket would carry."""

    def __init__(self, runner: Any, *, capacity: int = 4096) -> None:
        self.runner = runner
        self.capacity = capacity

    @asynccontextmanager
    async def open(self, kind: str, market: str) -> AsyncIterator[RawStream]:
        sub = self.runner.subscribe(kind, market=market, capacity=self.capacity)

        class _Sub:
            async def receive(self) -> str:
                try:
                    frame = await sub.frames.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    raise SourceClosed(f"{kind}/{market}: closed ({sub.close_reason})") from None
                delay = frame.due - trio.current_time()
                if delay > 0:
                    await trio.sleep(delay)
                text: str = frame.text
                return text

        try:
            yield _Sub()
        finally:
            self.runner.unsubscribe(sub)


RECONNECTABLE: tuple[type[BaseException], ...] = (SourceClosed, OSError, trio.TooSlowError)


# -- the recorder ----------------------------------------------------------------------------


@attrs.define
class RecordStats:
    frames: Counter[str] = attrs.Factory(Counter)  # by kind
    bad_frames: int = 0
    reconnects: int = 0
    files: list[str] = attrs.Factory(list)


async def record(
    source: FrameSource,
    writer: RecordingWriter,
    *,
    markets: Sequence[str],
    epoch_ms: Callable[[], int],
    kinds: Sequence[str] = KINDS,
    duration_s: float | None = None,
    stop: trio.Event | None = None,
    reconnect: Backoff = Backoff(initial=0.5, factor=2.0, cap=15.0, jitter=0.2),
    rng: random.Random | None = None,
    flush_every_s: float = 5.0,
) -> RecordStats:
    """Record until `stop` is set or `duration_s` has passed; closes `writer` at the end."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown stream kinds {unknown}; known: {', '.join(KINDS)}")
    stats = RecordStats()
    rng = rng or random.Random()
    stop = trio.Event() if stop is None else stop

    async def one(kind: str, market: str) -> None:
        failures = 0
        while True:
            try:
                async with source.open(kind, market) as stream:
                    writer.mark_open(epoch_ms(), kind, market)
                    while True:
                        text = await stream.receive()
                        failures = 0
                        if writer.write_frame(epoch_ms(), kind, market, text):
                            stats.frames[kind] += 1
                        else:
                            stats.bad_frames += 1
            except RECONNECTABLE as exc:
                failures += 1
                stats.reconnects += 1
                delay = reconnect.delay(failures - 1, rng)
                logger.warning(
                    "record {}/{}: {}; reconnect #{} in {:.2f}s", kind, market, exc, failures, delay
                )
                await trio.sleep(delay)

    async def flusher() -> None:
        while True:
            await trio.sleep(flush_every_s)
            writer.flush()

    try:
        async with trio.open_nursery() as nursery:
            for market in markets:
                for kind in kinds:
                    nursery.start_soon(one, kind, market)
            nursery.start_soon(flusher)
            with trio.move_on_after(duration_s if duration_s is not None else float("inf")):
                await stop.wait()
            nursery.cancel_scope.cancel()
    finally:
        writer.close()
        stats.files = [str(p) for p in writer.parts]
    return stats


# -- synthetic recordings ------------------------------------------------------------------------


async def record_simulator(
    path: Path | str,
    *,
    markets: Sequence[str],
    seconds: float,
    seed: int = 0,
    start_ms: int = 1_790_000_000_000,
    kinds: Sequence[str] = KINDS,
    rotate_bytes: int | None = None,
    engine: Any = None,
) -> tuple[RecordStats, Any]:
    """Record an in-process simulator's public streams for `seconds` of trio time.

    Under `MockClock` this takes a fraction of the time it covers. Returns the stats and
    the engine (whose `flow_params(market)` are the truth a calibration should recover).
    """
    from extmm.sim.launch import build_engine
    from extmm.sim.runner import SimRunner

    if engine is None:
        engine = build_engine(markets=list(markets), seed=seed, start_ms=start_ms, verify_signatures=False)
    runner = SimRunner(engine, seed=seed)
    header = {
        "source": f"simulator seed={seed}",
        "start_ms": runner.now_ms(),
        "kinds": list(kinds),
        "markets": {m: engine.market_object(m) for m in markets},
    }
    writer = RecordingWriter(path, header=header, rotate_bytes=rotate_bytes)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        stats = await record(
            RunnerSource(runner),
            writer,
            markets=markets,
            epoch_ms=runner.now_ms,
            kinds=kinds,
            duration_s=seconds,
        )
        nursery.cancel_scope.cancel()
    return stats, engine


def record_synthetic(path: Path | str, **kwargs: Any) -> tuple[RecordStats, Any]:
    """`record_simulator` in its own trio run under an autojumping MockClock."""
    import trio.testing

    async def main() -> tuple[RecordStats, Any]:
        return await record_simulator(path, **kwargs)

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
