"""Fire drills: the invariant checker, short runs of every chaos scenario, the process kill.

The checker is first shown to catch each kind of breach on hand-made observations and
on a bot with a planted fault (a port that loses cancels, one that sends every order
twice); then every scenario runs briefly in virtual time and must keep every invariant,
inject its faults for real and still quote. `process_kill` runs real processes.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from decimal import Decimal
from typing import Any

import attrs
import pytest
import trio

from extmm.cli import main as cli_main
from extmm.research.chaos.invariants import InvariantChecker, MarketLimits, MarketObservation, Tolerances
from extmm.research.chaos.process import ProcessKillTimings, run_process_kill
from extmm.research.chaos.recording import RecordingPort
from extmm.research.chaos.runner import ScenarioResult, chaos_config, run_scenario_async
from extmm.research.chaos.scenarios import CALM, SCENARIOS
from extmm.venue.errors import VenueError
from extmm.venue.types import OrderRequest

LIMITS = {"BTC-USD": MarketLimits(max_net_position_usd=200, quote_notional_usd=50, max_open_orders=4,
                                  stale_after_s=3.0)}


def obs(**changes: Any) -> MarketObservation:
    base: dict[str, Any] = {
        "market": "BTC-USD",
        "venue_open": frozenset(),
        "bot_open": frozenset(),
        "venue_position": Decimal(0),
        "bot_position": Decimal(0),
        "account_stream_up": True,
        "since_fill_s": 10.0,
        "mid": 80_000.0,
        "book_age_s": 0.1,
    }
    base.update(changes)
    return MarketObservation(**base)


def run_checker(timeline: list[tuple[float, MarketObservation]], **observe_kw: Any) -> InvariantChecker:
    checker = InvariantChecker(LIMITS, Tolerances())
    for now, observation in timeline:
        checker.observe(now, [observation], **observe_kw)
    return checker


# -- the checker on hand-made observations ---------------------------------------------------


def every(step: float, until: float, **changes: Any) -> list[tuple[float, MarketObservation]]:
    n = int(round(until / step))
    return [(i * step, obs(**changes)) for i in range(n + 1)]


def test_an_order_the_bot_never_reports_is_an_orphan_after_two_seconds():
    checker = run_checker(every(0.1, 2.0, venue_open=frozenset({"x"})))
    assert checker.report().orphan_orders == 0  # open exactly 2 s: not yet
    checker.observe(2.1, [obs(venue_open=frozenset({"x"}))])
    checker.observe(2.2, [obs(venue_open=frozenset({"x"}))])
    report = checker.report()
    assert report.orphan_orders == 1  # counted once
    assert not report.passed
    assert "orphan x" in report.violations[0]


def test_known_or_cancelling_orders_are_not_orphans():
    known = run_checker(every(0.1, 10, venue_open=frozenset({"x"}), bot_open=frozenset({"x"})))
    assert known.report().passed
    checker = InvariantChecker(LIMITS)
    for i in range(100):  # cancel asked again every 2 s: a retrying bot, nothing lost
        checker.observe(i * 0.1, [obs(venue_open=frozenset({"x"}), cancel_requested_at={"x": i * 0.1 // 2 * 2})])
    assert checker.report().passed


def test_an_order_still_open_long_after_its_cancel_is_a_lost_cancel():
    # The bot knows the order (it is in its open list) but never asks again.
    checker = run_checker(every(0.1, 5.5, venue_open=frozenset({"x"}), bot_open=frozenset({"x"}),
                                cancel_requested_at={"x": 0.5}))
    assert checker.report().lost_cancels == 0  # 5 s after the cancel: not yet
    checker.observe(5.6, [obs(venue_open=frozenset({"x"}), bot_open=frozenset({"x"}), cancel_requested_at={"x": 0.5})])
    report = checker.report()
    assert report.lost_cancels == 1 and not report.passed
    assert "still open 5.1s after its cancel" in report.violations[0]


def test_a_market_wide_cancel_only_covers_orders_that_existed_then():
    # Placed after the market was cancelled: the mass cancel is not about it.
    checker = run_checker([(t, obs(venue_open=frozenset({"late"}), bot_open=frozenset({"late"}),
                                   market_cancel_at=1.0)) for t in (2.0, 9.0)])
    assert checker.report().passed
    before = run_checker([(t, obs(venue_open=frozenset({"early"}), market_cancel_at=1.0)) for t in (0.5, 9.0)])
    assert before.report().lost_cancels == 1


def test_orphan_clock_starts_over_when_the_venue_answers_again():
    timeline = every(0.1, 10, venue_open=frozenset({"x"}))
    checker = InvariantChecker(LIMITS)
    for now, observation in timeline:
        checker.observe(now, [observation], venue_reachable=now >= 8.0)
    assert checker.report().orphan_orders == 0  # reachable for 2 s only
    checker.observe(10.2, [obs(venue_open=frozenset({"x"}))])
    assert checker.report().orphan_orders == 1


def test_inventory_is_compared_only_with_the_stream_up_and_no_recent_fill():
    differ = {"venue_position": Decimal("0.001"), "bot_position": Decimal(0)}
    assert run_checker(every(0.1, 5, account_stream_up=False, **differ)).report().position_drift == 0
    assert run_checker(every(0.1, 5, since_fill_s=0.5, **differ)).report().position_drift == 0
    drifting = run_checker(every(0.1, 5, **differ)).report()
    assert drifting.position_drift == 1  # one episode, however long
    assert drifting.max_position_drift == Decimal("0.001")
    assert drifting.comparisons == 51


def test_net_notional_may_exceed_the_limit_by_one_quote_only():
    # 0.0031 BTC at 80 000 = 248 USD ≤ 200 + 50 (+2 % for the mid's drift); 0.0033 = 264 USD > 255.
    assert run_checker(every(1, 3, venue_position=Decimal("0.0031"), bot_position=Decimal("0.0031"))).report().passed
    over = run_checker(every(1, 3, venue_position=Decimal("-0.0033"), bot_position=Decimal("-0.0033"))).report()
    assert over.notional_breaches == 1
    assert over.max_net_notional_usd == pytest.approx(264.0)


def test_more_open_orders_than_allowed_is_a_breach():
    five = frozenset({"a", "b", "c", "d", "e"})
    report = run_checker(every(1, 2, venue_open=five, bot_open=five)).report()
    assert report.open_order_breaches == 1 and report.max_open_orders == 5


def test_quotes_must_leave_a_stale_book_within_the_grace():
    resting = {"venue_open": frozenset({"x"}), "bot_open": frozenset({"x"})}
    checker = InvariantChecker(LIMITS)
    for i in range(60):
        checker.observe(i * 0.1, [obs(book_age_s=i * 0.1, **resting)])
    report = checker.report()
    assert report.stale_quotes == 1  # age 4.1 s > 3 s + 1 s grace
    assert "stale after 3s" in report.violations[0]
    fine = InvariantChecker(LIMITS)
    for i in range(60):
        still = resting if i <= 35 else {}  # gone 3.6 s after the last frame
        fine.observe(i * 0.1, [obs(book_age_s=i * 0.1, **still)])
    assert fine.report().passed


def test_duplicates_are_counted_once_each():
    checker = InvariantChecker(LIMITS)
    checker.note_duplicates(1.0, ["a"])
    checker.note_duplicates(2.0, ["a", "b"])
    assert checker.report().duplicate_orders == 2


# -- the recording port -------------------------------------------------------------------


class _Venue:
    """Just enough of a port: orders are accepted, then a storm refuses everything."""

    def __init__(self) -> None:
        self.refuse = False

    async def place_order(self, order: OrderRequest) -> Any:
        if self.refuse:
            from extmm.venue.errors import RateLimited

            raise RateLimited()
        return object()

    async def mass_cancel(self, **selection: Any) -> None:
        return None


async def test_recording_port_sees_duplicates_cancels_and_outages(autojump_clock):
    from extmm.domain.units import Side

    venue = _Venue()
    port = RecordingPort(venue)  # type: ignore[arg-type]
    order = OrderRequest(market="BTC-USD", side=Side.BUY, qty=Decimal("0.001"), price=Decimal(80_000),
                         external_id="extmm-a-BTC-USD-b-000001", expiry_ms=1, max_fee_rate=Decimal(0),
                         cancel_id="extmm-a-BTC-USD-b-000000")
    await port.place_order(order)
    replaced_at = trio.current_time()
    assert port.cancel_requested_at("extmm-a-BTC-USD-b-000000") == replaced_at  # a replace cancels
    await port.place_order(order)
    assert port.duplicates == ["extmm-a-BTC-USD-b-000001"]
    await trio.sleep(5)
    venue.refuse = True
    for _ in range(3):
        with pytest.raises(Exception, match="rate limited"):
            await port.place_order(order)
        await trio.sleep(0.5)
    assert port.unreachable(for_s=1.0)
    # A replace refused outright cancelled nothing: the earlier request still stands.
    assert port.cancel_requested_at("extmm-a-BTC-USD-b-000000") == pytest.approx(replaced_at)
    await port.mass_cancel(markets=["BTC-USD"])
    assert port.market_cancel_at("BTC-USD") == trio.current_time() and port.market_cancel_at("ETH-USD") is None


# -- planted faults: the whole run must notice them ----------------------------------------


class _LosesCancels:
    """Between the bot and the recording port: cancels by externalId answer OK and never
    leave the process (a bug of ours), and replaces lose their cancelId, so orders stay
    open that the bot thinks are gone."""

    def __init__(self, inner: RecordingPort) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def cancel_order_by_external_id(self, external_id: str) -> None:
        return None

    async def place_order(self, order: OrderRequest) -> Any:
        return await self._inner.place_order(attrs.evolve(order, cancel_id=None))


class _SendsTwice:
    """Between the recording port and the bot: every new order goes out twice."""

    def __init__(self, inner: RecordingPort) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def place_order(self, order: OrderRequest) -> Any:
        placed = await self._inner.place_order(order)
        try:
            await self._inner.place_order(order)
        except Exception:  # the venue refuses the duplicate; the damage is the attempt
            pass
        return placed


async def test_orders_whose_cancels_are_lost_stay_tracked(autojump_clock):
    """A venue that acks cancels but drops them: the Executor keeps every such order in
    PENDING_CANCEL and cancels it again at each reconciliation, so none becomes an orphan
    (before that fix this run showed orphans)."""
    result = await run_scenario_async(CALM, duration_s=30, seed=3, wrap_port=_LosesCancels)
    assert result.report.orphan_orders == 0, result.to_json()


class _HiddenOrders:
    """Between the bot and the recording port: every tenth order also places a twin the
    bot never hears of, and open-order listings leave the twins out, so the bot can
    neither track nor reconcile them: true orphans."""

    def __init__(self, inner: RecordingPort) -> None:
        self._inner = inner
        self._count = 0
        self._twins: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def place_order(self, order: OrderRequest) -> Any:
        placed = await self._inner.place_order(order)
        self._count += 1
        if self._count % 10 == 0:
            twin = attrs.evolve(order, external_id=order.external_id + "t", cancel_id=None)
            self._twins.add(twin.external_id)
            with contextlib.suppress(VenueError):
                await self._inner.place_order(twin)
        return placed

    async def get_open_orders(self, market: str | None = None) -> Any:
        return [o for o in await self._inner.get_open_orders(market) if o.external_id not in self._twins]


async def test_orders_the_bot_cannot_see_are_orphans(autojump_clock):
    result = await run_scenario_async(CALM, duration_s=30, seed=3, wrap_port=_HiddenOrders)
    assert result.report.orphan_orders > 0, result.to_json()
    assert not result.passed


async def test_a_bot_that_sends_orders_twice_is_caught(autojump_clock):
    result = await run_scenario_async(CALM, duration_s=10, seed=3, wrap_port=_SendsTwice)
    assert result.report.duplicate_orders > 0
    assert not result.passed


async def test_a_calm_run_passes_and_quotes(autojump_clock):
    result = await run_scenario_async(CALM, duration_s=30, seed=3)
    assert result.passed, result.to_json()
    assert result.report.quoting_share > 0.8
    assert result.report.comparisons > 100
    assert result.orders_sent > 0 and result.clean_exit


# -- every scenario, briefly ----------------------------------------------------------------

# Each scenario must inject its own kind of fault; a drill that injected nothing proves nothing.
EVIDENCE = {
    "actor_kills": lambda r: r.kills >= 6 and set(r.extra["kills_by_actor"]) == {
        "account", "executor", "risk", "quoter", "book", "feed"},
    "ws_drops": lambda r: r.faults["ws_drops"] > 0,
    "rate_limit_storm": lambda r: r.faults["rest_429"] > 0 and r.breaker_trips > 0,
    "server_errors": lambda r: r.faults["rest_5xx"] > 0,
    "latency_spikes": lambda r: r.orders_sent > 0,
    "seq_gaps": lambda r: r.faults["seq_skips"] > 0,
    "malformed_frames": lambda r: r.faults["malformed_frames"] > 0,
    "stalled_feed": lambda r: r.faults["stalls"] > 0,
    "reject_storm": lambda r: r.faults["rejected_orders"] > 0,
    "mixed": lambda r: r.kills > 0 and sum(r.faults.values()) > 0,
}
# Virtual seconds of faults per scenario in the default suite (the CLI runs longer).
SHORT = {"actor_kills": 60, "ws_drops": 60, "rate_limit_storm": 60, "server_errors": 60, "seq_gaps": 120,
         "stalled_feed": 60, "reject_storm": 60, "mixed": 300}

# Bugs these drills still find in the bot; fixes proposed to the lead (chaos report, as a
# diff). Each test fails on every run today (checked 4/4 and more), so `strict` holds.
KNOWN_BUGS: dict[str, str] = {}
# Fixed after the drills showed them (rate_limit_storm, server_errors, mixed): lost cancels
# never retried; a filled quote re-placed without a new approval; orders resting on a stale
# book while Quoter or Risk restart; a Risk restarted under an open breaker quoting again;
# cancel-on-exit not retried.
# Found by these drills and fixed since (kept as the record): the Account's reconnect
# backoff never reset and Risk quoted on a stale inventory (ws_drops, seq_gaps); a 5xx in
# the Executor's start-up reconciliation crashed it and halted markets; orders that may
# be open were not counted against max_open_orders; a Book frame without a usable type
# crashed the Book; odd unknown config keys broke the one-problem-per-line output.


def _params() -> list[Any]:
    out = []
    for name, scenario in SCENARIOS.items():
        if scenario.kind != "virtual":
            continue
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name])] if name in KNOWN_BUGS else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _params())
async def test_scenario_keeps_every_invariant(autojump_clock, name):
    result: ScenarioResult = await run_scenario_async(SCENARIOS[name], duration_s=SHORT.get(name, 45), seed=5)
    summary = result.to_json()
    assert result.crashes == 0, summary
    assert EVIDENCE[name](result), f"{name} injected nothing: {summary}"
    assert result.report.quoting_share > 0.1, summary
    assert result.report.comparisons > 0, summary
    assert result.passed, summary


@pytest.mark.slow
async def test_ten_minutes_of_mixed_faults_keep_every_invariant(autojump_clock):
    """The mixed drill at twice the default length (the default run's `mixed` case, 300 s,
    checks the same: no crash, faults and kills injected, quoting, every invariant)."""
    result: ScenarioResult = await run_scenario_async(SCENARIOS["mixed"], duration_s=600, seed=5)
    summary = result.to_json()
    assert result.crashes == 0, summary
    assert EVIDENCE["mixed"](result), f"mixed injected nothing: {summary}"
    assert result.report.quoting_share > 0.1, summary
    assert result.report.comparisons > 0, summary
    assert result.passed, summary


# -- the process kill -----------------------------------------------------------------------


async def test_process_kill_dms_cancels_all_and_the_restart_adopts_the_position():
    result = await run_process_kill(
        seed=2, dms_s=3, timings=ProcessKillTimings(trade_s=2.0, restart_run_s=6.0, adopt_timeout_s=5.0)
    )
    summary = result.to_json()
    assert summary["open_at_kill"] > 0, summary  # else the DMS check proves nothing
    assert summary["dms_cancelled_all_after_s"] is not None and summary["dms_cancelled_all_after_s"] <= 3.5
    assert summary["position_adopted_after_s"] is not None, summary
    assert result.passed, summary


# -- the command ----------------------------------------------------------------------------


def test_chaos_command_prints_one_json_line_per_scenario():
    # A child process: the command configures logging for the whole process.
    done = subprocess.run(
        [sys.executable, "-m", "extmm", "chaos", "--scenario", "malformed_frames", "--duration", "20", "--seed", "4"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    code = done.returncode
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert list(line)[:10] == ["scenario", "passed", "orphan_orders", "duplicate_orders", "position_drift",
                               "max_net_notional_usd", "limit_usd", "restarts", "breaker_trips", "crashes"]
    assert line["scenario"] == "malformed_frames"
    assert code == (0 if line["passed"] else 1)


def test_chaos_command_refuses_unknown_scenarios_and_bad_durations(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["chaos", "--scenario", "earthquake"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:  # now refused by argparse itself
        cli_main(["chaos", "--scenario", "ws_drops", "--duration", "-1"])
    assert exit_info.value.code == 2
    assert "--duration" in capsys.readouterr().err


def test_the_drill_config_is_valid_and_tight():
    cfg = chaos_config()
    assert cfg.risk.max_open_orders == 4
    assert [m.name for m in cfg.enabled_markets] == ["BTC-USD", "ETH-USD"]
