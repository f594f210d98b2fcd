"""Operator commands against real processes: `check` online, `cancel-all` and `status`.

`check` and `cancel-all` run as `python -m extmm …` subprocesses against one
`python -m extmm sim` subprocess (its first stdout line gives the URLs and the paper
credentials, passed on through the EXTENDED_* variables); `status` reads a `/healthz`
served in-process by `serve_metrics`.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from extmm.cli import main as cli_main
from extmm.commands import status as status_command
from extmm.commands._online_checks import CheckResult, check_credentials, check_sizes
from extmm.commands._venue_target import ApiKeyOnly, UsageError, resolve_target
from extmm.commands.cancel_all import CancelOutcome, cancel_open_orders, report
from extmm.config import parse_config
from extmm.domain.units import Side
from extmm.markets import bundled_markets
from extmm.ops.metrics import DEFAULT_HOST, DEFAULT_PORT, Metrics, health_payload, serve_metrics
from extmm.ops.secrets import SECRET_VARS, load_secrets
from extmm.ops.status import example_status
from extmm.venue.network import NetworkVenue
from extmm.venue.parse import parse_market
from extmm.venue.signing import Credentials
from extmm.venue.types import OrderInfo, OrderRequest
from tests import cli_driver

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "config.json"


# -- the simulator subprocess ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Sim:
    rest: str
    stream: str
    account: dict[str, Any]

    def env(self, **overrides: str | None) -> dict[str, str]:
        """The environment of a command: our paper credentials, never the developer's."""
        env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
        env.update(
            EXTENDED_API_KEY=self.account["api_key"],
            EXTENDED_STARK_PRIVATE_KEY=self.account["stark_private_key"],
            EXTENDED_STARK_PUBLIC_KEY=self.account["stark_public_key"],
            EXTENDED_VAULT_ID=str(self.account["vault"]),
        )
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def credentials(self) -> Credentials:
        return Credentials(
            api_key=self.account["api_key"],
            vault=self.account["vault"],
            stark_private_key=self.account["stark_private_key"],
            stark_public_key=self.account["stark_public_key"],
        )


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    process = subprocess.Popen(
        [sys.executable, "-m", "extmm", "sim", "--seed", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "the simulator did not announce itself within 30 s"
        announcement = json.loads(process.stdout.readline())
        yield Sim(rest=announcement["rest"], stream=announcement["stream"], account=announcement["account"])
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # cwd: a directory without a .env file, so only `env` supplies credentials.
    return subprocess.run(
        [sys.executable, "-m", "extmm", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=90
    )


def write_config(tmp_path: Path, mutate=None) -> Path:
    data = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    if mutate is not None:
        mutate(data)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def check_lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """`OK name: detail` lines by name → the whole line."""
    out = {}
    for line in result.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("OK", "FAIL", "SKIP"):
            out[rest.split(":", 1)[0]] = line
    return out


def assert_no_secret(sim: Sim, result: subprocess.CompletedProcess[str]) -> None:
    text = result.stdout + result.stderr
    assert sim.account["api_key"] not in text
    assert sim.account["stark_private_key"][2:].lstrip("0")[:20] not in text.lower()


# -- check: online -------------------------------------------------------------------------------


def test_check_against_a_running_venue_passes_every_check(sim, tmp_path):
    config = write_config(tmp_path)
    result = run_cli(
        "check", "--config", str(config), "--endpoint", sim.rest, sim.stream, env=sim.env(), cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = check_lines(result)
    expected = {
        "config",
        "credentials",
        "connectivity",
        "account identity",
        "account",
        "market BTC-USD",
        "market ETH-USD",
        "streams",
        "fees",
        "sizes BTC-USD",
        "sizes ETH-USD",
        "leverage BTC-USD",
        "leverage ETH-USD",
        "margin",
    }
    assert set(lines) == expected
    assert all(line.startswith("OK ") for line in lines.values()), result.stdout
    assert "$10000" in lines["account"]
    assert "taker 0.00025" in lines["fees"]
    assert_no_secret(sim, result)


def test_check_names_a_missing_secret_and_exits_2(sim, tmp_path):
    config = write_config(tmp_path)
    env = sim.env(EXTENDED_STARK_PRIVATE_KEY=None)
    result = run_cli(
        "check", "--config", str(config), "--endpoint", sim.rest, sim.stream, env=env, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = check_lines(result)
    assert lines["credentials"].startswith("FAIL credentials: missing EXTENDED_STARK_PRIVATE_KEY")
    # The API key alone still reaches the account: the rest is checked too.
    assert lines["account"].startswith("OK ") and lines["market BTC-USD"].startswith("OK ")
    assert_no_secret(sim, result)


def test_check_names_an_unknown_market_and_exits_2(sim, tmp_path):
    def add_sol(data: dict) -> None:
        data["markets"].append({**data["markets"][0], "name": "SOL-USD"})

    config = write_config(tmp_path, add_sol)
    result = run_cli(
        "check", "--config", str(config), "--endpoint", sim.rest, sim.stream, env=sim.env(), cwd=tmp_path
    )
    assert result.returncode == 2
    lines = check_lines(result)
    assert lines["market SOL-USD"].startswith("FAIL market SOL-USD: markets[2].name: SOL-USD is not listed")
    assert lines["market BTC-USD"].startswith("OK ") and "sizes SOL-USD" not in lines
    assert result.stderr.strip().endswith("1 check failed")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda d: d["markets"][0].update(quote_notional_cap_usd=1),
            "markets[0].quote_notional_cap_usd $1 buys only 0.00001 at",
        ),
        (
            lambda d: d["markets"][1].update(min_order_size=0.001),
            "markets[1].min_order_size 0.001 is below the venue minimum 0.01",
        ),
    ],
    ids=["quote-cap-below-minimum", "configured-minimum-below-venue"],
)
def test_check_refuses_sizes_below_the_market_minimum(sim, tmp_path, mutate, message):
    config = write_config(tmp_path, mutate)
    result = run_cli(
        "check", "--config", str(config), "--endpoint", sim.rest, sim.stream, env=sim.env(), cwd=tmp_path
    )
    assert result.returncode == 2
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith("FAIL sizes ") and message in failed[0], result.stdout


def test_check_explains_a_refused_api_key(sim, tmp_path):
    config = write_config(tmp_path)
    env = sim.env(EXTENDED_API_KEY="not-the-key-of-this-account")
    result = run_cli(
        "check", "--config", str(config), "--endpoint", sim.rest, sim.stream, env=env, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = check_lines(result)
    assert "refused the API key" in lines["account"] and lines["account"].startswith("FAIL")
    assert lines["fees"].startswith("SKIP")
    assert "not-the-key-of-this-account" not in result.stdout + result.stderr


def test_check_paper_runs_against_the_embedded_simulator(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    result = run_cli("check", "--config", str(EXAMPLE), "--network", "paper", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = check_lines(result)
    assert all(line.startswith("OK ") for line in lines.values())
    assert {"connectivity", "account", "streams", "fees", "sizes BTC-USD"} <= set(lines)
    assert {"leverage BTC-USD", "leverage ETH-USD", "margin"} <= set(lines)


def test_check_reports_an_unreachable_venue(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    rest, stream = f"http://127.0.0.1:{port}/api/v1", f"ws://127.0.0.1:{port}/stream.extended.exchange/v1"
    result = run_cli("check", "--config", str(EXAMPLE), "--endpoint", rest, stream, env=env, cwd=tmp_path)
    assert result.returncode == 2
    lines = check_lines(result)
    assert lines["credentials"].startswith("FAIL credentials: missing EXTENDED_API_KEY")
    assert lines["connectivity"].startswith(f"FAIL connectivity: GET {rest}/info/markets")
    assert "Traceback" not in result.stderr


def test_check_with_network_and_a_broken_config_exits_2(tmp_path, capsys):
    bad = write_config(tmp_path, lambda d: d["risk"].update(max_open_orders=0))
    assert cli_main(["check", "--config", str(bad), "--network", "paper"]) == 2
    assert "FAIL config: risk.max_open_orders: expected an integer > 0, got 0" in capsys.readouterr().out


def test_venue_options_resolve_to_targets():
    assert resolve_target(None, None) is None
    assert resolve_target("paper", None).endpoint is None
    testnet = resolve_target("testnet", None)
    assert testnet.endpoint.signing_domain.chain_id == "SN_SEPOLIA"
    proxied = resolve_target("mainnet", ["http://proxy/api/v1", "ws://proxy/v1"])
    assert (proxied.network, proxied.endpoint.rest_url) == ("mainnet", "http://proxy/api/v1")
    assert proxied.endpoint.signing_domain.chain_id == "SN_MAIN"
    simulator = resolve_target(None, ["http://127.0.0.1:1/api/v1/", "ws://127.0.0.1:1/v1"])
    assert (simulator.network, simulator.endpoint.rest_url) == ("custom", "http://127.0.0.1:1/api/v1")
    assert simulator.endpoint.signing_domain is None
    with pytest.raises(UsageError):
        resolve_target("paper", ["http://a", "ws://b"])


# -- check: pure parts ------------------------------------------------------------------------------


def btc_info(mark: str) -> Any:
    raw = json.loads(json.dumps(bundled_markets()["BTC-USD"]))
    raw["marketStats"]["markPrice"] = mark
    return parse_market(raw)


def btc_config(**changes: Any) -> Any:
    cfg = parse_config({"markets": [{"name": "BTC-USD", **changes}]})
    return cfg.markets[0]


def test_a_quote_exactly_at_the_minimum_passes_and_a_cent_less_fails():
    info = btc_info("80000")  # minimum 0.0001 BTC = $8 at this mark
    assert check_sizes(btc_config(quote_notional_cap_usd=8), 0, info).passed
    short = check_sizes(btc_config(quote_notional_cap_usd=7.99), 0, info)
    assert not short.passed
    assert (
        "buys only 0.00009 at 80000, below the minimum order size 0.0001 (needs at least $8.00)"
        in short.detail
    )
    # A configured minimum above the venue's raises the bar.
    assert not check_sizes(btc_config(quote_notional_cap_usd=8, min_order_size=0.0002), 0, info).passed
    assert check_sizes(btc_config(quote_notional_cap_usd=16, min_order_size=0.0002), 0, info).passed


def test_sizes_fall_back_to_the_last_price_and_fail_without_any():
    raw = json.loads(json.dumps(bundled_markets()["BTC-USD"]))
    raw["marketStats"]["markPrice"] = "0"
    raw["marketStats"]["lastPrice"] = "100000"
    result = check_sizes(btc_config(quote_notional_cap_usd=50), 0, parse_market(raw))
    assert result.passed and "at 100000" in result.detail
    raw["marketStats"] = {}
    result = check_sizes(btc_config(quote_notional_cap_usd=50), 0, parse_market(raw))
    assert not result.passed and "no mark or last price" in result.detail


def test_credentials_check_names_variables_never_values(sim):
    secrets = load_secrets(environ=sim.env(), read_env_file=False, register=False)
    verdict = check_credentials(secrets)
    assert verdict.result.passed and verdict.trading is not None
    assert sim.account["api_key"] not in verdict.result.line()

    other = sim.env(EXTENDED_STARK_PUBLIC_KEY="0x" + "1" * 63)
    verdict = check_credentials(load_secrets(environ=other, read_env_file=False, register=False))
    assert verdict.result.line() == (
        "FAIL credentials: EXTENDED_STARK_PRIVATE_KEY is not the private key of EXTENDED_STARK_PUBLIC_KEY"
    )
    assert isinstance(verdict.venue_credentials, ApiKeyOnly) and verdict.trading is None

    zero_vault = sim.env(EXTENDED_VAULT_ID="0")
    verdict = check_credentials(load_secrets(environ=zero_vault, read_env_file=False, register=False))
    assert verdict.result.line().startswith("FAIL credentials: EXTENDED_VAULT_ID must be a positive integer")
    assert CheckResult.skip("fees", "x").line() == "SKIP fees: x"


# -- cancel-all ------------------------------------------------------------------------------------


def resting(info: Any, external_id: str, side: Side, mark: Decimal, expiry_ms: int) -> OrderRequest:
    spec = info.spec
    price = mark * (Decimal("0.99") if side is Side.BUY else Decimal("1.01"))
    qty = max(spec.min_order_size, Decimal("0.001") if info.name == "BTC-USD" else Decimal("0.01"))
    return OrderRequest(
        market=info.name,
        side=side,
        qty=qty,
        price=spec.ticks_to_price(spec.float_to_ticks(float(price), side)),
        external_id=external_id,
        expiry_ms=expiry_ms,
        max_fee_rate=Decimal("0.0005"),
        post_only=True,
    )


async def run_command(sim: Sim, tmp_path: Path, *args: str, **env: str | None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "extmm", *args]
    with trio.fail_after(60):
        return await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False, env=sim.env(**env), cwd=tmp_path
        )


async def place_resting(venue: NetworkVenue, specs: list[tuple[str, str, Side]]) -> list[Any]:
    markets = {m.name: m for m in await venue.get_markets()}
    # Expiries are wall-clock epoch times on the venue: read the clock, as the bot's edge does.
    expiry = int(time.time() * 1000) + 3_600_000
    placed = []
    for ext, name, side in specs:
        info = markets[name]
        mark = Decimal(str(info.raw["marketStats"]["markPrice"]))
        placed.append(await venue.place_order(resting(info, ext, side, mark, expiry)))
    return placed


async def test_cancel_all_by_market_then_everything_only_ours(sim, tmp_path):
    async with NetworkVenue(sim.rest, sim.stream, sim.credentials()) as venue:
        await venue.mass_cancel(cancel_all=True)  # other tests may have left orders behind
        placed = await place_resting(
            venue,
            [
                ("extmm-ca-b1", "BTC-USD", Side.BUY),
                ("extmm-ca-b2", "BTC-USD", Side.SELL),
                ("extmm-ca-e1", "ETH-USD", Side.BUY),
                ("manual-1", "BTC-USD", Side.BUY),  # someone else's order on the same sub-account
            ],
        )
        assert len(await venue.get_open_orders()) == 4

        result = await run_command(
            sim, tmp_path, "cancel-all", "--market", "BTC-USD", "--endpoint", sim.rest, sim.stream
        )
        out = result.stdout.decode()
        assert result.returncode == 0, out + result.stderr.decode()
        assert "open before: 2 (BTC-USD: 2)" in out and "cancelled: 2 (BTC-USD: 2)" in out
        assert "remaining: none (confirmed by the venue)" in out
        assert "left alone: 1 open order not ours" in out
        assert sorted(o.external_id for o in await venue.get_open_orders()) == ["extmm-ca-e1", "manual-1"]

        result = await run_command(sim, tmp_path, "cancel-all", "--endpoint", sim.rest, sim.stream)
        out = result.stdout.decode()
        assert result.returncode == 0, out + result.stderr.decode()
        assert "cancelled: 1 (ETH-USD: 1)" in out and "remaining: none" in out
        assert [o.external_id for o in await venue.get_open_orders()] == ["manual-1"]
        for order in placed[:3]:
            (info,) = await venue.get_orders_by_external_id(order.external_id)
            assert info.status == "CANCELLED"

        # --all is the explicit whole-account variant.
        result = await run_command(sim, tmp_path, "cancel-all", "--all", "--endpoint", sim.rest, sim.stream)
        out = result.stdout.decode()
        assert result.returncode == 0, out + result.stderr.decode()
        assert "cancelled: 1 (BTC-USD: 1)" in out
        assert await venue.get_open_orders() == []
        assert sim.account["api_key"] not in out + result.stderr.decode()


async def test_cancel_all_unreachable_venue_is_unknown_not_none(sim, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    result = await run_command(
        sim,
        tmp_path,
        "cancel-all",
        "--timeout",
        "2",
        "--endpoint",
        f"http://127.0.0.1:{dead}/api/v1",
        f"ws://127.0.0.1:{dead}/stream",
    )
    out = result.stdout.decode()
    assert result.returncode == 3, out + result.stderr.decode()
    assert "remaining: UNKNOWN" in out and "remaining: none" not in out
    assert "open before: UNKNOWN" in out
    assert b"Traceback" not in result.stderr


async def test_cancel_all_refuses_without_a_key_or_with_a_bad_market(sim, tmp_path):
    # The four refusals run the command's handler in one child process (tests/cli_driver.py);
    # the test above runs `python -m extmm cancel-all` itself.
    venue = ["--endpoint", sim.rest, sim.stream]
    cases = [
        ("missing key", ["cancel-all", *venue], {"EXTENDED_API_KEY": None}),
        ("unknown market", ["cancel-all", "--market", "SOL-USD", *venue], {}),
        ("wrong key", ["cancel-all", *venue], {"EXTENDED_API_KEY": "wrong-key-0123456789"}),
        ("bad network", ["cancel-all"], {"EXTENDED_NETWORK": "paper"}),
    ]
    with trio.fail_after(120):
        done = await trio.run_process([sys.executable, "-c", cli_driver.DRIVER], stdin=cli_driver.cases_input(cases).encode(),
                                      capture_stdout=True, capture_stderr=True, check=False, env=sim.env(), cwd=tmp_path)
    results = {name: (code, err) for name, code, err in
               cli_driver.parse_results(done.stdout.decode(), [c[0] for c in cases], done.stderr.decode())}
    code, err = results["missing key"]
    assert code == 2 and "EXTENDED_API_KEY" in err
    code, err = results["unknown market"]
    assert code == 2
    assert "unknown market SOL-USD; the venue has: BTC-USD, ETH-USD" in err
    code, err = results["wrong key"]
    assert code == 2 and "refused the API key" in err
    code, err = results["bad network"]
    assert code == 2 and "EXTENDED_NETWORK must be testnet or mainnet" in err


def test_cancel_all_names_a_venue_without_network_options(monkeypatch, tmp_path):
    """The README's `python -m extmm cancel-all` works as written: EXTENDED_NETWORK, else mainnet."""
    from extmm.commands.cancel_all import default_network

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EXTENDED_NETWORK", raising=False)
    assert default_network(None) == "mainnet"
    (tmp_path / ".env").write_text("EXTENDED_NETWORK=testnet\n")
    assert default_network(None) == "testnet"
    monkeypatch.setenv("EXTENDED_NETWORK", "mainnet")
    assert default_network(None) == "mainnet"


class StuckVenue:
    """A venue whose cancels change nothing (e.g. a bot on the account keeps re-quoting)."""

    def __init__(self, orders: list[OrderInfo]) -> None:
        self.orders = orders
        self.cancels: list[dict[str, Any]] = []
        self.failing = False

    async def get_open_orders(self, market: str | None = None) -> list[OrderInfo]:
        await trio.sleep(0.01)
        if self.failing:
            from extmm.venue.errors import NetworkError

            raise NetworkError("connection refused")
        return [o for o in self.orders if market in (None, o.market)]

    async def mass_cancel(self, **selection: Any) -> None:
        await trio.sleep(0.01)
        self.cancels.append(selection)


def order(order_id: int, market: str = "BTC-USD", prefix: str = "extmm") -> OrderInfo:
    return OrderInfo(
        id=order_id,
        external_id=f"{prefix}-{order_id}",
        market=market,
        side=Side.BUY,
        type="LIMIT",
        status="NEW",
        status_reason=None,
        price=Decimal("80000"),
        qty=Decimal("0.001"),
    )


async def test_cancel_all_resends_and_exits_1_while_orders_remain(autojump_clock, capsys):
    venue = StuckVenue([order(1), order(2, "ETH-USD"), order(9, prefix="other")])
    outcome = await cancel_open_orders(venue, market=None, timeout_s=10, poll_s=0.5, resend_s=3)  # type: ignore[arg-type]
    # Only ours, by external id, at 0, 3, 6 and 9 s; the foreign order is never named.
    assert venue.cancels == [{"external_ids": ["extmm-1", "extmm-2"]}] * 4
    assert [o.id for o in outcome.remaining] == [1, 2] and outcome.cancelled == ()
    assert [o.id for o in outcome.foreign] == [9]
    assert report(outcome, scope="our orders", timeout_s=10) == 1
    out = capsys.readouterr().out
    assert "remaining after 10s: 2 (BTC-USD: 1, ETH-USD: 1)" in out and "id 1 externalId extmm-1" in out
    assert "left alone: 1 open order not ours" in out

    outcome = await cancel_open_orders(venue, market=None, everything=True, timeout_s=1)  # type: ignore[arg-type]
    assert venue.cancels[-1] == {"cancel_all": True}

    venue.orders = [order(1), order(3)]  # 3 is new: someone is still placing orders
    outcome = await cancel_open_orders(venue, market="BTC-USD", everything=True, timeout_s=1)  # type: ignore[arg-type]
    assert venue.cancels[-1] == {"markets": ["BTC-USD"]}
    assert (
        report(
            CancelOutcome(before=(order(1),), remaining=outcome.remaining, sends=1), scope="x", timeout_s=1
        )
        == 1
    )
    assert "is a bot still running" in capsys.readouterr().out


async def test_cancel_all_a_venue_that_stops_answering_is_unknown(autojump_clock, capsys):
    venue = StuckVenue([order(1)])

    async def fail_soon() -> None:
        await trio.sleep(1)
        venue.failing = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fail_soon)
        outcome = await cancel_open_orders(venue, timeout_s=5)  # type: ignore[arg-type]
    assert outcome.remaining is None and not outcome.confirmed
    assert report(outcome, scope="our orders", timeout_s=5) == 3
    out = capsys.readouterr().out
    assert "remaining: UNKNOWN" in out and "cancelled: UNKNOWN" in out


# -- status ------------------------------------------------------------------------------------------


async def serve(nursery: trio.Nursery, get_status) -> str:
    port = await nursery.start(
        lambda task_status: serve_metrics(
            Metrics(process_metrics=False), get_status, port=0, task_status=task_status
        )
    )
    return f"http://127.0.0.1:{port}"


async def status_of(url: str, **options: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await trio.to_thread.run_sync(partial(status_command.main, url, out=out, err=err, **options))
    return code, out.getvalue(), err.getvalue()


async def test_status_prints_a_healthy_bot(nursery):
    url = await serve(nursery, lambda: example_status())
    code, out, err = await status_of(url)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "extmm on paper: HEALTHY, ready, up 3h 12m"
    assert "breaker: CLOSED, 1 trip (last: 429 burst: 6 responses in 60s (limit 5))" in lines
    assert "dead man's switch: armed, 87s left" in lines
    assert any(
        line.split()[:3] == ["BTC-USD", "ACTIVE", "book"] and "2 open orders" in line for line in lines
    )
    assert any(line.split()[:2] == ["ETH-USD", "HALTED"] and "book stale" in line for line in lines)

    code, out, _ = await status_of(url + "/healthz", as_json=True)
    assert code == 0
    assert json.loads(out) == json.loads(json.dumps(health_payload(example_status())[1]))


async def test_status_exit_codes_for_unhealthy_silent_and_unreachable(nursery):
    sick = await serve(nursery, lambda: attrs.evolve(example_status(), healthy=False))
    code, out, _ = await status_of(sick)
    assert code == 1 and out.startswith("extmm on paper: UNHEALTHY, ready")

    starting = await serve(nursery, lambda: None)
    code, out, _ = await status_of(starting)
    assert code == 1 and out.splitlines() == ["extmm: UNHEALTHY, not ready", "reason: no status yet"]

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    code, out, err = await status_of(closed, timeout_s=2)
    assert (code, out) == (2, "") and "cannot read the bot's health" in err and "ConnectError" in err

    code, _, err = await status_of(sick + "/elsewhere")
    assert code == 2 and "HTTP 404" in err


async def test_status_command_line(nursery):
    url = await serve(nursery, lambda: example_status())
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "extmm", "status", "--url", url, "--json"],
            capture_stdout=True,
            check=False,
        )
    assert result.returncode == 0
    assert json.loads(result.stdout)["markets"]["ETH-USD"]["state"] == "HALTED"
    assert status_command.DEFAULT_URL == f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
