"""Book: applies the Feed's frames to the local L2 book and publishes the top.

Checks `seq` (through `extmm.domain.book`), asks the Feed for a resync when the book
breaks, keeps the rolling volatility, and publishes a `TopOfBook` after every frame to
the Quoter and the Account (both conflate: they keep only the newest). Public trades
(only streamed for a market that recalibrates online) go to the Quoter as `TradePrints`,
with the mid and spread of the book they hit.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import trio
from loguru import logger

from actors.channels import offer
from actors.messages import (
    AccountIn,
    BookFrame,
    FeedControl,
    FeedOut,
    FeedReset,
    FundingRate,
    MarkPrice,
    PublicTrades,
    QuoterIn,
    Resync,
    TopOfBook,
    TradePrints,
)
from extmm.domain.book import Book, MalformedBookFrame
from extmm.domain.units import MarketSpec
from extmm.domain.volatility import EwmaVolatility
from extmm.ops.telemetry import BookStats, Telemetry

DEFAULT_PRIOR_SIGMA = 1e-4  # relative σ per √s (≈ 56 % a year) until the estimator warms up


async def book_actor(
    *,
    spec: MarketSpec,
    inbox: trio.MemoryReceiveChannel[FeedOut],
    to_quoter: trio.MemorySendChannel[QuoterIn],
    to_account: trio.MemorySendChannel[AccountIn],
    feed_control: trio.MemorySendChannel[FeedControl],
    telemetry: Telemetry,
    vol_interval_s: float = 1.0,
    vol_half_life_s: float = 120.0,
    prior_sigma: float = DEFAULT_PRIOR_SIGMA,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    book = Book(spec)
    vol = EwmaVolatility(interval_s=vol_interval_s, half_life_s=vol_half_life_s, prior_sigma=prior_sigma)
    frames = gaps = reconnects = malformed = 0
    last_top: TopOfBook | None = None
    task_status.started()
    async for msg in inbox:
        match msg:
            case BookFrame():
                frames += 1
                try:
                    gap = book.apply(msg.data, msg.seq, msg.type)
                except MalformedBookFrame as exc:
                    malformed += 1
                    logger.warning("{}: malformed book frame skipped, resyncing: {}", spec.name, exc)
                    gap = None
                    _request_resync(feed_control, "malformed frame")
                if gap is not None:
                    gaps += 1
                    if gap.needs_resync:
                        logger.warning("{}: book gap {} (expected {}, got {}); resync", spec.name,
                                       gap.reason.value, gap.expected_seq, gap.got_seq)
                        _request_resync(feed_control, gap.reason.value)
                top = _top(spec, book, vol, msg.received_at)
            case FeedReset():
                reconnects += 1
                book.invalidate()
                top = _top(spec, book, vol, trio.current_time())
            case FundingRate():
                offer(to_quoter, msg)
                continue
            case MarkPrice():
                continue
            case PublicTrades():
                _forward_prints(spec, book, msg, to_quoter)
                continue
        if top.valid and top.mid is not None:
            vol.update(top.updated_at, top.mid)
        if last_top is None or _changed(last_top, top):
            offer(to_quoter, top)
            offer(to_account, top)
            last_top = top
            telemetry.publish(
                BookStats(
                    market=spec.name,
                    bid=spec.ticks_to_price(top.bid_ticks) if top.bid_ticks is not None else None,
                    ask=spec.ticks_to_price(top.ask_ticks) if top.ask_ticks is not None else None,
                    bid_qty=spec.lots_to_qty(top.bid_lots) if top.bid_lots is not None else None,
                    ask_qty=spec.lots_to_qty(top.ask_lots) if top.ask_lots is not None else None,
                    mid=top.mid,
                    sigma=top.sigma,
                    valid=top.valid,
                    updated_at=top.updated_at,
                    frames=frames,
                    gaps=gaps,
                    reconnects=reconnects,
                    malformed=malformed,
                )
            )


def _forward_prints(
    spec: MarketSpec, book: Book, msg: PublicTrades, to_quoter: trio.MemorySendChannel[QuoterIn]
) -> None:
    """Prints measured against the book they hit; none while the book is not two-sided."""
    top = book.top()
    if not top.valid or top.mid is None or top.best_bid_ticks is None or top.best_ask_ticks is None:
        return
    try:
        prints = parse_prints(spec, msg.data)
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        logger.warning("{}: malformed public trades frame skipped: {!r}", spec.name, exc)
        return
    if prints:
        touch = (top.best_ask_ticks - top.best_bid_ticks) / 2.0
        offer(to_quoter, TradePrints(prints=prints, mid=top.mid, touch_ticks=touch, at=msg.received_at))


def parse_prints(spec: MarketSpec, data: object) -> tuple[tuple[bool, int], ...]:
    """Public trades `[{S, p, ...}]` → (taker is buy, price ticks); raises on anything unreadable."""
    if not isinstance(data, list):
        raise TypeError(f"expected a list of trades, got {type(data).__name__}")
    prints = []
    for trade in data:
        side = trade["S"]
        if side not in ("BUY", "SELL"):
            raise ValueError(f"trade side {side!r}")
        prints.append((side == "BUY", spec.price_to_ticks(Decimal(str(trade["p"])))))
    return tuple(prints)


def _top(spec: MarketSpec, book: Book, vol: EwmaVolatility, at: float) -> TopOfBook:
    # What `book.top()` gives, read straight off the book (no BookTop, no microprice).
    bid = book.best_bid()
    ask = book.best_ask()
    return TopOfBook(
        market=spec.name,
        bid_ticks=bid[0] if bid else None,
        bid_lots=bid[1] if bid else None,
        ask_ticks=ask[0] if ask else None,
        ask_lots=ask[1] if ask else None,
        mid=book.mid,
        sigma=vol.sigma,
        valid=book.valid and bid is not None and ask is not None,
        updated_at=at,
        seq=book.last_seq,
    )


def _changed(sent: TopOfBook, new: TopOfBook) -> bool:
    """Publish when the top or validity changed, and at least every frame's timestamp
    second so consumers can tell a quiet book from a stale one."""
    return (
        sent.valid != new.valid
        or sent.bid_ticks != new.bid_ticks
        or sent.ask_ticks != new.ask_ticks
        or sent.bid_lots != new.bid_lots
        or sent.ask_lots != new.ask_lots
        or new.updated_at - sent.updated_at >= 0.5
    )


def _request_resync(feed_control: trio.MemorySendChannel[FeedControl], reason: str) -> None:
    try:
        feed_control.send_nowait(Resync(reason=reason))
    except trio.WouldBlock:
        pass  # a resync is already pending
