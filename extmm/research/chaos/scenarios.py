"""The fault patterns of the fire drills, one scenario each.

A virtual scenario's `drive` runs for the scenario's duration (the runner cancels it)
and injects its faults through the simulator's fault controller or the root
supervisor's `kill`; the runner clears every fault afterwards and lets the bot settle.
`process_kill` needs real processes and lives in `extmm.research.chaos.process`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal

import attrs
import trio

if TYPE_CHECKING:  # kept out of imports at run time: the CLI lists scenarios cheaply
    from extmm.sim.faults import FaultController, RejectMode
    from extmm.sim.runner import SimRunner
    from supervisors.root import RootSupervisor

# The market supervisor escalates past 5 restarts within 30 s; kills on one market are
# spaced so that random kills alone never get there (restarts are counted at failure).
KILL_SPACING_S = (6.5, 9.0)


@attrs.define
class ChaosContext:
    """What a scenario's driver may touch."""

    root: RootSupervisor
    runner: SimRunner
    rng: random.Random
    markets: tuple[str, ...]
    kills: Counter[str] = attrs.Factory(Counter)  # by actor type

    @property
    def faults(self) -> FaultController:
        return self.runner.faults


Drive = Callable[[ChaosContext], Awaitable[None]]


@attrs.frozen(kw_only=True)
class Scenario:
    name: str
    summary: str  # one line; the driver's docstring has the details
    kind: Literal["virtual", "process"] = "virtual"
    drive: Drive | None = None
    default_duration_s: float = 300.0
    # Extra time allowed for the account stream to catch up before positions are compared
    # (latency faults delay its frames too).
    settle_s: float = 1.0


async def _every(ctx: ChaosContext, low_s: float, high_s: float, action: Callable[[], None]) -> None:
    while True:
        await trio.sleep(ctx.rng.uniform(low_s, high_s))
        action()


# -- drivers ------------------------------------------------------------------------------


async def kill_actors(ctx: ChaosContext) -> None:
    """Kill a random actor of every market every 6.5–9 s, each actor type in turn."""
    from supervisors.market import ACTORS

    async def market_loop(market: str) -> None:
        order: list[str] = []
        while True:
            await trio.sleep(ctx.rng.uniform(*KILL_SPACING_S))
            if not order:
                order = list(ACTORS)
                ctx.rng.shuffle(order)
            actor = order.pop()
            if ctx.root.kill(f"{market}/{actor}"):
                ctx.kills[actor] += 1

    async with trio.open_nursery() as nursery:
        for market in ctx.markets:
            nursery.start_soon(market_loop, market)


async def ws_drops(ctx: ChaosContext) -> None:
    """Every stream connection is closed every 3 s (code 1012)."""
    ctx.faults.configure(ws_drop_every_s=3.0)
    await trio.sleep_forever()


async def rate_limit_storm(ctx: ChaosContext) -> None:
    """Every REST call answers 429 for 12–20 s (longer than the breaker's mass-cancel
    loop), the first storm 5–10 s in, then every 40–60 s."""
    await trio.sleep(ctx.rng.uniform(5.0, 10.0))
    while True:
        ctx.faults.burst_429(ctx.rng.uniform(12.0, 20.0))
        await trio.sleep(ctx.rng.uniform(40.0, 60.0))


async def server_errors(ctx: ChaosContext) -> None:
    """5xx bursts of 1–4 s every 15–25 s, plus 2 % background; half of the failed
    writes were carried out anyway (ambiguous outcomes)."""
    ctx.faults.configure(http5xx=0.02, http5xx_applied=0.5)
    await _every(ctx, 15.0, 25.0, lambda: ctx.faults.burst_5xx(ctx.rng.uniform(1.0, 4.0)))


async def latency_spikes(ctx: ChaosContext) -> None:
    """REST and stream latency jumps to 0.2–1.5 s for 2–6 s, every 10–20 s."""
    while True:
        await trio.sleep(ctx.rng.uniform(10.0, 20.0))
        ctx.faults.configure(latency_s=ctx.rng.uniform(0.2, 1.5))
        await trio.sleep(ctx.rng.uniform(2.0, 6.0))
        ctx.faults.configure(latency_s=0.0)


async def seq_gaps(ctx: ChaosContext) -> None:
    """1 % of stream frames skip a `seq`, and one more gap every 2–5 s."""
    ctx.faults.configure(seq_skip=0.01)
    await _every(ctx, 2.0, 5.0, lambda: ctx.faults.skip_seq(1))


async def malformed_frames(ctx: ChaosContext) -> None:
    """Garbage frames (non-JSON, truncated JSON) before 2 % of frames, and bursts of 3."""
    ctx.faults.configure(malformed=0.02)
    await _every(ctx, 2.0, 5.0, lambda: ctx.faults.send_malformed(3))


async def stalled_feed(ctx: ChaosContext) -> None:
    """The book stream of one market (or all) falls silent for 6–10 s every 20–30 s."""

    def stall() -> None:
        market = ctx.rng.choice([*ctx.markets, None])
        ctx.faults.stall_books(ctx.rng.uniform(6.0, 10.0), market)

    await _every(ctx, 20.0, 30.0, stall)


async def reject_storm(ctx: ChaosContext) -> None:
    """Every new order is rejected for 5–10 s every 20–30 s (after an ack, or at REST),
    plus 5 % in between."""
    ctx.faults.configure(reject_storm=0.05)

    def storm() -> None:
        mode: RejectMode = ctx.rng.choice(("engine", "rest"))
        ctx.faults.reject_orders(duration_s=ctx.rng.uniform(5.0, 10.0), mode=mode)

    await _every(ctx, 20.0, 30.0, storm)


async def mixed(ctx: ChaosContext) -> None:
    """All of the above at random, one short fault every 5–15 s, with actor kills."""
    faults = ctx.faults

    def latency() -> None:
        faults.configure(latency_s=ctx.rng.uniform(0.2, 1.0))

    actions: list[Callable[[], object]] = [
        lambda: faults.burst_429(ctx.rng.uniform(3.0, 10.0)),
        lambda: faults.burst_5xx(ctx.rng.uniform(1.0, 4.0)),
        lambda: faults.drop_connections(),
        lambda: faults.skip_seq(1),
        lambda: faults.send_malformed(3),
        lambda: faults.stall_books(ctx.rng.uniform(4.0, 8.0), ctx.rng.choice([*ctx.markets, None])),
        lambda: faults.reject_orders(duration_s=ctx.rng.uniform(3.0, 8.0), mode=ctx.rng.choice(("engine", "rest"))),
        latency,
    ]
    faults.configure(http5xx_applied=0.5)

    async def fault_loop() -> None:
        while True:
            await trio.sleep(ctx.rng.uniform(5.0, 15.0))
            faults.configure(latency_s=0.0)
            ctx.rng.choice(actions)()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fault_loop)
        nursery.start_soon(kill_actors, ctx)


async def calm(ctx: ChaosContext) -> None:
    """No faults at all: the control run."""
    await trio.sleep_forever()


CALM = Scenario(name="calm", summary="no faults (the control run)", drive=calm)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(name="actor_kills", summary="random kills of every actor type, hundreds per run",
                 drive=kill_actors, default_duration_s=900.0),
        Scenario(name="ws_drops", summary="every WebSocket dropped every 3 s", drive=ws_drops),
        Scenario(name="rate_limit_storm", summary="HTTP 429 storms of 12-20 s", drive=rate_limit_storm),
        Scenario(name="server_errors", summary="5xx bursts, half of the failed writes carried out",
                 drive=server_errors),
        Scenario(name="latency_spikes", summary="REST and stream latency spikes up to 1.5 s",
                 drive=latency_spikes, settle_s=2.5),
        Scenario(name="seq_gaps", summary="sequence gaps on every stream", drive=seq_gaps),
        Scenario(name="malformed_frames", summary="garbage and truncated frames on every stream",
                 drive=malformed_frames),
        Scenario(name="stalled_feed", summary="book streams silent for 6-10 s", drive=stalled_feed),
        Scenario(name="reject_storm", summary="every new order rejected for 5-10 s", drive=reject_storm),
        Scenario(name="mixed", summary="all of the above at random, with actor kills", drive=mixed,
                 default_duration_s=600.0, settle_s=2.0),
        Scenario(name="process_kill", summary="SIGKILL the bot: the DMS cancels all, the restart reconciles",
                 kind="process", default_duration_s=15.0),
    )
}
