"""A whole bot (root supervisor, all actors) against the in-process simulator, for tests.

Runs under trio's MockClock (`autojump_clock`) so minutes of market time pass in
milliseconds; the simulator's account, orders and positions are read directly from its
engine to check the bot's view against the venue's truth.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import attrs
import trio

from extmm.config import BotConfig, load_config, parse_config
from extmm.ops.telemetry import AccountStats, ExecStats
from extmm.sim.inproc import InProcessVenue, inprocess_simulator
from extmm.sim.runner import SimRunner
from extmm.sim.server import SimHandle
from extmm.venue.endpoints import SigningDomain
from extmm.venue.signing import NonceSource, OrderSigner, is_ours
from supervisors.root import RootSupervisor, RunSummary

START_MS = 1_790_000_000_000


def test_config(**overrides: Any) -> BotConfig:
    data = {
        "stp": "ACCOUNT",
        "quote_loop_ms": 250,
        "replace_coalesce_ms": 200,
        "dead_mans_switch_sec": 30,
        "risk": {"max_net_position_usd": 200, "max_open_orders": 10, "min_balance_usd": 50},
        "markets": [
            {"name": "BTC-USD", "base_spread": 0.0002, "alpha": 0.2, "quote_notional_cap_usd": 50,
             "replace_threshold_bps": 2, "min_order_size": 0.0001},
            {"name": "ETH-USD", "base_spread": 0.0002, "alpha": 0.2, "quote_notional_cap_usd": 50,
             "replace_threshold_bps": 2, "min_order_size": 0.01},
        ],
    }
    data.update(overrides)
    return parse_config(data)


@attrs.define
class Bot:
    root: RootSupervisor
    venue: InProcessVenue
    runner: SimRunner
    stop: trio.Event
    result: list[RunSummary]

    @property
    def engine(self) -> Any:
        return self.runner.engine

    @property
    def account_id(self) -> int:
        return self.venue._account.id  # noqa: SLF001 - test access to the simulated account

    def venue_open_orders(self, market: str | None = None) -> list[Any]:
        prefix = self.root.cfg.external_id_prefix
        return [o for o in self.engine.open_orders(self.account_id, market) if is_ours(o.external_id, prefix)]

    def venue_position(self, market: str) -> Decimal:
        total = Decimal(0)
        for p in self.engine.positions(self.account_id, market):
            if p.status == "OPENED":
                total += p.size if p.side == "LONG" else -p.size
        return total

    def bot_position(self, market: str) -> Decimal | None:
        acc = self.root.view.get(market, AccountStats)
        return None if acc is None else acc.position

    def orders_sent(self, market: str) -> int:
        ex = self.root.view.get(market, ExecStats)
        return 0 if ex is None else ex.orders_sent

    def tracked_open(self, market: str) -> set[str]:
        ex = self.root.view.get(market, ExecStats)
        return set() if ex is None else {o.external_id for o in ex.open_orders}


@asynccontextmanager
async def running_bot(
    cfg: BotConfig | None = None,
    *,
    seed: int = 7,
    faults: str | None = None,
    sim_kw: dict[str, Any] | None = None,
    **root_kw: Any,
) -> AsyncIterator[Bot]:
    cfg = cfg or test_config()
    async with inprocess_simulator(
        start_ms=START_MS,
        markets=[m.name for m in cfg.enabled_markets],
        seed=seed,
        faults=faults,
        **(sim_kw or {}),
    ) as (venue, runner):
        root = RootSupervisor(
            cfg=cfg, port=venue, network="paper", epoch_ms=runner.now_ms, rng=random.Random(seed), **root_kw
        )
        stop = trio.Event()
        result: list[RunSummary] = []
        async with trio.open_nursery() as nursery:

            async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                result.append(await root.run(stop=stop, task_status=task_status))

            await nursery.start(run)
            bot = Bot(root=root, venue=venue, runner=runner, stop=stop, result=result)
            try:
                yield bot
            finally:
                stop.set()


def example_config() -> BotConfig:
    return load_config("config/config.json")


async def wait_until(predicate: Any, *, within: float, step: float = 0.1) -> float:
    """Poll `predicate` every `step` virtual seconds; returns the virtual time it took.

    Polling is right here: the state lives in the simulator and the bot, not behind an
    event a test could wait on."""
    started = trio.current_time()
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(step)
    return trio.current_time() - started


def sim_signer(sim: SimHandle, *, nonce_start: int = 1) -> OrderSigner:
    """Signs orders for a served simulator's paper account, every market of it known."""
    signer = OrderSigner(
        sim.account.credentials(), SigningDomain.of(sim.engine.domain), nonces=NonceSource(start=nonce_start)
    )
    for name in sim.engine.market_names():
        signer.add_market(sim.engine.market_object(name))
    return signer
