"""Quoter: turns the newest book top, σ, inventory and funding into a quote intent.

Event-driven: it re-quotes as soon as a message arrives, draining its inbox first so it
never works through a backlog (conflation), and at least every `quote_loop_ms` so a
quiet or stalled book is re-judged (Risk then sees its age). The model is
`extmm.domain.quoting.compute_quote`, the same code the tests exercise.
"""

from __future__ import annotations

import math

import trio

from actors.messages import FundingRate, Inventory, Proposal, QuoterIn, RiskIn, TopOfBook
from extmm.config import MarketConfig
from extmm.domain.quoting import QuoteIntent, compute_quote
from extmm.domain.units import MarketSpec
from extmm.telemetry import QuoteStats, Telemetry


async def quoter(
    *,
    spec: MarketSpec,
    market: MarketConfig,
    inbox: trio.MemoryReceiveChannel[QuoterIn],
    out: trio.MemorySendChannel[RiskIn],
    quote_loop_s: float,
    maker_fee_rate: float,
    telemetry: Telemetry,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    top: TopOfBook | None = None
    inventory: Inventory | None = None
    funding_rate = 0.0
    task_status.started()
    while True:
        batch: list[QuoterIn] = []
        with trio.move_on_after(quote_loop_s):
            batch.append(await inbox.receive())
        while True:
            try:
                batch.append(inbox.receive_nowait())
            except trio.WouldBlock:
                break
        # Re-quote on a new book (its age matters downstream even when the top is the same),
        # on a quiet interval, or when what the model reads of inventory/funding changed;
        # the Account publishes for open-order counts too, which the model does not read.
        requote = not batch
        for msg in batch:
            match msg:
                case TopOfBook():
                    top = msg
                    requote = True
                case Inventory():
                    if inventory is None or (msg.position_lots, msg.live) != (inventory.position_lots, inventory.live):
                        requote = True
                    inventory = msg
                case FundingRate():
                    requote = requote or msg.rate != funding_rate
                    funding_rate = msg.rate
        if top is None or not requote:
            continue
        intent = _intent(spec, market, top, inventory, funding_rate, maker_fee_rate)
        now = trio.current_time()
        await out.send(Proposal(intent=intent, mid=top.mid, book_updated_at=top.updated_at, proposed_at=now))
        telemetry.publish(
            QuoteStats(
                market=spec.name,
                bid=spec.ticks_to_price(intent.bid_ticks) if intent.has_bid else None,
                bid_qty=spec.lots_to_qty(intent.bid_lots) if intent.has_bid else None,
                ask=spec.ticks_to_price(intent.ask_ticks) if intent.has_ask else None,
                ask_qty=spec.lots_to_qty(intent.ask_lots) if intent.has_ask else None,
                model=intent.model,
                reasons=(intent.note,) if intent.note else (),
                at=now,
            )
        )


def _intent(
    spec: MarketSpec,
    market: MarketConfig,
    top: TopOfBook,
    inventory: Inventory | None,
    funding_rate: float,
    maker_fee_rate: float,
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
        mid=top.mid,
        sigma=top.sigma if top.sigma is not None else 0.0,
        inventory_lots=inventory.position_lots,
        funding_rate=funding_rate,
        maker_fee_rate=maker_fee_rate,
    )
