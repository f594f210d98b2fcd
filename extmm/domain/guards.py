"""Adverse-selection guards (#16): pure per-market state that adjusts a `QuoteIntent`.

Every guard is configured in `markets[].guards` (read here through
`extmm.domain.params.GuardParams`) and off by default. The Quoter feeds it book tops (`on_top`) and our fills (`on_fill`, inferred from
position changes, priced at the side's last quoted first level) and passes each intent
through `apply`, which may pull or widen a side. Time is the caller's clock (trio's).

- fill cooldown: a side rests for `fill_cooldown_ms` after it was filled;
- sweep detector: within `sweep_window_ms`, the touch on a side moved through the price
  of one of our fills there, or the opposite touch reached our last quote on that side,
  or the touch moved `sweep_move_bps` against the side: the side is widened by
  `sweep_widen_bps` (or pulled) for `sweep_hold_ms`;
- markout widening: per side, the mean markout (shared tracker `extmm.domain.markouts`)
  at `markout_horizon_s` of the last `markout_window` fills; below −threshold the side
  widens by `markout_widen_bps` per bp of loss, at most `markout_max_widen_bps`;
- volatility pause: both sides off for `vol_pause_ms` once the mid's range over
  `vol_window_ms` exceeds `vol_pause_bps`;
- fair value: `microprice` quotes around the touch microprice instead of the mid.
"""

from __future__ import annotations

import math
from collections import deque

from extmm.domain.markouts import MarkoutTracker
from extmm.domain.params import GuardParams
from extmm.domain.quoting import QuoteIntent
from extmm.domain.units import MarketSpec, Side


def microprice(bid_ticks: int, bid_lots: int, ask_ticks: int, ask_lots: int, tick: float) -> float | None:
    """Size-weighted touch price: nearer the side with less size (where the price goes next)."""
    if bid_lots <= 0 or ask_lots <= 0 or bid_ticks >= ask_ticks:
        return None
    return (bid_ticks * ask_lots + ask_ticks * bid_lots) / (bid_lots + ask_lots) * tick


class QuoteGuards:
    def __init__(self, cfg: GuardParams, spec: MarketSpec) -> None:
        self.cfg = cfg
        self.spec = spec
        self._paused_until = {Side.BUY: -math.inf, Side.SELL: -math.inf}
        self._swept_until = {Side.BUY: -math.inf, Side.SELL: -math.inf}
        self._vol_until = -math.inf
        self._fills: deque[tuple[float, Side, int]] = deque(maxlen=64)  # (t, side, ticks)
        self._tops: deque[tuple[float, int, int]] = deque()  # (t, best bid, best ask) in the sweep window
        self._mids: deque[tuple[float, float]] = deque()  # (t, mid) in the volatility window
        self._last_quote: dict[Side, int] = {}
        self._tracker = MarkoutTracker(horizons_s=(cfg.markout_horizon_s,), max_pending=1000)
        self._markouts: dict[Side, deque[float]] = {
            Side.BUY: deque(maxlen=cfg.markout_window), Side.SELL: deque(maxlen=cfg.markout_window),
        }
        self.sweeps = 0
        self.vol_pauses = 0

    # -- inputs -------------------------------------------------------------------------
    def on_fill(self, t: float, side: Side, ticks: int) -> None:
        if ticks <= 0:
            return
        self._fills.append((t, side, ticks))
        if self.cfg.fill_cooldown_ms > 0:
            self._paused_until[side] = max(self._paused_until[side], t + self.cfg.fill_cooldown_ms / 1000.0)
        if self.cfg.markout_widen_bps > 0:
            self._tracker.add_fill(side, t, side.sign, self.spec.ticks_to_float(ticks))

    def on_quote(self, intent: QuoteIntent) -> None:
        """The intent last proposed (after `apply`): the prices a sweep would go through."""
        for side, ticks, lots in ((Side.BUY, intent.bid_ticks, intent.bid_lots),
                                  (Side.SELL, intent.ask_ticks, intent.ask_lots)):
            if lots > 0:
                self._last_quote[side] = ticks
            else:
                self._last_quote.pop(side, None)

    def on_top(self, t: float, bid_ticks: int | None, ask_ticks: int | None, mid: float | None) -> None:
        cfg = self.cfg
        if mid is not None and math.isfinite(mid) and mid > 0:
            if cfg.markout_widen_bps > 0:
                for done in self._tracker.observe_mid(t, mid):
                    if isinstance(done.key, Side):  # always: `on_fill` keys fills by side
                        self._markouts[done.key].append(done.bps)
            if cfg.vol_window_ms > 0:
                self._volatility(t, mid)
        if cfg.sweep_window_ms > 0 and bid_ticks is not None and ask_ticks is not None:
            self._sweeps(t, bid_ticks, ask_ticks)

    def _volatility(self, t: float, mid: float) -> None:
        window = self.cfg.vol_window_ms / 1000.0
        self._mids.append((t, mid))
        while self._mids and self._mids[0][0] < t - window:
            self._mids.popleft()
        values = [m for _, m in self._mids]
        if (max(values) - min(values)) / mid * 1e4 > self.cfg.vol_pause_bps and t >= self._vol_until:
            self._vol_until = t + self.cfg.vol_pause_ms / 1000.0
            self.vol_pauses += 1

    def _sweeps(self, t: float, bid: int, ask: int) -> None:
        cfg = self.cfg
        window = cfg.sweep_window_ms / 1000.0
        self._tops.append((t, bid, ask))
        while self._tops and self._tops[0][0] < t - window:
            self._tops.popleft()
        swept: set[Side] = set()
        # Our fills in the window with the touch now beyond their price: the flow went through us.
        for ft, side, ticks in self._fills:
            if ft >= t - window and (bid < ticks if side is Side.BUY else ask > ticks):
                swept.add(side)
        # The opposite touch reached our last quote (it would have traded through it).
        if Side.BUY in self._last_quote and ask <= self._last_quote[Side.BUY]:
            swept.add(Side.BUY)
        if Side.SELL in self._last_quote and bid >= self._last_quote[Side.SELL]:
            swept.add(Side.SELL)
        # The touch ran: bids falling (sellers sweeping) endanger our bid, and vice versa.
        move = cfg.sweep_move_bps * 1e-4
        high_bid = max(b for _, b, _ in self._tops)
        low_ask = min(a for _, _, a in self._tops)
        if high_bid - bid >= move * high_bid:
            swept.add(Side.BUY)
        if ask - low_ask >= move * low_ask:
            swept.add(Side.SELL)
        for side in swept:
            if self._swept_until[side] < t:
                self.sweeps += 1
            self._swept_until[side] = t + cfg.sweep_hold_ms / 1000.0

    # -- output -------------------------------------------------------------------------
    def markout_widen_bps(self, side: Side) -> float:
        cfg = self.cfg
        marks = self._markouts[side]
        if cfg.markout_widen_bps <= 0 or not marks:
            return 0.0
        loss = -sum(marks) / len(marks) - cfg.markout_threshold_bps
        return min(max(loss, 0.0) * cfg.markout_widen_bps, cfg.markout_max_widen_bps)

    def apply(self, intent: QuoteIntent, t: float, mid: float) -> tuple[QuoteIntent, tuple[str, ...]]:
        """The intent with paused sides pulled and guarded sides widened, and why."""
        if not (intent.has_bid or intent.has_ask or intent.more_bids or intent.more_asks):
            return intent, ()
        notes: list[str] = []
        pulled = {Side.BUY: False, Side.SELL: False}
        widen = {Side.BUY: 0.0, Side.SELL: 0.0}
        if t < self._vol_until:
            pulled = {Side.BUY: True, Side.SELL: True}
            notes.append("volatility pause")
        for side in (Side.BUY, Side.SELL):
            name = "bid" if side is Side.BUY else "ask"
            if t < self._paused_until[side]:
                pulled[side] = True
                notes.append(f"{name} fill cooldown")
            if t < self._swept_until[side]:
                if self.cfg.sweep_action == "pull":
                    pulled[side] = True
                else:
                    widen[side] += self.cfg.sweep_widen_bps
                notes.append(f"{name} swept")
            w = self.markout_widen_bps(side)
            if w > 0:
                widen[side] += w
                notes.append(f"{name} markout +{w:.1f}bps")
        if not notes:
            return intent, ()
        tick = float(self.spec.tick_size)

        def adjust(ladder: tuple[tuple[int, int], ...], side: Side) -> tuple[tuple[int, int], ...]:
            if pulled[side]:
                return tuple((ticks, 0) for ticks, _ in ladder)
            if not (math.isfinite(mid) and mid > 0):
                shift = 0  # no usable mid: Risk denies the intent anyway
            else:
                shift = math.ceil(widen[side] * 1e-4 * mid / tick - 1e-9) if widen[side] > 0 else 0
            sign = -1 if side is Side.BUY else 1
            out = []
            for ticks, lots in ladder:
                moved = ticks + sign * shift if ticks > 0 else ticks
                out.append((moved, lots if moved > 0 else 0))
            return tuple(out)

        return intent.with_ladders(adjust(intent.bid_ladder, Side.BUY), adjust(intent.ask_ladder, Side.SELL)), tuple(notes)
