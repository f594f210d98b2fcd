"""Adverse-selection guards (#16): each one alone, pure, in virtual time."""

from __future__ import annotations

from decimal import Decimal

import pytest

from extmm.config import GuardsConfig, parse_config
from extmm.domain.guards import QuoteGuards, microprice
from extmm.domain.quoting import QuoteIntent
from extmm.domain.units import MarketSpec, Side

SPEC = MarketSpec(name="BTC-USD", tick_size=Decimal(1), lot_size=Decimal("0.0001"), min_order_size=Decimal("0.0001"))
MID = 100_000.0


def intent() -> QuoteIntent:
    q = QuoteIntent(market="BTC-USD", bid_ticks=99_970, bid_lots=5, ask_ticks=100_030, ask_lots=5)
    return q.with_ladders(((99_970, 5), (99_920, 5)), ((100_030, 5), (100_080, 5)))


def test_all_guards_are_off_by_default():
    assert not GuardsConfig().any_on
    cfg = parse_config({"markets": [{"name": "BTC-USD"}]})
    assert cfg.markets[0].guards == GuardsConfig()
    assert cfg.markets[0].levels == 1 and cfg.markets[0].inventory_target_usd == 0.0
    g = QuoteGuards(GuardsConfig(), SPEC)
    g.on_fill(0.0, Side.BUY, 99_970)
    g.on_top(0.5, 90_000, 90_002, 90_001.0)
    assert g.apply(intent(), 0.5, MID) == (intent(), ())


def test_fill_cooldown_pulls_only_the_filled_side_for_its_time():
    g = QuoteGuards(GuardsConfig(fill_cooldown_ms=2000), SPEC)
    g.on_fill(10.0, Side.BUY, 99_970)
    out, notes = g.apply(intent(), 11.9, MID)
    assert [lots for _, lots in out.bid_ladder] == [0, 0]  # every level of the side
    assert out.ask_ladder == intent().ask_ladder
    assert notes == ("bid fill cooldown",)
    assert g.apply(intent(), 12.0, MID) == (intent(), ())


def test_sweep_through_our_fill_widens_that_side_then_expires():
    g = QuoteGuards(GuardsConfig(sweep_window_ms=1000, sweep_move_bps=50.0, sweep_widen_bps=5.0, sweep_hold_ms=3000), SPEC)
    g.on_quote(intent())
    g.on_top(9.9, 99_990, 99_992, 99_991.0)
    g.on_fill(10.0, Side.BUY, 99_970)
    g.on_top(10.1, 99_975, 99_977, 99_976.0)  # touch still above our fill: no sweep
    assert g.apply(intent(), 10.1, MID)[1] == ()
    g.on_top(10.2, 99_960, 99_962, 99_961.0)  # bids now below our fill price: swept through
    out, notes = g.apply(intent(), 10.3, MID)
    assert notes == ("bid swept",)
    assert [t for t, _ in out.bid_ladder] == [99_920, 99_870]  # 5 bps of 100 000 = 50 ticks
    assert out.ask_ladder == intent().ask_ladder
    assert g.apply(intent(), 13.3, MID)[1] == ()


def test_sweep_by_a_fast_touch_move_can_pull_the_side():
    cfg = GuardsConfig(sweep_window_ms=1000, sweep_move_bps=3.0, sweep_action="pull", sweep_hold_ms=2000)
    g = QuoteGuards(cfg, SPEC)
    g.on_top(1.0, 100_000, 100_002, 100_001.0)
    g.on_top(1.5, 100_040, 100_042, 100_041.0)  # asks ran up 4 bps within the window
    out, notes = g.apply(intent(), 1.5, MID)
    assert notes == ("ask swept",)
    assert [lots for _, lots in out.ask_ladder] == [0, 0]
    # The same move spread over more than the window is not a sweep.
    g = QuoteGuards(cfg, SPEC)
    g.on_top(1.0, 100_000, 100_002, 100_001.0)
    g.on_top(2.5, 100_040, 100_042, 100_041.0)
    assert g.apply(intent(), 2.5, MID)[1] == ()


def test_markout_widening_per_side_follows_the_loss():
    cfg = GuardsConfig(markout_horizon_s=10.0, markout_window=5, markout_widen_bps=1.0, markout_max_widen_bps=4.0)
    g = QuoteGuards(cfg, SPEC)
    for i in range(5):  # we buy at 100 000, the mid is 2 bps lower 10 s later
        g.on_fill(float(i), Side.BUY, 100_000)
    g.on_top(0.0, 99_999, 100_001, 100_000.0)
    g.on_top(5.0, 99_979, 99_981, 99_980.0)
    g.on_top(20.0, 99_979, 99_981, 99_980.0)
    assert g.markout_widen_bps(Side.BUY) == pytest.approx(2.0)
    assert g.markout_widen_bps(Side.SELL) == 0.0
    out, notes = g.apply(intent(), 20.0, MID)
    assert notes == ("bid markout +2.0bps",)
    assert out.bid_ticks == 99_970 - 20 and out.ask_ticks == 100_030


def test_volatility_pause_pulls_both_sides():
    g = QuoteGuards(GuardsConfig(vol_window_ms=2000, vol_pause_bps=3.0, vol_pause_ms=3000), SPEC)
    g.on_top(1.0, 99_999, 100_001, 100_000.0)
    g.on_top(2.0, 100_019, 100_021, 100_020.0)  # 2 bps: calm
    assert g.apply(intent(), 2.0, MID)[1] == ()
    g.on_top(2.5, 100_039, 100_041, 100_040.0)  # 4 bps within 2 s
    out, notes = g.apply(intent(), 2.5, MID)
    assert notes == ("volatility pause",)
    assert not any(lots for _, lots in out.bid_ladder + out.ask_ladder)
    assert g.apply(intent(), 5.6, MID)[1] == ()


def test_microprice_leans_to_the_thin_side():
    assert microprice(100, 10, 102, 10, 1.0) == 101.0
    assert microprice(100, 30, 102, 10, 1.0) == pytest.approx(101.5)  # thin asks: price goes up
    assert microprice(100, 0, 102, 10, 1.0) is None


# -- wired into the Quoter -------------------------------------------------------------------


async def test_quoter_pulls_the_filled_side_for_the_cooldown_and_reports_why(autojump_clock):
    import trio

    from actors.messages import Inventory, Proposal, TopOfBook
    from actors.quoter import quoter_actor
    from extmm.config import MarketConfig
    from extmm.ops.telemetry import Telemetry

    market = MarketConfig(name="BTC-USD", quote_notional_cap_usd=100.0, guards=GuardsConfig(fill_cooldown_ms=2000))
    q_send, q_recv = trio.open_memory_channel(16)
    out_send, out_recv = trio.open_memory_channel(64)

    def top() -> TopOfBook:
        return TopOfBook(market="BTC-USD", bid_ticks=99_990, bid_lots=50, ask_ticks=100_010, ask_lots=50,
                         mid=100_000.0, sigma=1e-5, valid=True, updated_at=trio.current_time(), seq=1)

    def inventory(position: int) -> Inventory:
        return Inventory(position_lots=position, balance_usd=1e5, equity_usd=1e5, open_bids=1, open_asks=1,
                         drawdown_usd=0.0, at=trio.current_time())

    async def latest() -> Proposal:
        await trio.sleep(0.01)
        msg = await out_recv.receive()
        while True:
            try:
                msg = out_recv.receive_nowait()
            except trio.WouldBlock:
                return msg

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: quoter_actor(spec=SPEC, market=market, inbox=q_recv, out=out_send, quote_loop_s=0.25,
                                          maker_fee_rate=0.0, telemetry=Telemetry(None)))
        await q_send.send(inventory(0))
        await q_send.send(top())
        first = await latest()
        assert first.intent.has_bid and first.intent.has_ask
        await q_send.send(inventory(10))  # our bid was filled
        await q_send.send(top())
        after = await latest()
        assert not after.intent.has_bid and after.intent.has_ask
        await trio.sleep(2.5)
        await q_send.send(top())
        later = await latest()
        assert later.intent.has_bid  # the cooldown is over
        nursery.cancel_scope.cancel()
