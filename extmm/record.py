"""Market-data recordings: raw public frames with receive timestamps, gzip NDJSON, rotated by size.

Format (one JSON object per line; every part starts with its own header):

    {"k": "header", "v": 1, "source": "...", "start_ms": EPOCH_MS, "part": N,
     "kinds": [...], "markets": {NAME: <the venue's /info/markets object>}}
    {"k": "open", "t": EPOCH_MS, "s": KIND, "m": MARKET}          a (re)connection
    {"t": EPOCH_MS, "k": KIND, "m": MARKET, "f": <the frame, byte for byte>}
    {"t": EPOCH_MS, "k": KIND, "m": MARKET, "bad": "<text that was not a JSON object>"}

KIND is `orderbook`, `trades`, `funding` or `mark`; `t` is when the frame was received
(epoch ms from the clock passed in). Parts rotate at `rotate_bytes` of compressed
output: `rec.ndjson.gz`, `rec.1.ndjson.gz`, `rec.2.ndjson.gz`, …

`record(...)` reads one stream per (kind, market) from a `FrameSource` — WebSockets
(`WebSocketSource`, the venue or `python -m extmm sim`) or an in-process simulator
runner (`RunnerSource`, also under MockClock) — reconnecting with backoff, until
stopped or `duration_s` has passed. `read_recording(paths)` yields the lines back.
"""

from __future__ import annotations

import gzip
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import attrs
import orjson
import trio
from loguru import logger

from supervisors.backoff import Backoff

FORMAT_VERSION = 1
KINDS = ("orderbook", "trades", "funding", "mark")


class RecordingError(Exception):
    """A recording cannot be read (missing file, no header, unknown format version)."""


# -- writing ---------------------------------------------------------------------------------


def part_path(base: Path, index: int) -> Path:
    """The path of rotated part `index` (0 is `base` itself): `x.ndjson.gz` → `x.2.ndjson.gz`."""
    if index == 0:
        return base
    name = base.name
    for suffix in (".ndjson.gz", ".jsonl.gz", ".json.gz", ".gz"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return base.with_name(f"{name[: -len(suffix)]}.{index}{suffix}")
    return base.with_name(f"{name}.{index}")


class RecordingWriter:
    """Appends frames to gzip NDJSON parts, starting a new part past `rotate_bytes` (compressed)."""

    def __init__(
        self,
        path: Path | str,
        *,
        header: dict[str, Any],
        rotate_bytes: int | None = None,
        compresslevel: int = 6,
    ) -> None:
        self.base = Path(path)
        self.header = dict(header)
        self.rotate_bytes = rotate_bytes
        self.compresslevel = compresslevel
        self.parts: list[Path] = []
        self.lines = 0
        self._raw: BinaryIO | None = None
        self._gz: gzip.GzipFile | None = None
        self._open_part()

    def _open_part(self) -> None:
        path = part_path(self.base, len(self.parts))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = path.open("wb")
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=self.compresslevel)
        self.parts.append(path)
        header = {"k": "header", "v": FORMAT_VERSION, **self.header, "part": len(self.parts) - 1}
        self._gz.write(orjson.dumps(header) + b"\n")

    def _close_part(self) -> None:
        if self._gz is not None:
            self._gz.close()
        if self._raw is not None:
            self._raw.close()
        self._gz = self._raw = None

    def _write(self, line: bytes) -> None:
        if self._gz is None:
            raise ValueError("the recording is closed")
        self._gz.write(line)
        self.lines += 1
        if self.rotate_bytes is not None and self._raw is not None and self._raw.tell() >= self.rotate_bytes:
            self._close_part()
            self._open_part()

    def write_frame(self, t_ms: int, kind: str, market: str, text: str | bytes) -> bool:
        """Store one received frame; False if it was not a JSON object (kept as `bad`)."""
        raw = text.encode() if isinstance(text, str) else text
        head = b'{"t":%d,"k":"%s","m":%s,' % (t_ms, kind.encode(), orjson.dumps(market))
        try:
            ok = isinstance(orjson.loads(raw), dict)
        except orjson.JSONDecodeError:
            ok = False
        if ok:
            self._write(head + b'"f":' + raw.strip() + b"}\n")
        else:
            self._write(head + b'"bad":' + orjson.dumps(raw.decode("utf-8", "replace")) + b"}\n")
        return ok

    def mark_open(self, t_ms: int, kind: str, market: str) -> None:
        self._write(orjson.dumps({"k": "open", "t": t_ms, "s": kind, "m": market}) + b"\n")

    def flush(self) -> None:
        if self._gz is not None:
            self._gz.flush()

    def close(self) -> None:
        self._close_part()


# -- reading ---------------------------------------------------------------------------------


def expand_parts(paths: Iterable[Path | str]) -> list[Path]:
    """The given recordings followed by their rotated parts, in order, each once."""
    out: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.is_file():
            raise RecordingError(f"{path}: no such recording")
        candidates = [path]
        index = 1
        while part_path(path, index).is_file():
            candidates.append(part_path(path, index))
            index += 1
        for candidate in candidates:
            if candidate not in out:
                out.append(candidate)
    return out


@attrs.define
class RecordingStats:
    lines: int = 0
    bad_lines: int = 0  # undecodable lines (skipped, logged)
    truncated_parts: int = 0  # parts whose gzip stream ended early (a killed recorder)


class RecordingReader:
    """Iterates the lines of one or more parts; `header` is the first part's header."""

    def __init__(self, paths: Sequence[Path | str]) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise RecordingError("no recording given")
        self.stats = RecordingStats()
        self.header = self._first_header(self.paths[0])
        self.markets: dict[str, dict[str, Any]] = dict(self.header.get("markets") or {})

    @staticmethod
    def _first_header(path: Path) -> dict[str, Any]:
        try:
            with gzip.open(path, "rb") as fh:
                first = fh.readline()
        except (OSError, EOFError) as exc:
            raise RecordingError(f"{path}: not a gzip recording ({exc})") from None
        try:
            header = orjson.loads(first)
        except orjson.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("k") != "header":
            raise RecordingError(f"{path}: the first line is not a recording header")
        if header.get("v") != FORMAT_VERSION:
            raise RecordingError(f"{path}: recording format {header.get('v')!r}, expected {FORMAT_VERSION}")
        return header

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for path in self.paths:
            yield from self._lines(path)

    def _lines(self, path: Path) -> Iterator[dict[str, Any]]:
        number = 0
        stats = self.stats
        try:
            with gzip.open(path, "rb") as fh:
                # Decompressed in blocks and split here: a replay reads millions of lines, and
                # a readline per line costs more than decoding it. read1 returns what one read
                # of the file gives, so a truncated part still yields every whole line before
                # the cut (then EOFError, as with readline).
                rest = b""
                while True:
                    block = fh.read1(1 << 16)
                    if not block:
                        lines = [rest] if rest else []
                    else:
                        lines = (rest + block).split(b"\n")
                        rest = lines.pop()
                    for line in lines:
                        number += 1
                        if not line.strip():
                            continue
                        try:
                            record = orjson.loads(line)
                        except orjson.JSONDecodeError as exc:
                            self._bad(path, number, str(exc))
                            continue
                        if type(record) is not dict:
                            self._bad(path, number, "not an object")
                            continue
                        stats.lines += 1
                        if record.get("k") == "header":
                            for name, market in (record.get("markets") or {}).items():
                                self.markets.setdefault(name, market)
                        yield record
                    if not block:
                        break
        except EOFError:
            self.stats.truncated_parts += 1
            logger.warning("{}: the recording ends early after line {} (recorder killed?)", path, number)
        except OSError as exc:
            raise RecordingError(f"{path}: unreadable after line {number}: {exc}") from None

    def _bad(self, path: Path, number: int, why: str) -> None:
        self.stats.bad_lines += 1
        if self.stats.bad_lines <= 10:
            logger.warning("{}:{}: undecodable line skipped ({})", path, number, why)


def read_recording(paths: Sequence[Path | str]) -> RecordingReader:
    return RecordingReader(expand_parts(paths))


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
                            frame = await self.ws.get_message()
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
                return frame.text

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
    from extmm.sim.runner import SimRunner, build_engine

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
