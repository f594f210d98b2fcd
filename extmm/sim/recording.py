"""The market-data recording format: raw public frames with receive timestamps, gzip NDJSON, rotated by size.

Format (one JSON object per line; every part starts with its own header):

    {"k": "header", "v": 1, "source": "...", "start_ms": EPOCH_MS, "part": N,
     "kinds": [...], "markets": {NAME: <the venue's /info/markets object>}}
    {"k": "open", "t": EPOCH_MS, "s": KIND, "m": MARKET}          a (re)connection
    {"t": EPOCH_MS, "k": KIND, "m": MARKET, "f": <the frame, byte for byte>}
    {"t": EPOCH_MS, "k": KIND, "m": MARKET, "bad": "<text that was not a JSON object>"}

KIND is `orderbook`, `trades`, `funding` or `mark`; `t` is when the frame was received
(epoch ms from the clock passed in). Parts rotate at `rotate_bytes` of compressed
output: `rec.ndjson.gz`, `rec.1.ndjson.gz`, `rec.2.ndjson.gz`, …

`RecordingWriter` writes parts, `read_recording(paths)` yields the lines back. The recorder
that fills a recording from the venue or the simulator is `extmm.research.record`; the
simulator replays one (`extmm.sim.replay`).
"""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import attrs
import orjson
from loguru import logger

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
        # (a chain, not a generator around the parts': one generator resumed per line)
        return itertools.chain.from_iterable(map(self._lines, self.paths))

    def _lines(self, path: Path) -> Iterator[dict[str, Any]]:
        number = 0
        stats = self.stats
        try:
            with gzip.open(path, "rb") as fh:
                # Decompressed in blocks and split here: a replay reads millions of lines, and
                # a readline per line costs more than decoding it. read1 returns what one read
                # of the file gives, so a truncated part still yields every whole line before
                # the cut (then EOFError, as with readline).
                # A blank line fails to decode like a bad one: it is told apart only then.
                rest = b""
                loads, decode_error = orjson.loads, orjson.JSONDecodeError
                read1 = fh.read1
                while True:
                    block = read1(1 << 16)
                    if not block:
                        lines = [rest] if rest else []
                    else:
                        lines = (rest + block).split(b"\n")
                        rest = lines.pop()
                    for line in lines:
                        number += 1
                        try:
                            record = loads(line)
                        except decode_error as exc:
                            if line.strip():
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
