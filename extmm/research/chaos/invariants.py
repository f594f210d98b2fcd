"""The invariants a chaos run checks continuously, over plain observations.

Pure: the runner samples the simulator (the truth) and the bot (its telemetry and what
its port saw) every 100 ms of virtual time into `MarketObservation`s and feeds them to
`InvariantChecker.observe` with the time. Each breach counts once per episode; the first
few are described for the report. The rules (tolerances in `Tolerances`):

- orphans: an order of ours open on the venue for more than 2 s that the bot neither
  reports open nor has tried to cancel in the last 5 s; while the venue refuses every
  request nothing can be cancelled, so the clocks start over when it answers again;
- lost cancels: an order still open on the venue 5 s after the bot last asked to cancel
  it (a cancel that did not take must be retried, known to the bot or not);
- duplicates: no externalId is sent twice as a new order;
- inventory: equals the venue's position whenever the account stream has been up and no
  fill happened for `settle_s`;
- net notional: |position| × mid ≤ (limit + one quote) × 1.02 (the mid drifts);
- open orders ≤ `max_open_orders`;
- stale books: none of our orders rests once the bot's feed has delivered no book frame
  for the stale threshold plus 1 s (the venue answering).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal

import attrs

MAX_DESCRIBED = 20


@attrs.frozen(kw_only=True)
class MarketLimits:
    """What one market must stay within (from the bot's config)."""

    max_net_position_usd: float
    quote_notional_usd: float  # one quote's size: a fill racing a replace may add it
    max_open_orders: int
    stale_after_s: float  # risk.stale_book_ms


@attrs.frozen(kw_only=True)
class Tolerances:
    orphan_after_s: float = 2.0  # an open order must be known to the bot within this
    # A cancel attempt keeps an order "known" this long: a lost one is found again by the
    # Executor's reconciliation (every 2 s; one pass may fail too).
    cancel_window_s: float = 5.0
    stale_grace_s: float = 1.0  # after the stale threshold, quotes must be gone within this
    settle_s: float = 1.0  # no fill (and the account stream up) this long before comparing positions
    # Quotes are sized at the mid of their moment; the mid moves on while the position is held.
    notional_price_drift: float = 0.02


@attrs.frozen(kw_only=True)
class MarketObservation:
    """One market at one instant: the venue's truth next to the bot's view."""

    market: str
    venue_open: frozenset[str]  # externalIds of our orders open on the venue
    bot_open: frozenset[str]  # externalIds the bot's Executor reports open
    # Of the venue-open orders: when the bot last asked to cancel each one (by id, or as
    # the order a replace cancels), and when it last cancelled the whole market.
    cancel_requested_at: Mapping[str, float] = attrs.field(factory=dict)
    market_cancel_at: float | None = None
    venue_position: Decimal
    bot_position: Decimal | None  # None: the bot has not reported one yet
    account_stream_up: bool  # the bot's account stream has been up for `settle_s`
    since_fill_s: float  # since our last fill in this market on the venue (inf: none yet)
    mid: float | None  # the venue's mid (notional of the position)
    book_age_s: float | None  # since the bot's feed last delivered a book frame; None: never


@attrs.frozen(kw_only=True)
class InvariantReport:
    orphan_orders: int
    lost_cancels: int  # orders still open long after the bot's cancel, never retried
    duplicate_orders: int
    position_drift: int  # episodes of inventory ≠ venue position with the stream up and settled
    max_position_drift: Decimal
    max_net_notional_usd: float
    limit_usd: float  # the largest allowed notional: (net limit + one quote) × (1 + price drift)
    notional_breaches: int
    max_open_orders: int
    open_order_breaches: int
    stale_quotes: int  # episodes of our orders resting on a stale book past the grace
    comparisons: int  # position comparisons made (a run with none proves nothing)
    quoting_share: float  # share of samples with an order of ours resting (0 proves nothing)
    violations: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not (
            self.orphan_orders
            or self.lost_cancels
            or self.duplicate_orders
            or self.position_drift
            or self.notional_breaches
            or self.open_order_breaches
            or self.stale_quotes
        )


class InvariantChecker:
    def __init__(self, limits: dict[str, MarketLimits], tolerances: Tolerances = Tolerances()) -> None:
        self.limits = limits
        self.tol = tolerances
        self._first_open: dict[str, float] = {}  # externalId → first seen open on the venue
        self._reachable_since = float("-inf")  # end of the last venue outage
        self._reachable = True
        self._orphans: set[str] = set()
        self._lost: set[str] = set()
        self._drifting: set[str] = set()  # markets in a drift episode
        self._stale: set[str] = set()  # markets in a stale-quote episode
        self._over_notional: set[str] = set()
        self._over_orders: set[str] = set()
        self.duplicates: list[str] = []
        self.position_drift = 0
        self.max_position_drift = Decimal(0)
        self.max_net_notional_usd = 0.0
        self.notional_breaches = 0
        self.max_open_orders = 0
        self.open_order_breaches = 0
        self.stale_quotes = 0
        self.comparisons = 0
        self._samples = 0
        self._quoting = 0
        self.violations: list[str] = []

    def _violation(self, now: float, text: str) -> None:
        if len(self.violations) < MAX_DESCRIBED:
            self.violations.append(f"t={now:.1f}s {text}")

    def note_duplicates(self, now: float, external_ids: Iterable[str]) -> None:
        """externalIds the bot sent more than once as a new order (each counted once)."""
        for ext in external_ids:
            if ext not in self.duplicates:
                self.duplicates.append(ext)
                self._violation(now, f"externalId {ext} sent twice as a new order")

    def observe(self, now: float, markets: Iterable[MarketObservation], *, venue_reachable: bool = True) -> None:
        """`venue_reachable`: False while the venue refuses every request (429/5xx storm):
        nothing can be cancelled then, and the orphan clock restarts when it answers again."""
        if venue_reachable and not self._reachable:
            self._reachable_since = now
        self._reachable = venue_reachable
        still_open: set[str] = set()
        for obs in markets:
            still_open |= obs.venue_open
            self._orders(now, obs)
            self._position(now, obs)
            self._notional(now, obs)
            self._stale_book(now, obs)
        for ext in [e for e in self._first_open if e not in still_open]:
            del self._first_open[ext]

    # -- the rules ----------------------------------------------------------------------
    def _orders(self, now: float, obs: MarketObservation) -> None:
        self._samples += 1
        self._quoting += bool(obs.venue_open)
        window = self.tol.cancel_window_s
        for ext in obs.venue_open:
            first = self._first_open.setdefault(ext, now)
            cancel_at = obs.cancel_requested_at.get(ext)
            if obs.market_cancel_at is not None and obs.market_cancel_at >= first:
                cancel_at = max(cancel_at or obs.market_cancel_at, obs.market_cancel_at)
            if not self._reachable:
                continue
            since = max(first, self._reachable_since)
            if cancel_at is not None and now - cancel_at <= window:
                continue  # being cancelled
            if cancel_at is not None:
                if ext not in self._lost and now - max(cancel_at, self._reachable_since) > window:
                    self._lost.add(ext)
                    self._violation(
                        now, f"{obs.market}: {ext} still open {now - cancel_at:.1f}s after its cancel"
                    )
                continue
            if ext not in self._orphans and ext not in obs.bot_open and now - since > self.tol.orphan_after_s:
                self._orphans.add(ext)
                self._violation(
                    now, f"{obs.market}: orphan {ext} open {now - first:.1f}s and not tracked by the bot"
                )
        count = len(obs.venue_open)
        self.max_open_orders = max(self.max_open_orders, count)
        limit = self.limits[obs.market].max_open_orders
        if count > limit:
            if obs.market not in self._over_orders:
                self._over_orders.add(obs.market)
                self.open_order_breaches += 1
                self._violation(now, f"{obs.market}: {count} open orders > max_open_orders {limit}")
        else:
            self._over_orders.discard(obs.market)

    def _position(self, now: float, obs: MarketObservation) -> None:
        settled = obs.since_fill_s >= self.tol.settle_s
        if not (obs.account_stream_up and settled and obs.bot_position is not None):
            return
        self.comparisons += 1
        drift = abs(obs.bot_position - obs.venue_position)
        self.max_position_drift = max(self.max_position_drift, drift)
        if drift:
            if obs.market not in self._drifting:
                self._drifting.add(obs.market)
                self.position_drift += 1
                self._violation(
                    now,
                    f"{obs.market}: bot inventory {obs.bot_position} ≠ venue position {obs.venue_position}",
                )
        else:
            self._drifting.discard(obs.market)

    def _notional(self, now: float, obs: MarketObservation) -> None:
        if obs.mid is None or not math.isfinite(obs.mid):
            return
        notional = abs(float(obs.venue_position)) * obs.mid
        self.max_net_notional_usd = max(self.max_net_notional_usd, notional)
        lim = self.limits[obs.market]
        allowed = (lim.max_net_position_usd + lim.quote_notional_usd) * (1 + self.tol.notional_price_drift)
        if notional > allowed:
            if obs.market not in self._over_notional:
                self._over_notional.add(obs.market)
                self.notional_breaches += 1
                self._violation(now, f"{obs.market}: net notional ${notional:.2f} > ${allowed:.2f}")
        else:
            self._over_notional.discard(obs.market)

    def _stale_book(self, now: float, obs: MarketObservation) -> None:
        lim = self.limits[obs.market]
        stale = obs.book_age_s is not None and obs.book_age_s > lim.stale_after_s + self.tol.stale_grace_s
        # While the venue refuses every request nothing can be cancelled (the DMS is the
        # backstop then); once it answers again the grace starts over.
        stale = stale and self._reachable and now - self._reachable_since > self.tol.stale_grace_s
        if stale and obs.venue_open:
            if obs.market not in self._stale:
                self._stale.add(obs.market)
                self.stale_quotes += 1
                self._violation(
                    now,
                    f"{obs.market}: {len(obs.venue_open)} orders rest on a book {obs.book_age_s:.1f}s old "
                    f"(stale after {lim.stale_after_s:g}s)",
                )
        else:
            self._stale.discard(obs.market)

    # -- result -------------------------------------------------------------------------
    def report(self) -> InvariantReport:
        limit = max((m.max_net_position_usd + m.quote_notional_usd for m in self.limits.values()), default=0.0)
        limit = round(limit * (1 + self.tol.notional_price_drift), 2)
        return InvariantReport(
            orphan_orders=len(self._orphans),
            lost_cancels=len(self._lost),
            duplicate_orders=len(self.duplicates),
            position_drift=self.position_drift,
            max_position_drift=self.max_position_drift,
            max_net_notional_usd=round(self.max_net_notional_usd, 2),
            limit_usd=limit,
            notional_breaches=self.notional_breaches,
            max_open_orders=self.max_open_orders,
            open_order_breaches=self.open_order_breaches,
            stale_quotes=self.stale_quotes,
            comparisons=self.comparisons,
            quoting_share=round(self._quoting / self._samples, 3) if self._samples else 0.0,
            violations=tuple(self.violations),
        )
