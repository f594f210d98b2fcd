"""The latency probe's bookkeeping: its settings, the grid its mids walk, and per market
the calibration, the frames it published and the orders that answered them.

Pure (times are passed in); `extmm.sim.probe.LatencyProbe` drives it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

from extmm.domain.units import MarketSpec, Side

# -- the mid path ----------------------------------------------------------------------------------


def grid_cycle(levels: int) -> list[int]:
    """One cycle of grid positions: up by 2 to 2·levels, then down by 2 through the odd ones.

    Every position occurs once per cycle, so within a cycle a price names its frame, and
    consecutive positions are at most 2 apart, so a move never jumps across a resting quote
    that is more than two steps from the mid (the crowd would trade with it).
    """
    if levels < 1:
        raise ValueError("levels must be ≥ 1")
    return list(range(0, 2 * levels + 1, 2)) + list(range(2 * levels - 1, 0, -2))


@attrs.frozen(kw_only=True)
class ProbeSettings:
    """rate_hz: mid moves per second per market. step_ticks: grid spacing; one move is one
    or two steps. levels: the mid rises 2·levels steps and comes back (one cycle). settle_s:
    how long the bot's quotes must stay unchanged before their offsets from the mid count
    as learnt. calibrate_timeout_s: give up on a market that has not quoted by then."""

    rate_hz: float = 50.0
    step_ticks: int = 6
    levels: int = 50
    settle_s: float = 0.3
    calibrate_timeout_s: float = 30.0

    def __attrs_post_init__(self) -> None:
        if not self.rate_hz > 0 or self.step_ticks < 3 or self.levels < 1 or self.settle_s < 0:
            raise ValueError("ProbeSettings: need rate_hz > 0, step_ticks ≥ 3, levels ≥ 1, settle_s ≥ 0")

    @property
    def tolerance_ticks(self) -> int:
        """How far an order may sit from the price a frame implies and still answer it;
        below half a step, so no two frames of a cycle can claim the same order."""
        return (self.step_ticks - 1) // 2


# -- records ---------------------------------------------------------------------------------------


@attrs.define(slots=True)
class ProbeFrame:
    """One move of one market's mid and when its book frame left the simulator."""

    market: str
    number: int
    mid_ticks: int
    pushed_at: float  # queued for the stream connections
    seqs: tuple[int, ...] = ()
    written_at: float | None = None  # handed to the socket
    answered: set[Side] = attrs.Factory(set)


@attrs.frozen(kw_only=True)
class Sample:
    """An order request that answers a probe frame."""

    market: str
    side: Side
    frame: int
    seqs: tuple[int, ...]
    mid_ticks: int
    price_ticks: int
    pushed_at: float
    written_at: float
    received_at: float
    external_id: str

    @property
    def latency_s(self) -> float:
        return self.received_at - self.written_at

    def to_json(self) -> dict[str, Any]:
        return {
            "market": self.market,
            "side": self.side.value,
            "frame": self.frame,
            "seqs": list(self.seqs),
            "mid_ticks": self.mid_ticks,
            "price_ticks": self.price_ticks,
            "pushed_at": self.pushed_at,
            "written_at": self.written_at,
            "received_at": self.received_at,
            "external_id": self.external_id,
        }


class MarketTrack:
    """The probe's state for one market: calibration, position on the grid, recent frames."""

    def __init__(self, spec: MarketSpec, base_ticks: int, settings: ProbeSettings) -> None:
        self.spec = spec
        self.name = spec.name
        self.base_ticks = base_ticks
        self.cycle = grid_cycle(settings.levels)
        self.step_ticks = settings.step_ticks
        self.position = 0  # index into cycle
        self.state = "idle"  # idle | calibrating | running | failed | stopped
        self.reason = ""
        self.bid_offset: int | None = None  # mid − our bid, ticks
        self.ask_offset: int | None = None  # our ask − mid, ticks
        # Frames older than one cycle share prices with newer ones: they are forgotten.
        self.frames: deque[ProbeFrame] = deque(maxlen=len(self.cycle))
        self.frames_sent = 0
        self.frames_written = 0
        self.orders = 0
        self.matched = 0
        self.unmatched = 0
        self.repeats = 0
        self._quotes_seen: tuple[str, str] | None = None
        self._quotes_since = 0.0

    @property
    def mid_ticks(self) -> int:
        return self.base_ticks + self.step_ticks * self.cycle[self.position]

    def advance(self) -> int:
        self.position = (self.position + 1) % len(self.cycle)
        return self.mid_ticks

    def calibrate(self, bids: list[tuple[str, int]], asks: list[tuple[str, int]], now: float, settle_s: float) -> bool:
        """Learn the quote offsets once exactly one bid and one ask have rested unchanged for settle_s."""
        if len(bids) != 1 or len(asks) != 1:
            self._quotes_seen = None
            return False
        seen = (bids[0][0], asks[0][0])
        if seen != self._quotes_seen:
            self._quotes_seen, self._quotes_since = seen, now
            return False
        if now - self._quotes_since < settle_s:
            return False
        self.bid_offset = self.mid_ticks - bids[0][1]
        self.ask_offset = asks[0][1] - self.mid_ticks
        return True

    def implied_mid(self, side: Side, price_ticks: int) -> int | None:
        if self.bid_offset is None or self.ask_offset is None:
            return None
        return price_ticks + self.bid_offset if side is Side.BUY else price_ticks - self.ask_offset

    def statistics(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "bid_offset_ticks": self.bid_offset,
            "ask_offset_ticks": self.ask_offset,
            "frames": self.frames_sent,
            "frames_written": self.frames_written,
            "orders": self.orders,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "repeats": self.repeats,
        }
