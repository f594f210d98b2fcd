"""Quoter: a new book that leaves the quote's orders as they were is not proposed again
until `resend_after_s` (issue 15); changed orders, inventory and funding go out at once."""

from __future__ import annotations

from decimal import Decimal

import trio

from actors.messages import FundingRate, Inventory, Proposal, TopOfBook
from actors.quoter import quoter_actor
from extmm.config import MarketConfig
from extmm.domain.units import MarketSpec
from extmm.ops.telemetry import QuoteStats, Telemetry, TelemetryView

SPEC = MarketSpec(name="BTC-USD", tick_size=Decimal(1), lot_size=Decimal("0.0001"), min_order_size=Decimal("0.0001"))


def _top(bid: int, ask: int, bid_lots: int = 50) -> TopOfBook:
    return TopOfBook(market="BTC-USD", bid_ticks=bid, bid_lots=bid_lots, ask_ticks=ask, ask_lots=50,
                     mid=(bid + ask) / 2, sigma=1e-5, valid=True, updated_at=trio.current_time(), seq=1)


def _inventory(position: int) -> Inventory:
    return Inventory(position_lots=position, balance_usd=1e5, equity_usd=1e5, open_bids=1, open_asks=1,
                     drawdown_usd=0.0, at=trio.current_time())


async def test_unchanged_quotes_are_not_proposed_again_until_the_resend_interval(autojump_clock) -> None:
    market = MarketConfig(name="BTC-USD", quote_notional_cap_usd=100.0)
    q_send, q_recv = trio.open_memory_channel[object](64)
    out_send, out_recv = trio.open_memory_channel[Proposal](64)
    view = TelemetryView()

    async def proposals() -> list[Proposal]:
        await trio.sleep(0.01)
        got = []
        while True:
            try:
                got.append(out_recv.receive_nowait())
            except trio.WouldBlock:
                return got

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: quoter_actor(
            spec=SPEC, market=market, inbox=q_recv, out=out_send, quote_loop_s=0.25, resend_after_s=0.1,
            maker_fee_rate=0.0, telemetry=Telemetry(view)))
        await q_send.send(_inventory(0))
        await q_send.send(_top(99_990, 100_010))
        (first,) = await proposals()
        # Sizes behind an unchanged touch: the same orders, nothing proposed...
        for lots in (60, 70, 80):
            await q_send.send(_top(99_990, 100_010, bid_lots=lots))
            assert await proposals() == []
        # ...until the resend interval has passed: then the same quote, with the new book's age.
        await trio.sleep(0.1)
        await q_send.send(_top(99_990, 100_010, bid_lots=90))
        (again,) = await proposals()
        assert again.intent.bid_ticks == first.intent.bid_ticks and again.book_updated_at > first.book_updated_at
        # A moved touch moves the quote: out at once.
        await q_send.send(_top(100_090, 100_110))
        (moved,) = await proposals()
        assert moved.intent.bid_ticks == first.intent.bid_ticks + 100
        assert view.get("BTC-USD", QuoteStats).bid == Decimal(moved.intent.bid_ticks)
        assert view.get("BTC-USD", QuoteStats).published == 3  # first, again, moved: what Risk got
        # Inventory and funding changes go out at once, even with the orders unchanged.
        await q_send.send(_inventory(0))  # the same position: nothing to say
        assert await proposals() == []
        await q_send.send(_inventory(1))
        assert len(await proposals()) == 1
        await q_send.send(FundingRate(rate=1e-6, exchange_ts_ms=0))
        assert len(await proposals()) == 1
        # A quiet book is still re-judged every quote loop.
        await trio.sleep(0.3)
        assert len(await proposals()) >= 1
        nursery.cancel_scope.cancel()


async def test_a_quiet_book_is_requoted_every_quote_loop_and_a_blocked_proposal_is_not_dropped(autojump_clock) -> None:
    """The Quoter's one long-lived timer: only the wait for the inbox is timed — a quiet
    inbox re-quotes every `quote_loop_s` after the last message, and a proposal waiting for
    room in a full Risk inbox is not cut short by it (it goes out as it was)."""
    market = MarketConfig(name="BTC-USD", quote_notional_cap_usd=100.0)
    q_send, q_recv = trio.open_memory_channel[object](64)
    out_send, out_recv = trio.open_memory_channel[Proposal](0)  # Risk takes one at a time
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: quoter_actor(
            spec=SPEC, market=market, inbox=q_recv, out=out_send, quote_loop_s=0.25, resend_after_s=0.1,
            maker_fee_rate=0.0, telemetry=Telemetry(TelemetryView())))
        await q_send.send(_inventory(0))
        await q_send.send(_top(99_990, 100_010))
        t0 = trio.current_time()
        await trio.sleep(1.0)  # nobody reads: the first proposal waits for room for 4 quote loops
        first = await out_recv.receive()
        assert first.proposed_at == t0 and first.book_updated_at == t0
        # From then on a quiet inbox gives one re-quote per quote loop, each `quote_loop_s`
        # after the wait began.
        times = [(await out_recv.receive()).proposed_at for _ in range(4)]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert all(abs(g - 0.25) < 1e-9 for g in gaps), gaps
        # A message restarts the wait: the next quiet re-quote comes a full loop after it.
        await trio.sleep(0.1)
        await q_send.send(_inventory(1))  # a position change: proposed at once
        changed = await out_recv.receive()
        quiet = await out_recv.receive()
        assert abs(quiet.proposed_at - changed.proposed_at - 0.25) < 1e-9
        nursery.cancel_scope.cancel()
