"""Quoter: turns the newest book top, σ, inventory and funding into a quote intent.

Event-driven: it re-quotes as soon as a message arrives, draining its inbox first so it
never works through a backlog (conflation), and at least every `quote_loop_ms` so a
quiet or stalled book is re-judged (Risk then sees its age). The model is
`extmm.domain.quoting.compute_quote`, the same code the tests exercise. A new book that
leaves the quote's orders as they were (most of a busy book's updates change sizes
behind the touch) is not proposed again until `resend_after_s` has passed since the last
proposal, which keeps the book age Risk and the Executor see fresh; a change of
inventory or funding, and any change of the orders, go out at once.

With `model.recalibrate` the Quoter estimates σ, A and k online over a rolling window
(`extmm.domain.calibration.OnlineCalibrator`: mids from the book tops, aggressor depths from the
prints the Book forwards) at most once per `estimate_every_s`, and once the data covers
`min(recalibrate_window_s, warmup_s)` quotes with them instead of the Book's σ and the
configured A and k. The estimates are logged and published in `QuoteStats.estimate`.

With any of `market.guards` on (#16, `extmm.domain.guards`), the Quoter feeds the guards
the book tops and our fills — inferred from changes of the position, priced at the side's
last quoted first level — and passes every intent through them; their notes are
published as quote reasons. With every guard off (the default) nothing changes.
"""

from __future__ import annotations

import math

import attrs
import trio
from loguru import logger

from actors.messages import FundingRate, Inventory, Proposal, QuoterIn, RiskIn, TopOfBook, TradePrints
from extmm.config import MarketConfig, PosFloat
from extmm.domain.calibration import OnlineCalibrator
from extmm.domain.guards import QuoteGuards, microprice
from extmm.domain.quoting import QuoteIntent, compute_quote
from extmm.domain.units import MarketSpec, Side
from extmm.ops.telemetry import ModelEstimate, QuoteStats, Telemetry

ESTIMATE_EVERY_S = 1.0  # a fit over a full 900 s window costs ~0.5 ms: not more often than this
WARMUP_S = 60.0  # estimates are used once the data covers min(window, this)
LOG_EVERY_S = 60.0


async def quoter_actor(
    *,
    spec: MarketSpec,
    market: MarketConfig,
    inbox: trio.MemoryReceiveChannel[QuoterIn],
    out: trio.MemorySendChannel[RiskIn],
    quote_loop_s: float,
    maker_fee_rate: float,
    telemetry: Telemetry,
    estimate_every_s: float = ESTIMATE_EVERY_S,
    resend_after_s: float | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    if not quote_loop_s >= 0:  # what trio.move_on_after(quote_loop_s) refused (NaN included)
        raise ValueError(f"quote_loop_s must be non-negative, got {quote_loop_s!r}")
    resend_s = quote_loop_s if resend_after_s is None else min(resend_after_s, quote_loop_s)
    top: TopOfBook | None = None
    inventory: Inventory | None = None
    funding_rate = 0.0
    recal = Recalibration(spec, market, every_s=estimate_every_s) if market.model.recalibrate else None
    guards = QuoteGuards(market.guards, spec) if market.guards.any_on else None
    last_intent: QuoteIntent | None = None
    sent_at = -math.inf
    published = 0
    task_status.started()
    # One long-lived cancel scope times the waits for the inbox (a new `move_on_after` per
    # message cost a quarter of the Quoter's CPU): its deadline is set to now + quote_loop_s
    # before each wait and lifted before waiting for room to send a proposal, so only the
    # wait for the inbox is ever timed, exactly as before. `carried` is what the next scope
    # starts from once a wait has used the scope up: [] after a timeout (a quiet interval),
    # [msg] when the deadline struck just as a message arrived.
    carried: list[QuoterIn] | None = None
    while True:
        with trio.CancelScope() as timer:
            while True:
                if carried is not None:
                    batch, carried = carried, None
                else:
                    carried = []  # if this wait times out, the next scope re-quotes with nothing new
                    timer.deadline = trio.current_time() + quote_loop_s
                    batch = [await inbox.receive()]
                    carried = None
                    if timer.cancel_called:
                        carried = batch  # the deadline struck as it arrived: handle it in a fresh scope
                        break
                while True:
                    try:
                        batch.append(inbox.receive_nowait())
                    except trio.WouldBlock:
                        break
                # Re-quote on a new book (its age matters downstream even when the top is the same),
                # on a quiet interval, or when what the model reads of inventory/funding changed;
                # the Account publishes for open-order counts too, which the model does not read.
                requote = not batch
                urgent = False  # inventory or funding changed: propose even an unchanged quote
                for msg in batch:
                    match msg:
                        case TopOfBook():
                            top = msg
                            requote = True
                            if recal is not None:
                                recal.on_top(msg)
                            if guards is not None:
                                guards.on_top(msg.updated_at, msg.bid_ticks, msg.ask_ticks, msg.mid if msg.valid else None)
                        case TradePrints():
                            if recal is not None:
                                recal.on_prints(msg)
                        case Inventory():
                            if inventory is None or (msg.position_lots, msg.live) != (inventory.position_lots, inventory.live):
                                requote = urgent = True
                            if guards is not None and inventory is not None and last_intent is not None:
                                moved = msg.position_lots - inventory.position_lots
                                if moved:
                                    side = Side.BUY if moved > 0 else Side.SELL
                                    ticks = last_intent.bid_ticks if moved > 0 else last_intent.ask_ticks
                                    guards.on_fill(trio.current_time(), side, ticks)
                            inventory = msg
                        case FundingRate():
                            if msg.rate != funding_rate:
                                requote = urgent = True
                            funding_rate = msg.rate
                if top is None or not requote:
                    continue
                now = trio.current_time()
                if recal is not None:
                    recal.refresh(now)
                    intent = _intent(spec, recal.market, top, inventory, funding_rate, maker_fee_rate, recal.sigma_rel)
                else:
                    intent = _intent(spec, market, top, inventory, funding_rate, maker_fee_rate)
                notes: tuple[str, ...] = (intent.note,) if intent.note else ()
                if guards is not None:
                    if market.guards.fair_value == "microprice":
                        intent = _intent(spec, recal.market if recal is not None else market, top, inventory,
                                         funding_rate, maker_fee_rate,
                                         recal.sigma_rel if recal is not None else None, fair=_microprice(spec, top))
                    intent, guard_notes = guards.apply(intent, now, top.mid if top.mid is not None else math.nan)
                    guards.on_quote(intent)
                    notes += guard_notes
                unchanged = last_intent is not None and same_orders(intent, last_intent)
                last_intent = intent
                if unchanged and batch and not urgent and now - sent_at < resend_s:
                    continue
                sent_at = now
                published += 1
                proposal = Proposal(intent=intent, mid=top.mid, book_updated_at=top.updated_at, proposed_at=now)
                try:  # `actors.channels.send`, with the timer lifted only if Risk is behind
                    out.send_nowait(proposal)
                except trio.WouldBlock:
                    timer.deadline = math.inf  # only the wait for the inbox is timed
                    await out.send(proposal)
                telemetry.publish(
                    QuoteStats(
                        market=spec.name,
                        bid=spec.ticks_to_price(intent.bid_ticks) if intent.has_bid else None,
                        bid_qty=spec.lots_to_qty(intent.bid_lots) if intent.has_bid else None,
                        ask=spec.ticks_to_price(intent.ask_ticks) if intent.has_ask else None,
                        ask_qty=spec.lots_to_qty(intent.ask_lots) if intent.has_ask else None,
                        model=intent.model,
                        reasons=notes,
                        at=now,
                        estimate=recal.estimate if recal is not None else None,
                        published=published,
                    )
                )


class Recalibration:
    """The Quoter's online σ, A, k: what it quotes with while `model.recalibrate` is on.

    `market` is the configured market with A and k replaced by the estimates (A–S, GLFT),
    `sigma_rel` the estimated relative σ (every model), both only once the data covers
    min(window, `warmup_s`); until then the configuration and the Book's σ stand. A part
    the estimator cannot give for a moment (too few prints for a fit) keeps its last value,
    and `estimate` always shows the values in use."""

    def __init__(
        self, spec: MarketSpec, market: MarketConfig, *,
        every_s: float = ESTIMATE_EVERY_S, warmup_s: float = WARMUP_S,
    ) -> None:
        self.spec = spec
        self.configured = market
        self.market = market
        self.sigma_rel: float | None = None
        self.estimate: ModelEstimate | None = None
        self.every_s = every_s
        self.warmup_s = min(warmup_s, market.model.recalibrate_window_s)
        self._tick = float(spec.tick_size)
        self.calibrator = OnlineCalibrator(
            spec.name, window_s=market.model.recalibrate_window_s, tick=self._tick
        )
        self._next_at = -math.inf
        self._logged_at = -math.inf

    def on_top(self, top: TopOfBook) -> None:
        if top.valid and top.mid is not None:
            self.calibrator.on_mid(top.updated_at, top.mid)

    def on_prints(self, msg: TradePrints) -> None:
        tick = self._tick
        prints = [(is_buy, ticks * tick) for is_buy, ticks in msg.prints]
        self.calibrator.on_prints(msg.at, msg.mid, prints, touch=msg.touch_ticks * tick)

    def refresh(self, now: float) -> None:
        """Estimate again if `every_s` has passed since the last estimate."""
        if now < self._next_at:
            return
        self._next_at = now + self.every_s
        cal = self.calibrator.estimate(now)
        if cal is None or cal.duration_s < self.warmup_s or (cal.sigma is None and cal.fit is None):
            return
        last = self.estimate
        sigma, a, k = cal.sigma, cal.A, cal.k
        if cal.sigma is None and last is not None:
            sigma = last.sigma
        if cal.fit is None and last is not None:
            a, k = last.A, last.k
        self.estimate = ModelEstimate(
            sigma=sigma, sigma_rel=cal.sigma_rel if cal.sigma is not None else self.sigma_rel,
            A=a, k=k, covered_s=cal.duration_s, at=now,
        )
        self.sigma_rel = self.estimate.sigma_rel
        model = self.configured.model
        if cal.fit is not None and model.type in ("avellaneda_stoikov", "glft"):
            self.market = attrs.evolve(self.configured, model=attrs.evolve(model, A=PosFloat(cal.fit.A), k=PosFloat(cal.fit.k)))
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            logger.info(
                "{}: recalibrated over {:.0f}s: sigma={} ({} rel/√s) A={} k={}",
                self.spec.name, cal.duration_s, _or_na(cal.sigma), _or_na(cal.sigma_rel), _or_na(cal.A), _or_na(cal.k),
            )


def same_orders(a: QuoteIntent, b: QuoteIntent) -> bool:
    """Whether two intents ask for the same orders (their diagnostics aside)."""
    return (
        a.bid_ticks == b.bid_ticks and a.bid_lots == b.bid_lots and a.ask_ticks == b.ask_ticks
        and a.ask_lots == b.ask_lots and a.more_bids == b.more_bids and a.more_asks == b.more_asks
        and a.note == b.note and a.model == b.model
    )


def _or_na(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _intent(
    spec: MarketSpec,
    market: MarketConfig,
    top: TopOfBook,
    inventory: Inventory | None,
    funding_rate: float,
    maker_fee_rate: float,
    sigma_rel: float | None = None,
    fair: float | None = None,
) -> QuoteIntent:
    if not top.valid or top.mid is None or not math.isfinite(top.mid):
        return QuoteIntent.empty(spec.name, model=market.model.type, note="book invalid")
    if inventory is None:
        return QuoteIntent.empty(spec.name, model=market.model.type, note="inventory unknown")
    return compute_quote(
        spec=spec,
        market=market,
        best_bid_ticks=top.bid_ticks,
        best_ask_ticks=top.ask_ticks,
        mid=fair if fair is not None else top.mid,
        sigma=sigma_rel if sigma_rel is not None else top.sigma if top.sigma is not None else 0.0,
        inventory_lots=inventory.position_lots,
        funding_rate=funding_rate,
        maker_fee_rate=maker_fee_rate,
    )


def _microprice(spec: MarketSpec, top: TopOfBook) -> float | None:
    """The touch microprice of `top` (None when a side is empty: the mid stands)."""
    if top.bid_ticks is None or top.ask_ticks is None or not top.bid_lots or not top.ask_lots:
        return None
    return microprice(top.bid_ticks, top.bid_lots, top.ask_ticks, top.ask_lots, float(spec.tick_size))
