"""Ladders (#16): several orders a side; each level is replaced only when it moved, and
every limit (position at the fill price, open orders) counts every level."""

from __future__ import annotations

from decimal import Decimal

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.executor import ExecutorParams, _Executor
from actors.messages import Approved
from extmm.config import MarketConfig, ModelConfig, RiskConfig
from extmm.domain.execution import SideTarget
from extmm.domain.quoting import QuoteIntent, compute_quote
from extmm.domain.risk import RiskSnapshot, clamp_intent
from extmm.domain.units import MarketSpec
from extmm.ops.telemetry import Telemetry
from extmm.venue.signing import ExternalIdFactory
from extmm.venue.types import OrderRequest, PlacedOrder

SPEC = MarketSpec(name="BTC-USD", tick_size=Decimal(1), lot_size=Decimal("0.0001"), min_order_size=Decimal("0.0001"))


class RecordingPort:
    """Acknowledges every order at once and records what was sent."""

    def __init__(self) -> None:
        self.places: list[OrderRequest] = []
        self.cancels: list[str] = []

    async def place_order(self, order: OrderRequest) -> PlacedOrder:
        self.places.append(order)
        return PlacedOrder(id=len(self.places), external_id=order.external_id)

    async def cancel_order_by_external_id(self, external_id: str) -> None:
        self.cancels.append(external_id)


def _executor(port: RecordingPort, levels: int, max_open_orders: int = 1_000) -> _Executor:
    params = ExecutorParams(
        stp="ACCOUNT", post_only=True, replace_threshold_bps=2.0, coalesce_s=0.0, order_expiry_s=3600.0,
        maker_fee_rate=Decimal(0), taker_fee_rate=Decimal("0.00025"), prefix="extmm", levels=levels,
        max_open_orders=max_open_orders,
    )
    return _Executor(port=port, spec=SPEC, params=params, ids=ExternalIdFactory("extmm", run_id="t"),
                     epoch_ms=lambda: 1_790_000_000_000, telemetry=Telemetry(None))


def _approved(bids: list[tuple[int, int]], asks: list[tuple[int, int]]) -> Approved:
    def target(level: tuple[int, int]) -> SideTarget:
        return SideTarget(ticks=level[0], lots=level[1])

    return Approved(
        bid=target(bids[0]), ask=target(asks[0]), more_bids=tuple(target(b) for b in bids[1:]),
        more_asks=tuple(target(a) for a in asks[1:]), decided_at=trio.current_time(),
    )


async def test_ladder_places_every_level_then_replaces_only_the_levels_that_moved():
    port = RecordingPort()
    ex = _executor(port, levels=3)
    bids = [(100_000, 10), (99_950, 10), (99_900, 20)]
    asks = [(100_100, 10), (100_150, 10), (100_200, 20)]
    async with trio.open_nursery() as nursery:
        for slot in ex.orders.slots:
            nursery.start_soon(ex.side_worker, slot)
        ex.on_approved(_approved(bids, asks))
        await trio.sleep(0.05)
        assert len(port.places) == 6 and all(p.cancel_id is None for p in port.places)
        assert sorted(int(p.price) for p in port.places) == sorted(t for t, _ in bids + asks)
        by_price = {int(p.price): p.external_id for p in port.places}

        # Level 1 of the bids moves 10 bps, level 2 of the asks moves 1 tick (< 2 bps), level 0
        # of the asks changes size by 50 %: two replaces, each of its own level's order.
        moved_bids = [bids[0], (99_850, 10), bids[2]]
        moved_asks = [(100_100, 15), asks[1], (100_201, 20)]
        ex.on_approved(_approved(moved_bids, moved_asks))
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    replaces = port.places[6:]
    assert {(int(p.price), p.cancel_id) for p in replaces} == {
        (99_850, by_price[99_950]),
        (100_100, by_price[100_100]),
    }
    assert port.cancels == []
    # 6 live orders, and the 2 replaced ones until the venue confirms they are gone.
    assert len(ex.orders.open_ids) == 8
    assert {slot.live for slot in ex.orders.slots} == {p.external_id for p in port.places} - {
        by_price[99_950], by_price[100_100]}
    assert ex.counts.replaces == 2


async def test_ladder_levels_count_against_the_open_order_cap():
    port = RecordingPort()
    ex = _executor(port, levels=3, max_open_orders=4)
    async with trio.open_nursery() as nursery:
        for slot in ex.orders.slots:
            nursery.start_soon(ex.side_worker, slot)
        ex.on_approved(_approved([(100_000, 10), (99_950, 10), (99_900, 20)],
                                 [(100_100, 10), (100_150, 10), (100_200, 20)]))
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert len(port.places) == 4


def test_compute_quote_builds_a_ladder_away_from_the_touch():
    market = MarketConfig(name="BTC-USD", levels=3, level_spacing_bps=5.0, level_size_multiplier=2.0,
                          quote_notional_cap_usd=100.0)
    q = compute_quote(spec=SPEC, market=market, best_bid_ticks=99_990, best_ask_ticks=100_010,
                      mid=100_000.0, sigma=0.0, inventory_lots=0)
    bids, asks = q.bid_ladder, q.ask_ladder
    assert len(bids) == len(asks) == 3
    assert [t for t, _ in bids] == [bids[0][0], bids[0][0] - 50, bids[0][0] - 100]
    assert [t for t, _ in asks] == [asks[0][0], asks[0][0] + 50, asks[0][0] + 100]
    assert [lots for _, lots in bids] == [10, 20, 40]


def test_inventory_target_moves_the_skew_towards_it():
    flat = MarketConfig(name="BTC-USD", quote_notional_cap_usd=100.0)
    target = MarketConfig(name="BTC-USD", quote_notional_cap_usd=100.0, inventory_target_usd=100.0)
    book = dict(best_bid_ticks=99_000, best_ask_ticks=101_000, mid=100_000.0, sigma=1e-4)
    for model in ("seed", "avellaneda_stoikov", "glft"):
        base = compute_quote(spec=SPEC, market=MarketConfig(name="BTC-USD", quote_notional_cap_usd=100.0,
                                                            model=ModelConfig(type=model)),
                             inventory_lots=0, **book)
        m = MarketConfig(name="BTC-USD", quote_notional_cap_usd=100.0, inventory_target_usd=100.0,
                         model=ModelConfig(type=model))
        wants_long = compute_quote(spec=SPEC, market=m, inventory_lots=0, **book)
        # Flat but wanting +1 quote size: quotes lean up and the bid is the larger side.
        assert wants_long.reservation > base.reservation, model
        assert wants_long.bid_lots > wants_long.ask_lots, model
        # Holding the target: the same quote as flat without a target.
        at_target = compute_quote(spec=SPEC, market=m, inventory_lots=10, **book)
        assert at_target.reservation == base.reservation, model
        assert (at_target.bid_lots, at_target.ask_lots) == (base.bid_lots, base.ask_lots), model
    assert target.inventory_target_usd == 100.0 and flat.inventory_target_usd == 0.0


# -- limits at the fill price, every level counted (Hypothesis) ------------------------------

ladder = st.lists(st.tuples(st.integers(1, 300), st.integers(0, 400)), min_size=1, max_size=4)


def _build(first: int, steps: list[tuple[int, int]], sign: int) -> tuple[tuple[int, int], ...]:
    out, ticks = [], first
    for i, (gap, lots) in enumerate(steps):
        ticks = ticks if i == 0 else ticks + sign * gap
        out.append((ticks, lots))
    return tuple(out)


@settings(max_examples=300, deadline=None)
@given(
    mid=st.integers(1_000, 200_000),
    bid_off=st.integers(-50, 400),
    ask_off=st.integers(-50, 400),
    bids=ladder,
    asks=ladder,
    position=st.integers(-40_000, 40_000),
    limit=st.floats(0, 5_000),
    total=st.one_of(st.none(), st.floats(1, 10_000)),
    others=st.floats(0, 10_000),
    open_orders=st.integers(0, 10),
    live_bids=st.integers(0, 4),
    live_asks=st.integers(0, 4),
    max_open=st.integers(1, 12),
    fill_share=st.floats(0, 1),
)
def test_no_fill_at_its_own_price_takes_the_position_past_the_limit(
    mid, bid_off, ask_off, bids, asks, position, limit, total, others, open_orders, live_bids, live_asks,
    max_open, fill_share,
):
    bid_ladder = _build(max(mid - bid_off, 1), bids, -1)
    ask_ladder = _build(mid + ask_off + (1 if ask_off <= -bid_off else 0) + max(bid_off, 0) * 0, asks, 1)
    bid_ladder = tuple((t, lots if t > 0 else 0) for t, lots in bid_ladder)
    if bid_ladder[0][0] >= ask_ladder[0][0]:
        ask_ladder = tuple((t + bid_ladder[0][0] - ask_ladder[0][0] + 1, lots) for t, lots in ask_ladder)
    intent = QuoteIntent(market="BTC-USD", bid_ticks=0, bid_lots=0, ask_ticks=0, ask_lots=0)
    intent = intent.with_ladders(bid_ladder, ask_ladder)
    limits = RiskConfig(max_net_position_usd=limit, max_open_orders=max_open, min_balance_usd=0.0,
                        max_total_net_position_usd=total)
    decision = clamp_intent(intent, spec=SPEC, limits=limits, snapshot=RiskSnapshot(
        mid=float(mid), position_lots=position, balance_usd=1e9, book_age_ms=0.0, open_orders=open_orders,
        live_bids=live_bids, live_asks=live_asks, other_markets_usd=others if total is not None else None,
    ))
    out = decision.intent
    bound = Decimal(repr(limit)) if total is None else min(Decimal(repr(limit)), max(Decimal(repr(total)) - Decimal(repr(others)), Decimal(0)))
    lot = SPEC.lot_size
    for ladder_out, ladder_in, sign in ((out.bid_ladder, bid_ladder, 1), (out.ask_ladder, ask_ladder, -1)):
        cum = 0
        for (ticks, lots), (ticks_in, lots_in) in zip(ladder_out, ladder_in, strict=True):
            assert ticks == ticks_in and 0 <= lots <= lots_in
            if not lots:
                continue
            # Every level before this one filled entirely, this one partly or entirely, all
            # at their own prices: the position ends where a fill at `ticks` leaves it.
            for part in {lots, max(1, int(lots * fill_share))}:
                after = position + sign * (cum + part)
                grew = abs(after) > abs(position)
                if grew:
                    assert abs(after) * lot * Decimal(ticks) <= bound, (after, ticks, bound)
                    assert abs(after) * lot * Decimal(mid) <= bound
            cum += lots
    # Every level counts against the open-order cap: new orders fit in the free slots.
    new = sum(1 for i, (_, lots) in enumerate(out.bid_ladder) if lots and i >= live_bids)
    new += sum(1 for i, (_, lots) in enumerate(out.ask_ladder) if lots and i >= live_asks)
    assert new <= max(max_open - open_orders, 0)
