"""The process-kill drill: real processes, real sockets, real time.

The simulator runs in this process (`serve_simulator`); the bot is `python -m extmm run
--endpoint ...` in a child process with paper credentials in its environment. Once it
quotes, it is SIGKILLed: the simulator's dead man's switch must cancel every order of
ours within the countdown. A position is then left on the account (one small taker
order when the bot happened to be flat), the bot is started again and must adopt it
(its `extmm_inventory_contracts` gauge equals the simulator's position), never reuse an
externalId, and exit cleanly after its `--duration`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from extmm.config import parse_config
from extmm.domain.units import Side
from extmm.ops.secrets import API_KEY_VAR, PRIVATE_KEY_VAR, PUBLIC_KEY_VAR, VAULT_ID_VAR
from extmm.research.chaos.invariants import InvariantReport, MarketLimits, Tolerances
from extmm.research.chaos.runner import ScenarioResult, chaos_config_data, market_limits
from extmm.sim.inproc import InProcessVenue
from extmm.sim.server import SimHandle, serve_simulator
from extmm.venue.signing import is_ours
from extmm.venue.types import OrderRequest

POLL_S = 0.05
# The engine fires the switch on its next tick (50 ms) and we poll every 50 ms.
DMS_TOLERANCE_S = 0.5


@attrs.frozen(kw_only=True)
class ProcessKillTimings:
    """Phase budgets (seconds, wall clock)."""

    start_timeout_s: float = 60.0  # until the first bot quotes in every market
    trade_s: float = 3.0  # quoting before the kill
    restart_run_s: float = 15.0  # the second bot's --duration
    adopt_timeout_s: float = 12.0  # until the second bot reports the simulator's position


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def signed_position(handle: SimHandle, market: str) -> Decimal:
    total = Decimal(0)
    for p in handle.engine.positions(handle.account.account_id, market):
        total += p.size if p.side == "LONG" else -p.size
    return total


def our_open_orders(handle: SimHandle, prefix: str) -> list[str]:
    return [
        o.external_id
        for o in handle.engine.open_orders(handle.account.account_id)
        if is_ours(o.external_id, prefix)
    ]


def record_new_orders(handle: SimHandle, prefix: str) -> Counter[str]:
    """Count every new order of ours the engine is asked to accept, duplicates included
    (the engine refuses a reused externalId, so its books alone would hide them)."""
    sent: Counter[str] = Counter()
    place = handle.engine.place_order

    def place_and_count(account_id: int, body: Any, now_ms: int, **kw: Any) -> Any:
        ext = body.get("id") if isinstance(body, dict) else None
        if isinstance(ext, str) and is_ours(ext, prefix):
            sent[ext] += 1
        return place(account_id, body, now_ms, **kw)

    handle.engine.place_order = place_and_count  # type: ignore[method-assign]
    return sent


async def bot_metrics(client: httpx.AsyncClient, port: int) -> dict[str, dict[str, float]]:
    """`{metric: {market (or ""): value}}` from the bot's /metrics; {} when unreachable."""
    try:
        response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0)
    except httpx.HTTPError:
        return {}
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[sample.labels.get("market", "")] = sample.value
    return out


async def leave_a_position(handle: SimHandle, market: str) -> Decimal:
    """Buy the smallest size at the best ask for the bot's account if it is flat, so the
    restarted bot has a position to adopt. Returns the position afterwards."""
    if signed_position(handle, market) != 0:
        return signed_position(handle, market)
    engine = handle.engine
    spec = engine.market_spec(market)
    best_ask = engine.book_snapshot(market, depth=1).asks[0].price
    venue = InProcessVenue(handle.runner, engine.account_info(handle.account.account_id), sign=True)
    await venue.place_order(
        OrderRequest(
            market=market,
            side=Side.BUY,
            qty=spec.lots_to_qty(max(spec.min_order_lots, 1)),
            price=best_ask,
            external_id=f"chaosprobe-{engine.now_ms}",
            expiry_ms=engine.now_ms + 3_600_000,
            max_fee_rate=Decimal("0.001"),
            post_only=False,
            time_in_force="IOC",
        )
    )
    return signed_position(handle, market)


def _bot_command(config: Path, handle: SimHandle, *, duration_s: float, metrics_port: int) -> list[str]:
    return [
        sys.executable, "-m", "extmm", "run",
        "--config", str(config),
        "--endpoint", handle.rest_url, handle.stream_url,
        "--duration", f"{duration_s:g}",
        "--no-dashboard",
        "--metrics-port", str(metrics_port),
        "--log-level", "WARNING",
    ]


def _bot_env(handle: SimHandle) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXTENDED_")}
    env.update({
        API_KEY_VAR: handle.account.api_key,
        PRIVATE_KEY_VAR: handle.account.stark_private_key,
        PUBLIC_KEY_VAR: handle.account.stark_public_key,
        VAULT_ID_VAR: str(handle.account.vault),
    })
    return env


async def _wait_for(predicate: Callable[[], bool], timeout_s: float) -> float | None:
    """Seconds until `predicate` held, or None on timeout."""
    started = trio.current_time()
    with trio.move_on_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 - the state lives in the engine
            await trio.sleep(POLL_S)
        return trio.current_time() - started
    return None


async def run_process_kill(
    *,
    seed: int = 1,
    dms_s: int = 5,
    timings: ProcessKillTimings = ProcessKillTimings(),
    workdir: Path | None = None,
) -> ScenarioResult:
    data = chaos_config_data(dead_mans_switch_sec=dms_s)
    cfg = parse_config(data)
    markets = [m.name for m in cfg.enabled_markets]
    prefix = cfg.external_id_prefix
    notional = _NotionalWatch(market_limits(cfg))
    problems: list[str] = []
    crashes: list[str] = []
    extra: dict[str, Any] = {"dms_countdown_s": dms_s}
    orphans = drift = comparisons = breaker_trips = 0
    clean_exit = False

    with tempfile.TemporaryDirectory(prefix="extmm-chaos-", dir=workdir) as tmp:
        tmpdir = Path(tmp)
        config_path = tmpdir / "config.json"
        config_path.write_text(json.dumps(data))
        async with trio.open_nursery() as nursery:
            handle: SimHandle = await nursery.start(
                partial(serve_simulator, markets=markets, seed=seed, ping_interval_s=None)
            )
            sent = record_new_orders(handle, prefix)
            env = _bot_env(handle)

            async def start_bot(name: str, duration_s: float, port: int) -> trio.Process:
                cmd = _bot_command(config_path, handle, duration_s=duration_s, metrics_port=port)
                with (tmpdir / f"{name}.out").open("wb") as out, (tmpdir / f"{name}.err").open("wb") as err:
                    process: trio.Process = await nursery.start(
                        partial(trio.run_process, cmd, check=False, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, env=env, cwd=tmp)
                    )
                    return process

            # -- first life: quote, then die without a word ---------------------------------
            first = await start_bot("first", 600.0, 0)
            quoting = await _wait_for(
                lambda: first.returncode is not None
                or all(any(f"-{m}-" in e for e in our_open_orders(handle, prefix)) for m in markets),
                timings.start_timeout_s,
            )
            if quoting is None or first.returncode is not None:
                crashes.append(f"the first bot never quoted (exit code {first.returncode})")
            else:
                extra["first_quoting_after_s"] = round(quoting, 2)
                with trio.move_on_after(timings.trade_s):
                    while True:
                        notional.check(handle, problems)
                        await trio.sleep(0.25)
            open_at_kill = our_open_orders(handle, prefix)
            extra["open_at_kill"] = len(open_at_kill)
            first.send_signal(signal.SIGKILL)
            await first.wait()

            # -- the dead man's switch --------------------------------------------------------
            took = await _wait_for(lambda: not our_open_orders(handle, prefix), dms_s + DMS_TOLERANCE_S)
            extra["dms_cancelled_all_after_s"] = None if took is None else round(took, 2)
            if took is None:
                left = our_open_orders(handle, prefix)
                orphans += len(left)
                problems.append(f"{len(left)} orders still open {dms_s + DMS_TOLERANCE_S:g}s after SIGKILL")
                await _wait_for(lambda: not our_open_orders(handle, prefix), 30.0)
            left_position = await leave_a_position(handle, markets[0])
            extra["position_to_adopt"] = {markets[0]: str(left_position)}

            # -- second life: reconcile, adopt, trade, exit cleanly ----------------------------
            port = free_port()
            second = await start_bot("second", timings.restart_run_s, port)
            started = trio.current_time()
            adopted_after: float | None = None
            async with httpx.AsyncClient() as client:
                while second.returncode is None:
                    notional.check(handle, problems)
                    before = {m: signed_position(handle, m) for m in markets}
                    inventory = await bot_inventory(client, port, markets)
                    if inventory is not None:
                        comparisons += 1
                        if inventory == before:
                            if adopted_after is None:
                                adopted_after = trio.current_time() - started
                        elif adopted_after is not None:
                            # Fills race the scrape: a difference must outlive a second of quiet.
                            await trio.sleep(1.0)
                            inventory = await bot_inventory(client, port, markets)
                            now = {m: signed_position(handle, m) for m in markets}
                            if inventory is not None and now == before and inventory != now:
                                drift += 1
                                problems.append(f"bot inventory {_show(inventory)} != simulator {_show(now)}")
                    await trio.sleep(0.25)
            extra["position_adopted_after_s"] = None if adopted_after is None else round(adopted_after, 2)
            if adopted_after is None:
                drift += 1
                problems.append(f"the restarted bot never reported the position {_show(extra['position_to_adopt'])}")
            if second.returncode != 0:
                crashes.append(f"the restarted bot exited with code {second.returncode}")
            summary = _summary(tmpdir / "second.out")
            if summary is None:
                problems.append("the restarted bot printed no exit summary")
            else:
                breaker_trips = int(summary.get("breaker_trips", 0))
                clean_exit = summary.get("open_orders_at_exit") == 0 and not our_open_orders(handle, prefix)
                exit_position = {m: Decimal(v) for m, v in summary.get("position", {}).items()}
                if exit_position != {m: signed_position(handle, m) for m in markets}:
                    problems.append(f"exit summary position {_show(exit_position)} != the simulator's")
            nursery.cancel_scope.cancel()

    duplicates = sorted(ext for ext, n in sent.items() if n > 1)
    problems += [f"externalId {ext} sent twice as a new order" for ext in duplicates]
    report = InvariantReport(
        orphan_orders=orphans,
        lost_cancels=0,
        duplicate_orders=len(duplicates),
        position_drift=drift,
        max_position_drift=Decimal(0),
        max_net_notional_usd=round(notional.max_usd, 2),
        limit_usd=notional.limit_usd,
        notional_breaches=notional.breaches,
        max_open_orders=len(open_at_kill),
        open_order_breaches=0,
        stale_quotes=0,
        comparisons=comparisons,
        quoting_share=0.0,
        violations=tuple(problems[:20]),
    )
    return ScenarioResult(
        scenario="process_kill",
        seed=seed,
        duration_s=timings.trade_s + timings.restart_run_s,
        report=report,
        restarts=1,
        breaker_trips=breaker_trips,
        crashes=len(crashes),
        crash_details=tuple(crashes),
        kills=1,
        clean_exit=clean_exit,
        orders_sent=sum(sent.values()),
        extra=extra,
    )


def _show(position: Mapping[Any, Any]) -> str:  # by market name
    return ", ".join(f"{m} {v}" for m, v in position.items())


class _NotionalWatch:
    """|position| × mid per market against the net limit plus one quote, by episode."""

    def __init__(self, limits: dict[str, MarketLimits], tolerances: Tolerances = Tolerances()) -> None:
        self.limits = limits
        self.drift = tolerances.notional_price_drift
        self.limit_usd = round(
            max(m.max_net_position_usd + m.quote_notional_usd for m in limits.values()) * (1 + self.drift), 2
        )
        self.max_usd = 0.0
        self.breaches = 0
        self._over: set[str] = set()

    def check(self, handle: SimHandle, problems: list[str]) -> None:
        for market, lim in self.limits.items():
            usd = abs(float(signed_position(handle, market))) * handle.engine.mid(market)
            self.max_usd = max(self.max_usd, usd)
            allowed = (lim.max_net_position_usd + lim.quote_notional_usd) * (1 + self.drift)
            if usd <= allowed:
                self._over.discard(market)
            elif market not in self._over:
                self._over.add(market)
                self.breaches += 1
                problems.append(f"{market}: net notional ${usd:.2f} > ${allowed:.2f}")


async def bot_inventory(client: httpx.AsyncClient, port: int, markets: Sequence[str]) -> dict[str, Decimal] | None:
    """The bot's inventory per market once it reports ready; None before (or unreachable)."""
    metrics = await bot_metrics(client, port)
    if metrics.get("extmm_ready", {}).get("") != 1.0:
        return None
    inventory = metrics.get("extmm_inventory_contracts", {})
    if not all(m in inventory for m in markets):
        return None
    # The gauge is a float of a Decimal with a handful of digits: str() round-trips it.
    return {m: Decimal(str(inventory[m])) for m in markets}


def _summary(path: Path) -> dict[str, Any] | None:
    """The bot's exit summary: the last JSON object line on its stdout."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def run_process_kill_sync(**kw: Any) -> ScenarioResult:
    return trio.run(partial(run_process_kill, **kw))
