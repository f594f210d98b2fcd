"""The venue's request budget is per IP address, shared by every key (issue 12; SPEC §7).

The simulator enforces it (`--ip-rate-limit-per-min`, default 1,000); two instances on one
address stay under it when each gets its share (`rate_limit_per_min` = budget / instances,
as the README says), and go over it when both use the whole budget. The windows here are
scaled down from 60 s to 3 s so that a test needs seconds, not minutes (and trio time runs
at 3x, `fast_clock`); `TokenBucket` keeps any window to its limit whatever the window length.
"""

from __future__ import annotations

from functools import partial

import pytest
import trio

from extmm.sim.launch import SimCredentials
from extmm.sim.ratebudget import AddressBudget
from extmm.sim.server import serve_simulator
from extmm.sim.signing import KeyPair
from extmm.venue.errors import RateLimited
from extmm.venue.network import NetworkVenue
from extmm.venue.ratelimit import TokenBucket

WINDOW_S = 3.0
ADDRESS_BUDGET = 30  # per window, for 127.0.0.1 as a whole


def test_address_budget_counts_a_sliding_window_per_address():
    budget = AddressBudget(3, window_s=10.0)
    assert [budget.admit("a", t) for t in (0.0, 1.0, 2.0)] == [None, None, None]
    assert budget.admit("a", 3.0) == 7.0  # the first slot frees at t = 10
    assert budget.admit("b", 3.0) is None  # another address has its own budget
    assert budget.admit("a", 10.5) is None
    assert budget.refused == 1


def bucket(limit: int) -> TokenBucket:
    """`TokenBucket.per_minute(limit)` with the window scaled to WINDOW_S."""
    burst = max(1, limit // 20)
    return TokenBucket(capacity=burst, refill_per_s=(limit - burst) / WINDOW_S)


async def hammer(venue: NetworkVenue, until: float) -> int:
    """Private reads as fast as the venue's own bucket lets them go; returns 429s met
    (reads are retried after a 429, so count them at the venue adapter)."""
    while trio.current_time() < until:
        try:
            await venue.get_balance()
        except RateLimited:
            pass
    return venue.statistics().rate_limited


async def two_instances(per_instance: int) -> tuple[int, AddressBudget]:
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(partial(serve_simulator, markets=["BTC-USD"], seed=2, ip_rate_limit_per_min=None))
        sim.runner.ip_budget = budget = AddressBudget(ADDRESS_BUDGET, window_s=WINDOW_S)
        second = SimCredentials.of(sim.engine.create_account(key_pair=KeyPair.from_private(0x1234567)))
        limited = [0, 0]
        until = trio.current_time() + 2.5 * WINDOW_S
        async with trio.open_nursery() as clients:
            for index, creds in enumerate((sim.account, second)):

                async def one(index: int = index, creds: SimCredentials = creds) -> None:
                    async with NetworkVenue(
                        sim.rest_url, sim.stream_url, creds.credentials(), limiter=bucket(per_instance),
                        rate_limited_pause_s=0.1,
                    ) as venue:
                        limited[index] = await hammer(venue, until)

                clients.start_soon(one)
        nursery.cancel_scope.cancel()
    return sum(limited), budget


async def test_two_instances_with_the_readme_division_stay_under_the_address_budget(fast_clock):
    limited, budget = await two_instances(ADDRESS_BUDGET // 2)
    assert limited == 0 and budget.refused == 0
    assert budget.admitted > ADDRESS_BUDGET  # more than one window's worth went through


async def test_two_instances_each_using_the_whole_budget_are_rate_limited(fast_clock):
    limited, budget = await two_instances(ADDRESS_BUDGET)
    assert budget.refused > 0 and limited == budget.refused


def test_config_key_sizes_the_bots_budget():
    import pytest

    from extmm.config import ConfigError, parse_config

    market = {"markets": [{"name": "BTC-USD"}]}
    assert parse_config(market).rate_limit_per_min == 1000
    assert parse_config({**market, "rate_limit_per_min": 450}).rate_limit_per_min == 450
    with pytest.raises(ConfigError, match="rate_limit_per_min"):
        parse_config({**market, "rate_limit_per_min": 0})


async def test_in_process_port_can_enforce_the_budget_too(autojump_clock):
    from extmm.sim.inproc import inprocess_simulator

    async with inprocess_simulator(start_ms=1_790_000_000_000, markets=["BTC-USD"], ip_rate_limit_per_min=5) as (
        venue, runner,
    ):
        for _ in range(5):
            await venue.get_balance()
        try:
            await venue.get_balance()
        except RateLimited as exc:
            assert exc.retry_after is not None and 0 < exc.retry_after <= 60
        else:
            raise AssertionError("the sixth request in a minute went through")
        await trio.sleep(61)
        await venue.get_balance()


@pytest.mark.slow
async def test_two_bot_processes_with_the_readme_division_stay_under_the_default_address_budget(tmp_path):
    """Two `python -m extmm --endpoint …` processes, two sub-accounts, one address with the
    default 1,000/min budget; each config has `rate_limit_per_min: 450` and quotes as
    aggressively as it can (replace on every tick) for 75 s."""
    import json
    import os
    import sys

    from extmm.ops.secrets import SECRET_VARS

    aggressive = {
        "quote_loop_ms": 50, "replace_coalesce_ms": 0, "rate_limit_per_min": 450,
        "risk": {"max_net_position_usd": 200, "max_open_orders": 10, "min_balance_usd": 50},
        "markets": [
            {"name": "BTC-USD", "base_spread": 0.0001, "alpha": 0.1, "replace_threshold_bps": 0,
             "min_order_size": 0.0001},
            {"name": "ETH-USD", "base_spread": 0.0001, "alpha": 0.1, "replace_threshold_bps": 0,
             "min_order_size": 0.01},
        ],
    }
    config = tmp_path / "config.json"
    config.write_text(json.dumps(aggressive))
    peak = 0
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(partial(serve_simulator, seed=5))
        budget = sim.runner.ip_budget
        assert budget is not None and budget.per_min == 1000
        second = SimCredentials.of(sim.engine.create_account(key_pair=KeyPair.from_private(0x7654321)))
        procs = []
        for creds in (sim.account, second):
            env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
            env.update(EXTENDED_API_KEY=creds.api_key, EXTENDED_STARK_PRIVATE_KEY=creds.stark_private_key,
                       EXTENDED_STARK_PUBLIC_KEY=creds.stark_public_key, EXTENDED_VAULT_ID=str(creds.vault))
            cmd = [sys.executable, "-m", "extmm", "--config", str(config), "--endpoint", sim.rest_url,
                   sim.stream_url, "--duration", "75", "--no-dashboard", "--metrics-port", "0",
                   # two instances must not share one journal (the second would refuse to start)
                   "--journal", str(tmp_path / f"journal-{len(procs)}.db")]
            procs.append(await nursery.start(partial(trio.run_process, cmd, env=env, cwd=tmp_path,
                                                     capture_stdout=True, capture_stderr=True, check=False)))
        while any(p.returncode is None for p in procs):
            await trio.sleep(1.0)
            peak = max(peak, budget.peak("127.0.0.1", trio.current_time()))
        nursery.cancel_scope.cancel()
    print(f"two bots: peak {peak} requests in a 60 s window, {budget.admitted} admitted, {budget.refused} refused")
    assert all(p.returncode == 0 for p in procs)
    assert budget.refused == 0, f"{budget.refused} requests over the address budget (peak {peak}/min)"
    assert peak > 450  # both instances were busy: together more than one instance's share
