"""Soak: an hour of mixed faults in virtual time leaks neither memory nor trio tasks.

Ten minutes of mixed faults (actor kills, 429 and 5xx bursts, drops, gaps, garbage,
stalls, reject storms, latency) warm the bot up; then it is measured at rest: faults
cleared, the breaker tripped by hand (the operator's way to hold quoting off) until every
order record has been forgotten, then the trio tasks alive and the bytes the bot's object
graph retains (the simulator excluded, and the structures capped by design whose size
wanders: the order book, the Account's dedup window of trade ids). Fifty more minutes of
faults and the same measurement: as many tasks as before, memory within 5 %.
Slow (about a minute of wall time): run with `pytest -m slow`.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from extmm.domain.book import Book
from extmm.domain.units import MarketSpec
from extmm.research.chaos.leaks import count_tasks, retained_bytes
from extmm.research.chaos.runner import ChaosRun, run_scenario_async
from extmm.research.chaos.scenarios import ChaosContext, Scenario, mixed

WARMUP_S = 600.0
SOAK_S = 3000.0
AT_REST_S = 65.0  # the Executor forgets settled orders after 60 s (then three samples, 10 s apart)


def capped(obj: object) -> tuple[object, ...]:
    """Structures capped by design whose size wanders: the Account's dedup window of trade
    ids (10 000, it fills with every fill) and a market's caches of tick and lot
    conversions (`extmm.domain.units._FROM_UNITS_LIMIT` each, emptied when full)."""
    if type(obj).__name__ == "_AccountState":
        return (obj.seen_trades, obj.seen_trade_order)  # type: ignore[attr-defined]
    if isinstance(obj, MarketSpec):
        return (obj._prices, obj._qtys)  # type: ignore[attr-defined]
    return ()


@pytest.mark.slow
def test_an_hour_of_mixed_faults_leaks_neither_memory_nor_tasks():
    samples: dict[str, tuple[int, int]] = {}
    runs: list[ChaosRun] = []

    async def measure(ctx: ChaosContext, label: str) -> None:
        ctx.faults.clear()
        ctx.root.operator_trip("soak: measuring at rest")  # latches: nothing resumes quoting
        await trio.sleep(AT_REST_S)
        run = runs[0]
        simulator = [run, run.runner, run.runner.engine, run.port, run.port.inner, run.checker]
        # The least of a few samples: a request or reconnect caught in flight is not a leak.
        taken = []
        for _ in range(3):
            taken.append((count_tasks(), retained_bytes(simulator, skip_types=(Book,), bounded=capped)))
            await trio.sleep(10.0)
        samples[label] = min(taken)
        ctx.root.breaker.reset(trio.current_time())

    async def soak(ctx: ChaosContext) -> None:
        with trio.move_on_after(WARMUP_S):
            await mixed(ctx)
        await measure(ctx, "baseline")
        with trio.move_on_after(SOAK_S):
            await mixed(ctx)
        await measure(ctx, "end")
        await trio.sleep_forever()

    async def keep(run: ChaosRun) -> None:
        runs.append(run)

    async def main():
        scenario = Scenario(name="soak", summary="an hour of mixed faults", drive=soak, settle_s=2.0)
        return await run_scenario_async(scenario, duration_s=WARMUP_S + SOAK_S + 2 * 400, seed=11, during=keep)

    result = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    summary = result.to_json()
    assert set(samples) == {"baseline", "end"}, summary
    (tasks_before, bytes_before), (tasks_after, bytes_after) = samples["baseline"], samples["end"]
    assert result.crashes == 0, summary
    assert result.kills > 300, summary  # the faults really ran all along
    assert not result.halted, summary  # a halted market has fewer tasks: nothing to compare
    assert tasks_after == tasks_before, (tasks_before, tasks_after)
    growth = (bytes_after - bytes_before) / bytes_before
    assert growth < 0.05, f"retained {bytes_before} → {bytes_after} bytes ({growth:+.1%})"
