"""Fault injection for the simulator: what can go wrong between a venue and our bot.

A `FaultSpec` is the per-run setting (parsed from the `--faults` flag); a
`FaultController` holds it at runtime, decides each injection with a seeded RNG and lets
tests add bursts and one-shot faults while the simulator runs (`handle.faults`).

Flag format (comma separated `knob=value`; durations take `ms`, `s` or `m`, bare numbers
are seconds; probabilities are 0..1):

    latency=200ms       extra delay on every REST response and every stream frame
    http429=0.2         share of REST requests answered 429 (body code 429)
    http5xx=0.1         share of REST requests answered 500 (body code 1006)
    http5xx_applied=0.5 share of those 5xx writes that were carried out anyway (ambiguous outcome)
    ws_drop_every=5s    close every stream connection this often (close code 1012)
    seq_skip=0.01       share of stream frames whose `seq` jumps by one (a lost frame)
    malformed=0.01      share of stream frames preceded by a garbage frame (non-JSON or
                        truncated JSON); the garbage takes no `seq`, so the stream itself
                        stays consistent and only the parser is tested
    stall=10s           book streams fall silent for this long, once per `stall_every`
    stall_every=60s     (default 60 s; the first stall starts one period after start).
                        Changes are held back, not lost: the first frame after the stall
                        carries all of them.
    reject_storm=0.5    share of new orders rejected (see reject_mode)
    reject_mode=engine  engine: acked, then REJECTED on the account stream (post-only
                        orders as POST_ONLY_FAILED, others as UNKNOWN); rest: HTTP 400 with
                        code 1006 and the order never exists
    dms_early=1s        an armed dead man's switch fires this long after it was (re)armed
                        when that is sooner than its countdown (whole seconds, rounded up)

Example: `latency=200ms,http429=0.2,http5xx=0.1,ws_drop_every=5s,seq_skip=0.01`.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from typing import Any, Literal

import attrs

RejectMode = Literal["engine", "rest"]


class FaultSpecError(ValueError):
    """The `--faults` text names an unknown knob or carries a bad value."""


@attrs.frozen(kw_only=True)
class FaultSpec:
    latency_s: float = 0.0
    http429: float = 0.0
    http5xx: float = 0.0
    http5xx_applied: float = 0.0
    ws_drop_every_s: float | None = None
    seq_skip: float = 0.0
    malformed: float = 0.0
    stall_s: float = 0.0
    stall_every_s: float = 60.0
    reject_storm: float = 0.0
    reject_mode: RejectMode = "engine"
    dms_early_s: float | None = None

    @property
    def active(self) -> bool:
        return self != FaultSpec()


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*$")


def parse_duration(text: str) -> float:
    """`"200ms"` → 0.2, `"5s"` / `"5"` → 5.0, `"2m"` → 120.0."""
    match = _DURATION.match(text)
    if not match:
        raise FaultSpecError(f"expected a duration such as 200ms, 5s or 1m, got {text!r}")
    value = float(match.group(1))
    unit = match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultSpecError(f"expected a probability between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise FaultSpecError(f"expected a probability between 0 and 1, got {text!r}")
    return value


def _reject_mode(text: str) -> str:
    if text not in ("engine", "rest"):
        raise FaultSpecError(f"expected engine or rest, got {text!r}")
    return text


_KNOBS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "latency": ("latency_s", parse_duration),
    "http429": ("http429", _probability),
    "http5xx": ("http5xx", _probability),
    "http5xx_applied": ("http5xx_applied", _probability),
    "ws_drop_every": ("ws_drop_every_s", parse_duration),
    "seq_skip": ("seq_skip", _probability),
    "malformed": ("malformed", _probability),
    "stall": ("stall_s", parse_duration),
    "stall_every": ("stall_every_s", parse_duration),
    "reject_storm": ("reject_storm", _probability),
    "reject_mode": ("reject_mode", _reject_mode),
    "dms_early": ("dms_early_s", parse_duration),
}


def parse_faults(text: str | None) -> FaultSpec:
    """Parse the `--faults` flag; an empty or missing text means no faults."""
    if not text or not text.strip():
        return FaultSpec()
    values: dict[str, Any] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise FaultSpecError(f"fault {item!r}: expected knob=value")
        if key not in _KNOBS:
            raise FaultSpecError(f"unknown fault {key!r}; known: {', '.join(sorted(_KNOBS))}")
        field, convert = _KNOBS[key]
        try:
            values[field] = convert(raw.strip())
        except FaultSpecError as exc:
            raise FaultSpecError(f"fault {key}: {exc}") from None
    if values.get("stall_every_s", 1.0) <= 0 or values.get("ws_drop_every_s", 1.0) == 0:
        raise FaultSpecError("periods (stall_every, ws_drop_every) must be positive")
    return FaultSpec(**values)


@attrs.frozen(kw_only=True)
class RestFault:
    """A REST response to send instead of the real one."""

    http_status: int
    code: int
    message: str
    apply_anyway: bool = False  # carry the request out, then answer with the error

    def body(self) -> dict[str, Any]:
        return {"status": "ERROR", "error": {"code": self.code, "message": self.message}}


@attrs.frozen(kw_only=True)
class FrameFaults:
    """What to do to one outgoing stream frame."""

    extra_seq: int = 0  # added to this frame's seq: the client sees a gap
    garbage: str | None = None  # sent just before the frame


NO_FRAME_FAULTS = FrameFaults()


@attrs.define
class FaultCounters:
    rest_429: int = 0
    rest_5xx: int = 0
    ws_drops: int = 0
    seq_skips: int = 0
    malformed_frames: int = 0
    stalls: int = 0
    rejected_orders: int = 0
    dms_fired: int = 0


class FaultController:
    """Runtime fault state of one simulator; every decision goes through here.

    `clock` returns seconds (the runner passes `trio.current_time`), so bursts and stalls
    follow trio's clock, virtual or real. The runner attaches the actions that need the
    server or the engine (`attach`); until then those calls only count.
    """

    def __init__(self, spec: FaultSpec | None = None, *, seed: int = 0, clock: Callable[[], float]) -> None:
        self.spec = spec or FaultSpec()
        self._rng = random.Random(seed ^ 0x5EED_FA17)
        self._clock = clock
        self._started_at = clock()
        self._burst_429_until = float("-inf")
        self._burst_5xx_until = float("-inf")
        self._stall_until: dict[str | None, float] = {}
        self._reject_until = float("-inf")
        self._reject_count = 0
        self._reject_mode: RejectMode = self.spec.reject_mode
        self._pending_seq_skips = 0
        self._pending_garbage = 0
        self._on_drop: Callable[[], int] | None = None
        self._on_fire_dms: Callable[[str | None], int] | None = None
        self.counters = FaultCounters()

    # -- wiring -------------------------------------------------------------------------
    def attach(
        self,
        *,
        drop_connections: Callable[[], int] | None = None,
        fire_dms: Callable[[str | None], int] | None = None,
    ) -> None:
        if drop_connections is not None:
            self._on_drop = drop_connections
        if fire_dms is not None:
            self._on_fire_dms = fire_dms

    def configure(self, spec: FaultSpec | None = None, **changes: Any) -> FaultSpec:
        """Replace the per-run spec (or some of its knobs) while running."""
        self.spec = attrs.evolve(spec or self.spec, **changes)
        self._reject_mode = self.spec.reject_mode
        return self.spec

    def clear(self) -> None:
        """Back to a healthy venue: no spec, no bursts, no pending one-shots."""
        self.spec = FaultSpec()
        self._reject_mode = "engine"
        self._burst_429_until = self._burst_5xx_until = self._reject_until = float("-inf")
        self._stall_until.clear()
        self._reject_count = self._pending_seq_skips = self._pending_garbage = 0

    # -- runtime knobs (tests) ---------------------------------------------------------
    def burst_429(self, duration_s: float) -> None:
        """Every REST request answers 429 for `duration_s`."""
        self._burst_429_until = self._clock() + duration_s

    def burst_5xx(self, duration_s: float) -> None:
        self._burst_5xx_until = self._clock() + duration_s

    def drop_connections(self) -> int:
        """Close every stream connection now; returns how many were closed."""
        dropped = self._on_drop() if self._on_drop else 0
        self.counters.ws_drops += dropped
        return dropped

    def skip_seq(self, frames: int = 1) -> None:
        """The next `frames` stream frames (any connection) each skip one `seq`."""
        self._pending_seq_skips += frames

    def send_malformed(self, frames: int = 1) -> None:
        """Inject a garbage frame before each of the next `frames` stream frames."""
        self._pending_garbage += frames

    def stall_books(self, duration_s: float, market: str | None = None) -> None:
        """Book streams (of one market, or all) send nothing for `duration_s`."""
        self._stall_until[market] = self._clock() + duration_s
        self.counters.stalls += 1

    def reject_orders(
        self, *, duration_s: float | None = None, count: int | None = None, mode: RejectMode | None = None
    ) -> None:
        """Reject every new order for a while, or the next `count` orders."""
        if duration_s is not None:
            self._reject_until = self._clock() + duration_s
        if count is not None:
            self._reject_count += count
        if mode is not None:
            self._reject_mode = mode

    def fire_dms(self, api_key: str | None = None) -> int:
        """Expire the dead man's switch now (of one account, or every armed one)."""
        fired = self._on_fire_dms(api_key) if self._on_fire_dms else 0
        self.counters.dms_fired += fired
        return fired

    # -- decisions (server and runner) -----------------------------------------------
    def rest_latency_s(self) -> float:
        return self.spec.latency_s

    def stream_latency_s(self) -> float:
        return self.spec.latency_s

    def rest_fault(self) -> RestFault | None:
        now = self._clock()
        if now < self._burst_429_until or self._chance(self.spec.http429):
            self.counters.rest_429 += 1
            return RestFault(http_status=429, code=429, message="Too Many Requests")
        if now < self._burst_5xx_until or self._chance(self.spec.http5xx):
            self.counters.rest_5xx += 1
            return RestFault(
                http_status=500,
                code=1006,
                message="Internal Server Error",
                apply_anyway=self._chance(self.spec.http5xx_applied),
            )
        return None

    def order_rejection(self) -> RejectMode | None:
        """Whether to reject the order being placed, and how."""
        reject = False
        if self._reject_count > 0:
            self._reject_count -= 1
            reject = True
        elif self._clock() < self._reject_until or self._chance(self.spec.reject_storm):
            reject = True
        if not reject:
            return None
        self.counters.rejected_orders += 1
        return self._reject_mode

    def frame_faults(self) -> FrameFaults:
        extra = 0
        garbage = None
        if self._pending_seq_skips > 0:
            self._pending_seq_skips -= 1
            extra = 1
        elif self._chance(self.spec.seq_skip):
            extra = 1
        if self._pending_garbage > 0:
            self._pending_garbage -= 1
            garbage = self._garbage()
        elif self._chance(self.spec.malformed):
            garbage = self._garbage()
        if extra:
            self.counters.seq_skips += 1
        if garbage is not None:
            self.counters.malformed_frames += 1
        if not extra and garbage is None:
            return NO_FRAME_FAULTS
        return FrameFaults(extra_seq=extra, garbage=garbage)

    def books_stalled(self, market: str) -> bool:
        now = self._clock()
        if now < self._stall_until.get(market, float("-inf")) or now < self._stall_until.get(
            None, float("-inf")
        ):
            return True
        spec = self.spec
        if spec.stall_s <= 0:
            return False
        elapsed = now - self._started_at
        # Stalls start at stall_every, 2·stall_every, ...; never in the first period.
        return elapsed >= spec.stall_every_s and (elapsed % spec.stall_every_s) < spec.stall_s

    def dms_countdown_s(self, requested_s: int) -> int:
        """The countdown the venue really arms for a request of `requested_s` (`dms_early`).

        Whole seconds, as the venue's parameter; 0 (disarm) is never changed.
        """
        early = self.spec.dms_early_s
        if requested_s <= 0 or early is None:
            return requested_s
        return max(1, min(requested_s, math.ceil(early)))

    def statistics(self) -> dict[str, int]:
        return attrs.asdict(self.counters)

    # -- helpers ------------------------------------------------------------------------
    def _chance(self, probability: float) -> bool:
        return probability > 0.0 and self._rng.random() < probability

    def _garbage(self) -> str:
        # Both kinds a real feed produces: bytes that are not JSON, and a cut-off object.
        if self._rng.random() < 0.5:
            return "\x00\x13not json\xff"
        return '{"type":"DELTA","data":{"m":"BTC-USD","b":[{"p":"1'
