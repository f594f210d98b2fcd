"""`check --trade-test` (issue 12): the whole order path on an account, step by step.

Against a `python -m extmm sim` subprocess through `--endpoint`, as an operator would run
it before the first live session; and in-process against a simulator that refuses the
replace, to see the clean-up and the non-zero outcome.
"""

from __future__ import annotations

import os
from functools import partial

import trio

from extmm.commands._trade_test import TradeStep, run_trade_test
from extmm.ops.secrets import SECRET_VARS
from extmm.runtime.app import wall_clock_ms
from extmm.sim.server import serve_simulator
from extmm.venue.network import NetworkVenue
from extmm.venue.signing import is_ours
from tests.integration.test_commands import check_lines, run_cli, sim, write_config  # noqa: F401 - `sim` is a fixture

STEPS = ["arm dead man's switch", "account stream", "market", "place", "replace", "cancel", "nothing open",
         "disarm dead man's switch"]


def test_trade_test_against_a_running_simulator_passes_and_leaves_nothing_open(sim, tmp_path):  # noqa: F811
    config = write_config(tmp_path)
    result = run_cli("check", "--config", str(config), "--endpoint", sim.rest, sim.stream, "--trade-test",
                     env=sim.env(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = check_lines(result)
    for step in STEPS:
        line = lines[f"trade test {step}"]
        assert line.startswith("OK ") and line.endswith(" ms)"), line  # each step with its latency
    assert "trade test passed" in result.stdout

    async def open_after() -> list:
        async with NetworkVenue(sim.rest, sim.stream, sim.credentials()) as venue:
            return await venue.get_open_orders()

    assert [o for o in trio.run(open_after) if is_ours(o.external_id)] == []


def test_trade_test_is_refused_on_mainnet(tmp_path):
    config = write_config(tmp_path)
    result = run_cli("check", "--config", str(config), "--network", "mainnet", "--trade-test",
                     env={k: v for k, v in os.environ.items() if k not in SECRET_VARS}, cwd=tmp_path)
    assert result.returncode == 2 and "not mainnet" in result.stderr


async def test_a_refused_replace_is_cleaned_up_and_fails_the_test():
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(serve_simulator, markets=["BTC-USD"], seed=6))
        steps: list[TradeStep] = []

        def report(step: TradeStep) -> None:
            steps.append(step)
            if step.name == "place" and step.passed:
                handle.faults.reject_orders(count=1, mode="rest")  # the next order: the replace

        async with NetworkVenue(handle.rest_url, handle.stream_url, handle.account.credentials()) as venue:
            passed = await run_trade_test(venue, "BTC-USD", prefix="extmm", epoch_ms=wall_clock_ms, report=report)
        nursery.cancel_scope.cancel()
    assert passed is False
    names = [(s.name, s.passed) for s in steps]
    assert names[:4] == [("arm dead man's switch", True), ("account stream", True), ("market", True),
                         ("place", True)]
    assert names[4] == ("replace", False)
    assert ("clean-up", True) in names[5:]
    assert any("disarmed" in s.detail for s in steps[5:])
    account = handle.account.account_id
    assert handle.engine.open_orders(account) == []  # the first order, left by the refused replace, is gone
    assert handle.engine.dms_deadline(account) is None  # disarmed only after that was confirmed
