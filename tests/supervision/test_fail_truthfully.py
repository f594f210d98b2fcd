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
from tests import cli_driver
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


# -- the seven operator mistakes of `run`: one line, exit 2, nothing sent ---------------------------


SENDING = ("place_order", "cancel_order", "cancel_order_by_external_id", "mass_cancel", "set_dms")


@pytest.fixture
def mistake_configs(tmp_path):
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    config = tmp_path / "config.json"
    config.write_text((root / "config" / "config.json").read_text())
    data = json.loads(config.read_text())
    data["markets"][1]["name"] = "SOL-USD"
    unknown_market = tmp_path / "unknown-market.json"
    unknown_market.write_text(json.dumps(data))
    return root, config, unknown_market


async def test_seven_operator_mistakes_exit_2_with_one_line_and_nothing_sent(tmp_path, monkeypatch, mistake_configs):
    import os
    import socket
    import sys
    from functools import partial

    from extmm.ops.secrets import SECRET_VARS
    from extmm.sim.server import serve_simulator

    root, config, unknown_market = mistake_configs
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(partial(serve_simulator, seed=5))
        sent: list[str] = []
        for name in SENDING:
            real = getattr(sim.engine, name)

            def spy(*args, _name=name, _real=real, **kwargs):
                sent.append(_name)
                return _real(*args, **kwargs)

            monkeypatch.setattr(sim.engine, name, spy)
        acct = sim.account
        env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
        env.update(
            PYTHONPATH=str(root),
            EXTENDED_API_KEY=acct.api_key,
            EXTENDED_STARK_PRIVATE_KEY=acct.stark_private_key,
            EXTENDED_STARK_PUBLIC_KEY=acct.stark_public_key,
            EXTENDED_VAULT_ID=str(acct.vault),
        )
        with socket.socket() as dead:
            dead.bind(("127.0.0.1", 0))
            dead_port = dead.getsockname()[1]
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        venue = ["--endpoint", sim.rest_url, sim.stream_url]
        base = ["run", "--no-dashboard", "--duration", "5", "--config", str(config)]
        cases = {
            "metrics port in use": [*base, *venue, "--metrics-port", str(busy.getsockname()[1])],
            "metrics port 70000": [*base, *venue, "--metrics-port", "70000"],
            "negative duration": [*base, *venue, "--metrics-port", "0", "--duration", "-5"],
            "log level LOUD": [*base, *venue, "--metrics-port", "0", "--log-level", "LOUD"],
            "wrong API key": [*base, *venue, "--metrics-port", "0"],
            "unreachable venue": [*base, "--metrics-port", "0", "--endpoint",
                                  f"http://127.0.0.1:{dead_port}/api/v1", f"ws://127.0.0.1:{dead_port}/stream"],
            "unknown market": ["run", "--no-dashboard", "--duration", "5", "--config", str(unknown_market),
                               *venue, "--metrics-port", "0"],
        }
        expected = {
            "metrics port in use": "cannot serve metrics",
            "metrics port 70000": "--metrics-port",
            "negative duration": "--duration",
            "log level LOUD": "--log-level",
            "wrong API key": "refused the API key",
            "unreachable venue": "cannot reach or read the venue",
            "unknown market": "unknown market SOL-USD",
        }
        # Each case's `run` handler, all in one child process (tests/cli_driver.py: its own
        # stderr, exit code and environment per case); the run below is `python -m extmm` itself.
        driver_cases = [
            (name, argv, {"EXTENDED_API_KEY": "0123456789abcdef0123"} if name == "wrong API key" else {})
            for name, argv in cases.items()
        ]
        try:
            with trio.fail_after(90 * len(cases)):
                done = await trio.run_process(
                    [sys.executable, "-c", cli_driver.DRIVER], stdin=cli_driver.cases_input(driver_cases).encode(),
                    capture_stdout=True, capture_stderr=True, check=False, env=env, cwd=tmp_path,
                )
        finally:
            busy.close()
        results = cli_driver.parse_results(done.stdout.decode(), list(cases), done.stderr.decode())
        for name, code, err in results:
            verdict = cli_driver.verdict(err)
            assert code == 2, (name, err)
            assert "Traceback" not in err and len(verdict) == 1, (name, err)
            assert expected[name] in verdict[0], (name, verdict)
        assert sent == [], sent
        assert sim.engine.open_orders(sim.account.account_id) == []
        # The same venue and config without the mistake does trade (the cases were not vacuous).
        with trio.fail_after(90):
            result = await trio.run_process(
                [sys.executable, "-m", "extmm", *base, *venue, "--metrics-port", "0", "--duration", "3"],
                capture_stdout=True, capture_stderr=True, check=False, env=env, cwd=tmp_path,
            )
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert "place_order" in sent and sent[-1] == "set_dms"
        nursery.cancel_scope.cancel()


# -- the panel on an 80x24 terminal; its last frame agrees with the summary ---------------------------


def _frame(status, width: int = 80, height: int = 24) -> list[str]:
    from rich.console import Console

    from extmm.ops.dashboard import prerender

    console = Console(width=width, height=height, record=True, color_system=None, force_terminal=True)
    console.print(prerender(status, console))
    return console.export_text().rstrip("\n").splitlines()


def test_panel_fits_80x24_with_labels_and_units():
    import attrs

    from extmm.ops.status import example_status

    status = example_status()
    four = attrs.evolve(status, markets=status.markets + tuple(
        attrs.evolve(m, name=m.name.replace("-USD", "2-USD")) for m in status.markets))
    for st in (status, four):
        lines = _frame(st)
        assert len(lines) <= 24 and max(len(x) for x in lines) <= 80
        text = "\n".join(lines)
        assert "…" not in "\n".join(lines[:8]), text  # no figure or label cut short
        for label in ("net PnL", "USD", "bps", "contracts", "age s", "open", "DMS", "req"):
            assert label in text, (label, text)
        for m in st.markets:
            assert any(line.startswith(m.name) for line in lines), text
    # A big terminal keeps the full layout.
    assert len(_frame(status, 120, 80)) > 24


async def test_last_status_after_shutdown_agrees_with_the_summary(autojump_clock):
    async with running_bot() as bot:
        await trio.sleep(20)
        assert sum(m.open_orders for m in bot.root.status().markets) > 0
        bot.stop.set()
        await wait_until(lambda: bool(bot.result), within=60)
        (summary,) = bot.result
        final = bot.root.status()
        assert summary.open_orders_at_exit == 0
        assert sum(m.open_orders for m in final.markets) == 0
        assert final.dms_remaining_s is None and summary.dms == "disarmed"
        assert all(m.state == "OFF" for m in final.markets)
        text = "\n".join(_frame(final))
        assert "DMS disarmed" in text
