"""`InProcessVenue`: the exchange port over the engine in the same trio run, in virtual time.

Everything runs under `autojump_clock`, so the assertions on time are exact: a call with
`latency_s` takes exactly that long, and virtual minutes pass in a moment of real time.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio

from extmm.domain.units import Side
from extmm.sim.engine import EngineConfig, SimEngine
from extmm.sim.inproc import InProcessVenue, inprocess_simulator
from extmm.sim.launch import build_engine
from extmm.sim.runner import SimRunner
from extmm.venue import parse
from extmm.venue.errors import (
    OrderRejected,
    RateLimited,
    SequenceGap,
    StreamClosed,
    TransientServerError,
)
from extmm.venue.types import BalanceUpdate, OrderRequest, OrdersUpdate, PositionsUpdate

START_MS = 1_790_000_000_000


def quote(
    venue_engine: SimEngine, runner: SimRunner, external_id: str, *, side=Side.BUY, bps=50, cancel_id=None
):
    mid = Decimal(str(venue_engine.mid("BTC-USD")))
    factor = Decimal(1) - Decimal(bps) / 10_000 if side is Side.BUY else Decimal(1) + Decimal(bps) / 10_000
    return OrderRequest(
        market="BTC-USD",
        side=side,
        qty=Decimal("0.00100"),
        price=(mid * factor).quantize(Decimal(1)),
        external_id=external_id,
        expiry_ms=runner.now_ms() + 3_600_000,
        max_fee_rate=Decimal("0.0005"),
        post_only=True,
        cancel_id=cancel_id,
    )


async def test_reads_and_order_lifecycle_with_signatures(autojump_clock):
    engine = build_engine(seed=2, start_ms=START_MS, verify_signatures=True)
    async with inprocess_simulator(start_ms=START_MS, engine=engine) as (venue, runner):
        markets = await venue.get_markets()
        assert [m.name for m in markets] == ["BTC-USD", "ETH-USD"]
        assert markets[0].spec.tick_size == Decimal(1)
        balance = await venue.get_balance()
        assert balance is not None and balance.balance == Decimal(10_000)
        fees = await venue.get_fees(["BTC-USD"])
        assert (fees[0].maker, fees[0].taker) == (Decimal("0.0000"), Decimal("0.00025"))

        placed = await venue.place_order(quote(engine, runner, "ip-1"))
        assert placed.external_id == "ip-1"
        (order,) = await venue.get_open_orders("BTC-USD")
        assert (order.id, order.status, order.post_only) == (placed.id, "NEW", True)

        replaced = await venue.place_order(quote(engine, runner, "ip-2", bps=60, cancel_id="ip-1"))
        old = (await venue.get_orders_by_external_id("ip-1"))[0]
        assert (old.status, old.status_reason) == ("CANCELLED", "ORDER_REPLACED")
        await venue.cancel_order(replaced.id)
        await venue.place_order(quote(engine, runner, "ip-3", side=Side.SELL))
        await venue.cancel_order_by_external_id("ip-3")
        await venue.place_order(quote(engine, runner, "ip-4"))
        await venue.mass_cancel(markets=["BTC-USD"])
        assert await venue.get_open_orders() == []
        history = await venue.get_order_history(limit=10)
        assert {o.external_id for o in history} == {"ip-1", "ip-2", "ip-3", "ip-4"}

        with pytest.raises(OrderRejected) as rejected:
            await venue.place_order(quote(engine, runner, "ip-4"))
        assert rejected.value.code == 1134


async def test_latency_is_exact_in_virtual_time(autojump_clock):
    async with inprocess_simulator(start_ms=START_MS, latency_s=0.25) as (venue, runner):
        started = trio.current_time()
        await venue.get_positions()
        assert trio.current_time() - started == pytest.approx(0.25, abs=1e-9)
        started = trio.current_time()
        await venue.place_order(quote(runner.engine, runner, "lat-1"))
        assert trio.current_time() - started == pytest.approx(0.25, abs=1e-9)
        assert venue.statistics().requests == 2


async def test_unsigned_orders_when_the_engine_does_not_verify(autojump_clock):
    async with inprocess_simulator(start_ms=START_MS, verify_signatures=False) as (venue, runner):
        assert repr(venue).startswith("InProcessVenue(") and venue.runner is runner
        assert venue.account_id == runner.engine.accounts()[0].id
        placed = await venue.place_order(quote(runner.engine, runner, "u-1"))
        assert [o.id for o in await venue.get_open_orders()] == [placed.id]


async def test_account_stream_snapshot_then_updates(autojump_clock):
    async with inprocess_simulator(start_ms=START_MS) as (venue, runner):
        async with venue.account_stream() as stream:
            first = [await stream.receive() for _ in range(3)]
            assert [type(u) for u in first] == [OrdersUpdate, BalanceUpdate, PositionsUpdate]
            assert all(u.is_snapshot for u in first)
            placed = await venue.place_order(quote(runner.engine, runner, "as-1"))
            update = await stream.receive()
            assert isinstance(update, OrdersUpdate) and not update.is_snapshot
            assert [(o.id, o.status) for o in update.orders] == [(placed.id, "NEW")]


async def test_book_stream_rebuilds_the_engine_book(autojump_clock):
    async with inprocess_simulator(start_ms=START_MS, seed=4) as (venue, runner):
        bids: dict[Decimal, Decimal] = {}
        asks: dict[Decimal, Decimal] = {}
        async with venue.orderbook_stream("BTC-USD") as stream:
            first = await stream.receive()
            assert (first.type, first.seq) == ("SNAPSHOT", 1)
            messages = [first]
            while len(messages) < 20:
                messages.append(await stream.receive())
            runner.frozen = True
            while True:  # catch up: until an empty heartbeat delta
                message = await stream.receive()
                messages.append(message)
                if message.type == "DELTA" and not message.data["b"] and not message.data["a"]:
                    break
        for message in messages:
            if message.type == "SNAPSHOT":
                bids = {Decimal(x["p"]): Decimal(x["q"]) for x in message.data["b"]}
                asks = {Decimal(x["p"]): Decimal(x["q"]) for x in message.data["a"]}
                continue
            for levels, book in ((message.data["b"], bids), (message.data["a"], asks)):
                for level in levels:
                    if Decimal(level["c"]) == 0:
                        book.pop(Decimal(level["p"]))
                    else:
                        book[Decimal(level["p"])] = Decimal(level["c"])
        snapshot = runner.engine.book_snapshot("BTC-USD")
        assert sorted(bids.items(), reverse=True) == [(lv.price, lv.qty) for lv in snapshot.bids]
        assert sorted(asks.items()) == [(lv.price, lv.qty) for lv in snapshot.asks]
        assert [m.seq for m in messages] == list(range(1, len(messages) + 1))


async def test_virtual_minutes_pass_with_fills_and_funding(autojump_clock):
    engine = SimEngine(
        EngineConfig(seed=9, verify_signatures=False, funding_interval_ms=60_000), start_ms=START_MS
    )
    async with inprocess_simulator(start_ms=START_MS, engine=engine) as (venue, runner):
        started = trio.current_time()
        for i in range(5):
            await venue.place_order(quote(engine, runner, f"vb-{i}", bps=1 + i))
            await venue.place_order(quote(engine, runner, f"va-{i}", side=Side.SELL, bps=1 + i))
        await trio.sleep(180)
        assert trio.current_time() - started == pytest.approx(180, abs=1e-6)
        assert runner.now_ms() - START_MS == pytest.approx(180_000, abs=1)
        trades = await venue.get_trades()
        assert len(trades) >= 3, "quotes a few bps from the mid are filled within virtual minutes"
        (position,) = await venue.get_positions()
        assert position.size == sum(t.qty if t.side is Side.BUY else -t.qty for t in trades).copy_abs()
        funding = await venue.get_funding_history()
        # Funding every minute here (hourly on the venue): the open position paid or received it.
        assert funding and {f.market for f in funding} == {"BTC-USD"}


async def test_faults_surface_as_typed_venue_errors(autojump_clock):
    async with inprocess_simulator(start_ms=START_MS) as (venue, runner):
        runner.faults.burst_429(1.0)
        with pytest.raises(RateLimited):
            await venue.get_balance()
        await trio.sleep(1.0)
        runner.faults.burst_5xx(1.0)
        with pytest.raises(TransientServerError) as server_error:
            await venue.get_open_orders()
        assert server_error.value.http_status == 500
        await trio.sleep(1.0)

        runner.faults.reject_orders(count=1, mode="rest")
        with pytest.raises(OrderRejected) as rejected:
            await venue.place_order(quote(runner.engine, runner, "f-1"))
        assert rejected.value.code == 1006

        stats = venue.statistics()
        assert (stats.rate_limited, stats.server_errors, stats.errors) == (1, 1, 3)


async def test_stream_faults_in_process(autojump_clock):
    async with inprocess_simulator(start_ms=START_MS) as (venue, runner):
        async with venue.orderbook_stream("BTC-USD") as stream:
            await stream.receive()
            runner.faults.send_malformed(1)
            assert (await stream.receive()).seq == 2  # the garbage was skipped
            assert stream.malformed == 1
            runner.faults.skip_seq(1)
            with pytest.raises(SequenceGap) as gap:
                await stream.receive()
            assert (gap.value.expected, gap.value.got) == (3, 4)

        async with venue.mark_price_stream("BTC-USD") as marks:
            first = await marks.receive()
            assert first.type == "MP" and parse.decimal_of(first.data["p"], "mark") > 0
            assert runner.faults.drop_connections() == 1
            with pytest.raises(StreamClosed, match="1012"):
                while True:
                    await marks.receive()


async def test_dead_mans_switch_in_virtual_time(autojump_clock):
    async with inprocess_simulator(start_ms=START_MS) as (venue, runner):
        await venue.place_order(quote(runner.engine, runner, "dms-1"))
        await venue.set_dead_mans_switch(30)
        await trio.sleep(29)
        assert len(await venue.get_open_orders()) == 1
        await trio.sleep(1.1)
        assert await venue.get_open_orders() == []


async def test_zero_balance_reads_as_none(autojump_clock):
    engine = build_engine(start_ms=START_MS, verify_signatures=False)
    async with inprocess_simulator(start_ms=START_MS, engine=engine, balance=0) as (venue, _):
        assert await venue.get_balance() is None


async def test_port_on_a_runner_built_by_hand(autojump_clock):
    engine = build_engine(start_ms=START_MS, markets=["ETH-USD"], verify_signatures=False)
    account = engine.create_account(balance=Decimal(100))
    runner = SimRunner(engine)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        venue = InProcessVenue(runner, account)
        assert [m.name for m in await venue.get_markets()] == ["ETH-USD"]
        with pytest.raises(OrderRejected) as unknown:
            async with venue.orderbook_stream("BTC-USD"):
                pass
        assert unknown.value.code == 1001
        nursery.cancel_scope.cancel()


async def test_a_consumer_that_stops_reading_is_disconnected(autojump_clock):
    async with inprocess_simulator(start_ms=START_MS) as (_, runner):
        (account,) = runner.engine.accounts()
        slow = InProcessVenue(runner, account, queue_capacity=4)
        async with slow.orderbook_stream("BTC-USD") as stream:
            assert (await stream.receive()).seq == 1
            await trio.sleep(5)  # the book moves ten times a second; nobody reads
            with pytest.raises(StreamClosed, match="1008"):
                await stream.receive()
