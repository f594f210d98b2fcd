"""Issue 13, the root's side: unknown is a state at shutdown, and only our orders are touched.

In virtual time against the in-process simulator: a venue that stops answering during
shutdown leaves the dead man's switch armed with a short countdown, says so in the
summary and is not "clean"; a foreign order (someone else's, same sub-account) blocks
startup unless allowed, and then survives our startup reconciliation, halts and shutdown.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
import trio

from extmm.domain.units import Side
from extmm.sim.inproc import inprocess_simulator
from extmm.venue.errors import NetworkError
from extmm.venue.types import OrderRequest
from supervisors.root import UNCONFIRMED_DMS_S, RootSupervisor, StartupError
from tests.botharness import START_MS, running_bot, wait_until
from tests.botharness import test_config as bot_config


async def test_shutdown_that_cannot_confirm_leaves_the_switch_armed(autojump_clock):
    async with running_bot() as bot:
        await trio.sleep(20)
        assert bot.venue_open_orders()  # quoting

        async def no_answer(market: str | None = None) -> list:
            await trio.sleep(0.05)
            raise NetworkError("read timeout")

        armed: list[int] = []
        real_dms = bot.venue.set_dead_mans_switch

        async def recording_dms(countdown_s: int) -> None:
            armed.append(countdown_s)
            await real_dms(countdown_s)

        bot.venue.get_open_orders = no_answer  # type: ignore[method-assign]
        bot.venue.set_dead_mans_switch = recording_dms  # type: ignore[method-assign]
        bot.stop.set()
        await wait_until(lambda: bool(bot.result), within=60)
        (summary,) = bot.result
        assert summary.open_orders_at_exit is None and not summary.clean
        assert summary.dms == f"armed {UNCONFIRMED_DMS_S}s, open orders unconfirmed"
        assert summary.to_json()["open_orders_at_exit"] == "UNKNOWN"
        assert summary.to_json()["dms"] == "armed 10s, open orders unconfirmed"
        # The venue-side switch really is armed, never disarmed, and then fires.
        assert armed[-1] == UNCONFIRMED_DMS_S and 0 not in armed
        assert bot.engine.dms_deadline(bot.account_id) is not None
        await trio.sleep(UNCONFIRMED_DMS_S + 1)
        assert bot.engine.dms_deadline(bot.account_id) is None


async def test_clean_shutdown_logs_the_confirmed_line_and_disarms(autojump_clock):
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    try:
        async with running_bot() as bot:
            await trio.sleep(20)
    finally:
        logger.remove(sink)
    (summary,) = bot.result
    assert summary.clean and summary.dms == "disarmed" and summary.open_orders_at_exit == 0
    assert bot.engine.dms_deadline(bot.account_id) is None
    (line,) = [x for x in lines if "of ours open (confirmed)" in x]
    assert line == f"cancelled {summary.cancelled_at_exit}, 0 of ours open (confirmed), dead man's switch disarmed"
    assert summary.cancelled_at_exit > 0  # the quotes resting when shutdown began


async def place_foreign(venue, market: str = "BTC-USD") -> str:
    (info,) = await venue.get_markets([market])
    spec = info.spec
    mark = Decimal(str(info.raw["marketStats"]["markPrice"]))
    price = spec.ticks_to_price(spec.float_to_ticks(float(mark * Decimal("0.9")), Side.BUY))
    order = OrderRequest(
        market=market,
        side=Side.BUY,
        qty=spec.min_order_size,
        price=price,
        external_id="manual-order-1",
        expiry_ms=START_MS + 86_400_000,
        max_fee_rate=Decimal("0.0005"),
    )
    await venue.place_order(order)
    return order.external_id


async def run_root(venue, runner, cfg, stop, **kw):
    root = RootSupervisor(cfg=cfg, port=venue, network="paper", epoch_ms=runner.now_ms,
                          rng=random.Random(3), **kw)
    return root, await root.run(stop=stop)


async def test_foreign_orders_block_startup_and_survive_when_allowed(autojump_clock):
    cfg = bot_config()
    async with inprocess_simulator(start_ms=START_MS, markets=["BTC-USD", "ETH-USD"], seed=3) as (venue, runner):
        foreign = await place_foreign(venue)
        dms_calls: list[int] = []
        real_dms = venue.set_dead_mans_switch

        async def counting_dms(countdown_s: int) -> None:
            dms_calls.append(countdown_s)
            await real_dms(countdown_s)

        venue.set_dead_mans_switch = counting_dms  # type: ignore[method-assign]
        with pytest.raises(StartupError, match=r"1 open orders on this sub-account are not ours .*--allow-foreign-orders"):
            await run_root(venue, runner, cfg, trio.Event())
        assert dms_calls == []  # refused before arming the switch
        assert [o.external_id for o in await venue.get_open_orders()] == [foreign]

        stop = trio.Event()
        async with trio.open_nursery() as nursery:

            async def stop_later() -> None:
                await trio.sleep(30)
                stop.set()

            nursery.start_soon(stop_later)
            root, summary = await run_root(venue, runner, cfg, stop, allow_foreign_orders=True)
        # Quoting happened, our shutdown confirmed zero of ours, the manual order is untouched.
        assert summary.orders_sent > 0 and summary.clean
        assert [o.external_id for o in await venue.get_open_orders()] == [foreign]


async def test_breaker_trip_cancels_only_ours(autojump_clock):
    async with running_bot() as bot:
        foreign = await place_foreign(bot.venue, "ETH-USD")
        await trio.sleep(10)
        assert bot.venue_open_orders()
        bot.root.operator_trip("test")
        await trio.sleep(5)
        assert bot.venue_open_orders() == []
        assert foreign in [o.external_id for o in await bot.venue.get_open_orders()]
