"""`NetworkVenue` against the simulator over loopback: every port call, every stream, and faults.

Real httpx and trio-websocket clients talk to `serve_simulator` on 127.0.0.1 with the real
clock; each test checks what the adapter returns against the engine's own state, so the
adapter, the wire renderers and the engine have to agree.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
import trio

from extmm.domain.book import Book
from extmm.domain.units import Side
from extmm.sim.engine import EngineConfig, SimEngine
from extmm.sim.faults import FaultController
from extmm.sim.server import SimHandle, serve_simulator
from extmm.venue.errors import OrderBuildFailed, OrderRejected, RateLimited, TransientServerError
from extmm.venue.network import NetworkVenue
from extmm.venue.placement import placement_known
from extmm.venue.rest import RequestOutcome, RetryPolicy
from extmm.venue.signing import Credentials, NonceSource
from extmm.venue.streams import StreamOptions
from extmm.venue.types import (
    BalanceUpdate,
    OrderInfo,
    OrderRequest,
    OrdersUpdate,
    PositionsUpdate,
)

FAST_STREAMS = StreamOptions(stall_timeout_s=10.0, connect_timeout_s=5.0, disconnect_timeout_s=1.0)
QTY = {"BTC-USD": Decimal("0.00100"), "ETH-USD": Decimal("0.010")}


@asynccontextmanager
async def loopback(**sim_options: Any) -> AsyncIterator[tuple[SimHandle, NetworkVenue]]:
    """A simulator on a free port and a NetworkVenue logged in as its account."""
    sim_options.setdefault("seed", 11)
    venue_options = sim_options.pop("venue_options", {})
    async with trio.open_nursery() as nursery:
        sim: SimHandle = await nursery.start(partial(serve_simulator, **sim_options))
        credentials = Credentials(
            api_key=sim.account.api_key,
            vault=sim.account.vault,
            stark_private_key=sim.account.stark_private_key,
            stark_public_key=sim.account.stark_public_key,
        )
        async with NetworkVenue(
            sim.rest_url,
            sim.stream_url,
            credentials,
            nonces=NonceSource(start=1),
            stream_options=FAST_STREAMS,
            **venue_options,
        ) as venue:
            with trio.fail_after(30):
                yield sim, venue
        nursery.cancel_scope.cancel()


def account_id(sim: SimHandle) -> int:
    return sim.account.account_id


def resting(
    sim: SimHandle,
    external_id: str,
    *,
    market: str = "BTC-USD",
    side: Side = Side.BUY,
    bps: int = 50,
    cancel_id: str | None = None,
) -> OrderRequest:
    """A post-only order `bps` behind the true mid: it rests and never crosses."""
    spec = sim.engine.market_spec(market)
    mid = sim.engine.mid(market)
    price = mid * (1 - bps / 10_000) if side is Side.BUY else mid * (1 + bps / 10_000)
    return OrderRequest(
        market=market,
        side=side,
        qty=QTY[market],
        price=spec.ticks_to_price(spec.float_to_ticks(price, side)),
        external_id=external_id,
        expiry_ms=sim.runner.now_ms() + 3_600_000,
        max_fee_rate=Decimal("0.0005"),
        post_only=True,
        cancel_id=cancel_id,
    )


def taker_buy(sim: SimHandle, external_id: str, market: str = "BTC-USD") -> OrderRequest:
    """An IOC buy through the best ask: fills at once (the flow keeps the book deep)."""
    spec = sim.engine.market_spec(market)
    _, asks = sim.engine.book_levels(market, depth=1)
    best_ask = asks[0][0]
    return OrderRequest(
        market=market,
        side=Side.BUY,
        qty=QTY[market],
        price=spec.ticks_to_price(best_ask + best_ask // 500),  # 0.2 % through: margin for moves
        external_id=external_id,
        expiry_ms=sim.runner.now_ms() + 3_600_000,
        max_fee_rate=Decimal("0.0005"),
        post_only=False,
        time_in_force="IOC",
    )


def engine_open(sim: SimHandle, market: str | None = None) -> dict[str, str]:
    return {o.external_id: o.market for o in sim.engine.open_orders(account_id(sim), market)}


def by_external(orders: list[OrderInfo]) -> dict[str, OrderInfo]:
    return {o.external_id: o for o in orders}


async def eventually(predicate, *, within: float = 5.0, every: float = 0.05) -> None:
    # Polling: the state lives in the simulator's engine, not behind an event to wait on.
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(every)


# -- reads ----------------------------------------------------------------------------------------


async def test_reads_agree_with_the_engine():
    async with loopback() as (sim, venue):
        markets = await venue.get_markets()
        assert [m.name for m in markets] == ["BTC-USD", "ETH-USD"]
        for market in markets:
            assert market.active and market.status == "ACTIVE"
            assert market.spec == sim.engine.market_spec(market.name)
        assert [m.name for m in await venue.get_markets(["ETH-USD"])] == ["ETH-USD"]

        fees = await venue.get_fees(["BTC-USD", "ETH-USD"])
        expected = sim.engine.fees(account_id(sim), ["BTC-USD", "ETH-USD"])
        assert [(f.market, f.maker, f.taker) for f in fees] == [
            (f.market, f.maker, f.taker) for f in expected
        ]

        balance = await venue.get_balance()
        engine_balance = sim.engine.balance(account_id(sim))
        assert balance is not None
        assert (balance.balance, balance.equity) == (engine_balance.balance, engine_balance.equity)
        assert balance.balance == Decimal(10_000)

        assert await venue.get_positions() == []
        assert await venue.get_open_orders() == []
        assert await venue.get_order_history() == []
        assert await venue.get_trades() == []
        assert await venue.get_funding_history() == []
        assert await venue.get_orders_by_external_id("never-used") == []
        assert venue.statistics().requests >= 10 and venue.statistics().errors == 0


# -- writes ---------------------------------------------------------------------------------------


async def test_place_replace_and_cancel_by_id_and_external_id():
    async with loopback() as (sim, venue):
        placed = await venue.place_order(resting(sim, "lc-1"))
        assert placed.external_id == "lc-1"
        (engine_order,) = sim.engine.open_orders(account_id(sim))
        assert (engine_order.id, engine_order.external_id, engine_order.post_only) == (
            placed.id,
            "lc-1",
            True,
        )
        (open_order,) = await venue.get_open_orders("BTC-USD")
        assert (open_order.id, open_order.status, open_order.post_only) == (placed.id, "NEW", True)
        assert open_order.price == engine_order.price and open_order.qty == QTY["BTC-USD"]
        assert [o.id for o in await venue.get_orders_by_external_id("lc-1")] == [placed.id]

        replacement = await venue.place_order(resting(sim, "lc-2", bps=60, cancel_id="lc-1"))
        (old,) = await venue.get_orders_by_external_id("lc-1")
        assert (old.status, old.status_reason) == ("CANCELLED", "ORDER_REPLACED")
        assert [(o.id, o.status) for o in await venue.get_open_orders()] == [(replacement.id, "NEW")]
        assert engine_open(sim) == {"lc-2": "BTC-USD"}

        await venue.cancel_order(replacement.id)
        assert engine_open(sim) == {}
        (cancelled,) = await venue.get_orders_by_external_id("lc-2")
        assert cancelled.status == "CANCELLED"

        await venue.place_order(resting(sim, "lc-3", side=Side.SELL))
        assert engine_open(sim) == {"lc-3": "BTC-USD"}
        await venue.cancel_order_by_external_id("lc-3")
        assert engine_open(sim) == {}

        history = by_external(await venue.get_order_history(limit=10))
        assert set(history) == {"lc-1", "lc-2", "lc-3"}
        assert {o.status for o in history.values()} == {"CANCELLED"}

        # A buy 10 % over the mark is outside the venue's price band: refused with a code.
        with pytest.raises(OrderRejected) as rejected:
            await venue.place_order(resting(sim, "lc-4", bps=-1000))
        assert rejected.value.code == 1141 and placement_known(rejected.value) is False
        assert engine_open(sim) == {}


async def test_a_sent_external_id_is_refused_before_the_venue_sees_it():
    async with loopback() as (sim, venue):
        await venue.place_order(resting(sim, "dup-1"))
        requests = venue.statistics().requests
        with pytest.raises(OrderBuildFailed, match="already sent") as refused:
            await venue.place_order(resting(sim, "dup-1"))
        assert placement_known(refused.value) is False  # a tracked rejection, nothing sent
        assert venue.statistics().requests == requests
        assert len(sim.engine.orders_by_external_id(account_id(sim), "dup-1")) == 1


async def test_mass_cancel_by_market_by_ids_and_everything():
    async with loopback() as (sim, venue):
        for ext, market, side in [
            ("mc-b1", "BTC-USD", Side.BUY),
            ("mc-b2", "BTC-USD", Side.SELL),
            ("mc-e1", "ETH-USD", Side.BUY),
            ("mc-e2", "ETH-USD", Side.SELL),
        ]:
            await venue.place_order(resting(sim, ext, market=market, side=side))
        assert set(engine_open(sim)) == {"mc-b1", "mc-b2", "mc-e1", "mc-e2"}

        await venue.mass_cancel(markets=["BTC-USD"])
        assert engine_open(sim) == {"mc-e1": "ETH-USD", "mc-e2": "ETH-USD"}
        assert {o.external_id for o in await venue.get_open_orders()} == {"mc-e1", "mc-e2"}

        await venue.mass_cancel(external_ids=["mc-e1"])
        assert engine_open(sim) == {"mc-e2": "ETH-USD"}
        placed = await venue.place_order(resting(sim, "mc-b3"))
        await venue.mass_cancel(order_ids=[placed.id])
        assert engine_open(sim) == {"mc-e2": "ETH-USD"}

        await venue.place_order(resting(sim, "mc-b4"))
        await venue.mass_cancel(cancel_all=True)
        assert engine_open(sim) == {}
        assert await venue.get_open_orders() == []
        with pytest.raises(ValueError):
            await venue.mass_cancel()


async def test_fills_show_up_as_trades_positions_and_funding_payments():
    config = EngineConfig(seed=5, funding_interval_ms=1000, funding_estimate_interval_ms=1000)
    async with loopback(engine=_engine_now(config)) as (sim, venue):
        placed = await venue.place_order(taker_buy(sim, "tk-1"))
        (order,) = await venue.get_orders_by_external_id("tk-1")
        assert (order.id, order.status, order.filled_qty) == (placed.id, "FILLED", QTY["BTC-USD"])

        trades = await venue.get_trades("BTC-USD")
        engine_trades = sim.engine.trades(account_id(sim), "BTC-USD")
        assert trades and [t.id for t in trades] == [t.id for t in engine_trades]
        assert {t.order_id for t in trades} == {placed.id}
        assert all(t.is_taker and t.side is Side.BUY for t in trades)
        assert sum(t.qty for t in trades) == QTY["BTC-USD"]

        (position,) = await venue.get_positions()
        assert (position.market, position.side, position.size) == ("BTC-USD", "LONG", QTY["BTC-USD"])
        assert await venue.get_positions("ETH-USD") == []

        # Funding is applied every second in this engine: the position pays or receives it.
        await eventually(lambda: sim.engine.funding_payments(account_id(sim)), within=5)
        payments = await venue.get_funding_history("BTC-USD")
        engine_payments = sim.engine.funding_payments(account_id(sim), "BTC-USD")
        assert payments
        newest = engine_payments[: len(payments)]
        assert [(p.funding_fee, p.paid_ms, p.size) for p in payments] == [
            (p.funding_fee, p.paid_ms, p.size) for p in newest
        ]


def _engine_now(config: EngineConfig) -> SimEngine:
    """An engine starting at the wall clock (order expiries are wall-clock epoch times)."""
    return SimEngine(config, start_ms=int(time.time() * 1000))


async def test_dead_mans_switch_arm_reset_disarm_and_expiry():
    async with loopback() as (sim, venue):
        acct = account_id(sim)
        await venue.set_dead_mans_switch(60)
        first = sim.engine.dms_deadline(acct)
        assert first is not None and 59_000 <= first - sim.engine.now_ms <= 60_000
        await venue.set_dead_mans_switch(30)
        second = sim.engine.dms_deadline(acct)
        assert second is not None and second < first
        await venue.set_dead_mans_switch(0)
        assert sim.engine.dms_deadline(acct) is None
        with pytest.raises(ValueError):
            await venue.set_dead_mans_switch(-1)

        await venue.place_order(taker_buy(sim, "dms-fill"))
        await venue.place_order(resting(sim, "dms-b"))
        await venue.place_order(resting(sim, "dms-e", market="ETH-USD", side=Side.SELL))
        assert set(engine_open(sim)) == {"dms-b", "dms-e"}
        positions_before = [(p.market, p.side, p.size) for p in await venue.get_positions()]
        assert positions_before == [("BTC-USD", "LONG", QTY["BTC-USD"])]

        await venue.set_dead_mans_switch(1)
        await eventually(lambda: not engine_open(sim), within=5)
        assert sim.engine.dms_deadline(acct) is None
        assert await venue.get_open_orders() == []
        for ext in ("dms-b", "dms-e"):
            (order,) = await venue.get_orders_by_external_id(ext)
            assert order.status == "CANCELLED"
        assert [(p.market, p.side, p.size) for p in await venue.get_positions()] == positions_before
        assert [p.size for p in sim.engine.positions(acct)] == [QTY["BTC-USD"]]


# -- streams -----------------------------------------------------------------------------------------


async def test_orderbook_stream_rebuilds_the_engine_book():
    async with loopback(heartbeat_s=0.3) as (sim, venue):
        (market,) = await venue.get_markets(["BTC-USD"])
        book = Book(market.spec)
        deltas = 0
        async with venue.orderbook_stream("BTC-USD") as stream:
            first = await stream.receive()
            assert (first.type, first.seq) == ("SNAPSHOT", 1)
            assert book.apply(first.data, first.seq, first.type) is None
            while deltas < 5:
                message = await stream.receive()
                assert message.type == "DELTA"
                assert book.apply(message.data, message.seq, message.type) is None
                deltas += bool(message.data["b"] or message.data["a"])
            sim.runner.frozen = True
            while True:  # caught up once an empty heartbeat arrives
                message = await stream.receive()
                assert book.apply(message.data, message.seq, message.type) is None
                if message.type == "DELTA" and not message.data["b"] and not message.data["a"]:
                    break
        assert book.valid
        bids, asks = sim.engine.book_levels("BTC-USD")
        assert book.levels() == (dict(bids), dict(asks))
        assert len(bids) > 50 and len(asks) > 50
        snapshot = sim.engine.book_snapshot("BTC-USD", depth=10)
        spec = market.spec
        top_bids, top_asks = book.depth(10)
        assert [(spec.ticks_to_price(t), spec.lots_to_qty(q)) for t, q in top_bids] == [
            (lv.price, lv.qty) for lv in snapshot.bids
        ]
        assert [(spec.ticks_to_price(t), spec.lots_to_qty(q)) for t, q in top_asks] == [
            (lv.price, lv.qty) for lv in snapshot.asks
        ]


async def test_account_stream_snapshots_then_order_updates():
    async with loopback() as (sim, venue):
        await venue.place_order(resting(sim, "acs-0"))
        async with venue.account_stream() as stream:
            first = [await stream.receive() for _ in range(3)]
            assert [type(u) for u in first] == [OrdersUpdate, BalanceUpdate, PositionsUpdate]
            assert all(u.is_snapshot for u in first)
            orders, balance, positions = first
            assert [o.external_id for o in orders.orders] == ["acs-0"]
            assert balance.balance.balance == sim.engine.balance(account_id(sim)).balance
            assert positions.positions == ()

            placed = await venue.place_order(resting(sim, "acs-1", side=Side.SELL))
            update = await stream.receive()
            assert isinstance(update, OrdersUpdate) and not update.is_snapshot
            assert [(o.id, o.external_id, o.status) for o in update.orders] == [(placed.id, "acs-1", "NEW")]

            await venue.cancel_order(placed.id)
            update = await stream.receive()
            assert isinstance(update, OrdersUpdate)
            assert [(o.id, o.status) for o in update.orders] == [(placed.id, "CANCELLED")]


async def test_public_trade_funding_and_mark_price_streams():
    config = EngineConfig(seed=3, mark_interval_ms=500, funding_estimate_interval_ms=1000)
    async with loopback(engine=_engine_now(config)) as (sim, venue):
        async with venue.public_trades_stream("BTC-USD") as stream:
            message = await stream.receive()
            assert message.type is None and message.seq == 1
            trades = message.data
            assert trades and {t["m"] for t in trades} == {"BTC-USD"}
            assert all(t["S"] in ("BUY", "SELL") and Decimal(t["q"]) > 0 for t in trades)
            printed = {t["i"] for t in trades}
            assert printed <= {t.id for t in sim.engine.public_trades("BTC-USD", limit=1000)}

        async with venue.funding_stream("ETH-USD") as stream:
            message = await stream.receive()
            assert message.data["m"] == "ETH-USD"
            assert Decimal(message.data["f"]) == sim.engine.funding_rate("ETH-USD")

        async with venue.mark_price_stream("BTC-USD") as stream:
            marks = [await stream.receive() for _ in range(3)]
            assert [(m.type, m.seq) for m in marks] == [("MP", 1), ("MP", 2), ("MP", 3)]
            assert {m.data["m"] for m in marks} == {"BTC-USD"}
            assert marks[-1].ts > marks[0].ts
            latest = Decimal(marks[-1].data["p"])
            assert abs(latest - sim.engine.mark_price("BTC-USD")) / latest < Decimal("0.01")


# -- faults ---------------------------------------------------------------------------------------------


class FaultsOff:
    """Venue observer that clears the simulator's faults right after the first failed attempt
    of one operation: exactly one request meets the fault, however slow the machine is."""

    def __init__(self) -> None:
        self._armed: tuple[FaultController, str, str] | None = None
        self.fired = 0

    def arm(self, faults: FaultController, operation: str, outcome: str) -> None:
        self._armed = (faults, operation, outcome)

    def __call__(self, attempt: RequestOutcome) -> None:
        if self._armed is None:
            return
        faults, operation, outcome = self._armed
        if (attempt.operation, attempt.outcome) == (operation, outcome):
            faults.clear()
            self._armed = None
            self.fired += 1


async def test_ambiguous_place_is_settled_by_external_id_without_a_duplicate():
    switch = FaultsOff()
    lookup = RetryPolicy(attempts=4, base_s=0.2, cap_s=0.4)
    async with loopback(venue_options={"place_lookup": lookup, "observer": switch}) as (sim, venue):
        await venue.place_order(resting(sim, "amb-0"))  # signer and market metadata ready
        sim.faults.configure(http5xx=1.0, http5xx_applied=1.0)  # carried out, answered 500
        switch.arm(sim.faults, "place_order", "server_error")
        placed = await venue.place_order(resting(sim, "amb-1", side=Side.SELL))
        assert switch.fired == 1 and sim.faults.counters.rest_5xx == 1
        assert venue.statistics().server_errors == 1
        (engine_order,) = sim.engine.orders_by_external_id(account_id(sim), "amb-1")
        assert placed.id == engine_order.id and engine_order.status == "NEW"
        assert engine_open(sim) == {"amb-0": "BTC-USD", "amb-1": "BTC-USD"}
        with pytest.raises(OrderBuildFailed, match="already sent"):
            await venue.place_order(resting(sim, "amb-1", side=Side.SELL))
        assert len(sim.engine.orders_by_external_id(account_id(sim), "amb-1")) == 1


async def test_a_5xx_that_was_not_carried_out_is_reported_as_not_placed():
    switch = FaultsOff()
    # Absence only counts a second after the failure: the last lookups come 1.4 s or more later.
    lookup = RetryPolicy(attempts=4, base_s=0.4, cap_s=0.8)
    async with loopback(venue_options={"place_lookup": lookup, "observer": switch}) as (sim, venue):
        await venue.place_order(resting(sim, "na-0"))
        sim.faults.configure(http5xx=1.0, http5xx_applied=0.0)
        switch.arm(sim.faults, "place_order", "server_error")
        with pytest.raises(TransientServerError) as failed:
            await venue.place_order(resting(sim, "na-1"))
        assert switch.fired == 1
        assert placement_known(failed.value) is False
        assert sim.engine.orders_by_external_id(account_id(sim), "na-1") == []
        assert set(engine_open(sim)) == {"na-0"}


async def test_429_fails_a_write_at_once_while_reads_retry():
    switch = FaultsOff()
    options = {"rate_limited_pause_s": 0.2, "observer": switch}
    async with loopback(venue_options=options) as (sim, venue):
        await venue.place_order(resting(sim, "rl-0"))
        sim.faults.configure(http429=1.0)
        switch.arm(sim.faults, "place_order", "rate_limited")
        with pytest.raises(RateLimited) as limited:
            await venue.place_order(resting(sim, "rl-1"))
        assert placement_known(limited.value) is False
        assert sim.faults.counters.rest_429 == 1  # one attempt: writes are never retried
        assert sim.engine.orders_by_external_id(account_id(sim), "rl-1") == []

        sim.faults.configure(http429=1.0)
        switch.arm(sim.faults, "get_balance", "rate_limited")
        balance = await venue.get_balance()  # the first attempt meets the 429, the retry succeeds
        assert balance is not None and balance.balance == Decimal(10_000)
        assert sim.faults.counters.rest_429 == 2 and switch.fired == 2
        assert venue.statistics().rate_limited == 2
        assert [o.external_id for o in await venue.get_open_orders()] == ["rl-0"]


async def test_streams_reopen_cleanly_many_times() -> None:
    """Open, read one frame and close the account and mark streams 20 times each (the
    pattern of a Feed resyncing). Smoke test around the trio-websocket#184 workaround in
    extmm/venue/_ws_patch.py; it does not reliably reproduce the upstream race itself."""
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(lambda task_status: serve_simulator(seed=4, task_status=task_status))
        creds = Credentials(
            api_key=handle.account.api_key,
            vault=handle.account.vault,
            stark_private_key=handle.account.stark_private_key,
            stark_public_key=handle.account.stark_public_key,
        )
        async with NetworkVenue(handle.rest_url, handle.stream_url, creds) as venue:
            for _ in range(20):
                with trio.fail_after(10):
                    async with venue.account_stream() as stream:
                        await stream.receive()
                    async with venue.mark_price_stream("BTC-USD") as stream:
                        await stream.receive()
        nursery.cancel_scope.cancel()
