"""The root's own loops are supervised children (issue #17), in virtual time against the
simulator: a crash of the heartbeat, the breaker or the telemetry loop restarts it under
its policy while both markets keep quoting; a heartbeat that cannot be restarted stops the
bot through cancel and confirm and leaves the dead man's switch armed."""

from __future__ import annotations

import random

import pytest
import trio

from actors.messages import TradingMode
from extmm.domain.trading import HaltMarket, ResumeQuoting, StopQuoting, Throttle
from extmm.sim.inproc import inprocess_simulator
from supervisors.child import UnknownChild
from supervisors.events import ChildRestarting, ChildStarted
from supervisors.market import MarketWiring
from supervisors.root import RootSupervisor, RunSummary
from supervisors.root_children import SERVICE_BACKOFF, heartbeat_backoff
from supervisors.supervisor import Escalation
from supervisors.trading import TradingControl
from tests.botharness import START_MS, running_bot, wait_until
from tests.botharness import test_config as bot_config

MARKETS = ("BTC-USD", "ETH-USD")


async def _restart_of(events: trio.MemoryReceiveChannel, path: str) -> tuple[ChildRestarting, ChildStarted]:
    restarting = None
    with trio.fail_after(60):
        async for event in events:
            if isinstance(event, ChildRestarting) and event.path == path:
                restarting = event
            if isinstance(event, ChildStarted) and restarting is not None and event.path == path:
                return restarting, event
    raise AssertionError("unreachable")


@pytest.mark.parametrize("child", ["heartbeat", "breaker", "account", "events", "outcomes"])
async def test_a_crashed_root_loop_restarts_under_its_policy_while_quoting_goes_on(autojump_clock, child):
    async with running_bot() as bot:
        await trio.sleep(20)
        events = bot.root.events.subscribe(1024)
        killed_at = trio.current_time()
        assert bot.root.kill(child)
        restarting, started = await _restart_of(events, child)
        policy = heartbeat_backoff(bot.root.cfg.dead_mans_switch_sec) if child == "heartbeat" else SERVICE_BACKOFF
        # The first retry of its policy, with up to `jitter` taken off.
        assert policy.initial * (1 - policy.jitter) <= restarting.delay <= policy.initial
        assert started.at - killed_at >= restarting.delay
        sent = {m: bot.orders_sent(m) for m in MARKETS}
        trades = len(bot.engine.trades(bot.account_id))
        await trio.sleep(15)
        assert bot.root.restarts[child] == 1
        assert bot.root.quoting and bot.root.fatal is None
        # Orders still placed and replaced after the restart, on both markets; no market restarted.
        for market in MARKETS:
            assert bot.orders_sent(market) > sent[market]
        assert not [p for p in bot.root.restarts if p.startswith(MARKETS)]
        states = {c.id: str(c.state) for c in bot.root.services.children()}
        assert states[child] == "running"
        if child == "heartbeat":  # beating again: the switch re-armed after the restart
            assert bot.root.switch.last_beat > started.at
            assert bot.engine.dms_deadline(bot.account_id) is not None
        if child == "account":  # the markets' account view is fed again: fills since, positions agree
            assert len(bot.engine.trades(bot.account_id)) > trades
            for market in MARKETS:
                assert bot.bot_position(market) == bot.venue_position(market)
        if child == "breaker":  # the restarted breaker loop still acts on a trip
            bot.root.operator_trip("drill after restart")
            await wait_until(lambda: bot.root.breaker_trips == 1, within=5)
            await wait_until(lambda: not bot.venue_open_orders(), within=15)
            assert not bot.root.quoting
    assert bot.result[0].open_orders_at_exit == 0
    assert bot.result[0].service_restarts[child] == 1  # the exit summary shows it
    assert sum(bot.result[0].service_restarts.values()) == 1


async def test_a_heartbeat_that_cannot_be_restarted_stops_cancels_confirms_and_leaves_the_switch_armed(
    autojump_clock,
):
    cfg = bot_config()
    async with inprocess_simulator(start_ms=START_MS, markets=list(MARKETS), seed=7) as (venue, runner):
        root = RootSupervisor(cfg=cfg, port=venue, network="paper", epoch_ms=runner.now_ms, rng=random.Random(7))
        outcome: list[RunSummary | BaseException] = []
        applied: list[object] = []
        real_apply = root.trading.apply

        def recording_apply(*events):
            applied.extend(events)
            return real_apply(*events)

        root.trading.apply = recording_apply  # type: ignore[method-assign]
        account = venue._account.id  # noqa: SLF001 - test access to the simulated account

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                outcome.append(await root.run(stop=trio.Event(), task_status=task_status))
            except Escalation as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            await trio.sleep(20)
            assert any(runner.engine.open_orders(account, m) for m in MARKETS)
            # Crash the heartbeat as soon as it is back, until its policy gives up.
            with trio.fail_after(120):
                while root.fatal is None:
                    root.kill("heartbeat")
                    await trio.sleep(0.2)
        # Never quote without a heartbeat: quoting is off at once, before the shutdown, and
        # nothing resumed it.
        stops = [e for e in applied if isinstance(e, StopQuoting)]
        assert [e.reason.split(":")[0] for e in stops] == ["heartbeat failed", "shutdown"]
        assert not [e for e in applied[applied.index(stops[0]):] if isinstance(e, ResumeQuoting)]
        assert not root.quoting
        (result,) = outcome
        assert isinstance(result, Escalation) and result.child == "heartbeat"
        # Cancelled and confirmed by the venue; the switch left armed, not disarmed.
        assert root.exit_result is not None and root.exit_result.confirmed_none
        assert not [o for m in MARKETS for o in runner.engine.open_orders(account, m)]
        assert runner.engine.dms_deadline(account) is not None
        assert root.trading.state.switch.armed
        assert root.status().dms_remaining_s is not None


async def test_startup_lists_open_orders_once_for_both_checks(autojump_clock):
    calls: list[str] = []
    async with inprocess_simulator(start_ms=START_MS, markets=list(MARKETS), seed=7) as (venue, runner):
        real_list, real_dms = venue.get_open_orders, venue.set_dead_mans_switch

        async def listing(market=None):
            calls.append("list")
            return await real_list(market)

        async def dms(countdown_s):
            calls.append("dms")
            await real_dms(countdown_s)

        venue.get_open_orders = listing  # type: ignore[method-assign]
        venue.set_dead_mans_switch = dms  # type: ignore[method-assign]
        root = RootSupervisor(cfg=bot_config(), port=venue, network="paper", epoch_ms=runner.now_ms,
                              rng=random.Random(7))
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: root.run(stop=stop, task_status=task_status))
            stop.set()
    # Foreign-orders check and our leftovers from ONE list; the switch armed once before quoting.
    assert calls[: calls.index("dms")] == ["list"]


def test_trading_control_tells_running_markets_and_skips_halted_ones():
    control = TradingControl(countdown_s=30)
    wirings = {m: MarketWiring.create() for m in MARKETS}
    for market, wiring in wirings.items():
        control.attach(market, wiring)

    def told(market: str) -> list[TradingMode]:
        out = []
        while True:
            try:
                out.append(wirings[market].risk_in[1].receive_nowait())
            except trio.WouldBlock:
                return out

    control.apply(HaltMarket("ETH-USD"), StopQuoting("operator"))
    assert told("BTC-USD") == [TradingMode(active=False, reason="operator", size_fraction=1.0)]
    assert told("ETH-USD") == []
    assert not control.quotes("BTC-USD") and not control.quotes("ETH-USD")
    control.apply(ResumeQuoting("breaker HALF_OPEN", 0.25), Throttle("breaker HALF_OPEN", 0.26))
    assert told("BTC-USD") == [TradingMode(active=True, reason="breaker HALF_OPEN", size_fraction=0.25)]
    control.apply(Throttle("breaker HALF_OPEN", 0.5))
    assert told("BTC-USD") == [TradingMode(active=True, reason="breaker HALF_OPEN", size_fraction=0.5)]
    assert control.quotes("BTC-USD") and not control.quotes("ETH-USD")


async def test_a_crashed_journal_restarts_and_still_records_the_session_end(tmp_path, autojump_clock):
    import sqlite3

    from extmm.journal.session import SessionMeta, open_session

    meta = SessionMeta(kind="paper", network="paper", account="vault 1", version="test", config_digest="x",
                       markets=MARKETS)
    path = tmp_path / "j.db"
    journal = open_session(path, meta, clock=lambda: 1_800_000_000.0 + trio.current_time(), on_thread=False)
    async with running_bot(journal=journal) as bot:
        await trio.sleep(20)
        events = bot.root.events.subscribe(1024)
        assert bot.root.kill("journal")
        await _restart_of(events, "journal")
        written = journal.written
        await trio.sleep(20)
        assert journal.written > written  # the new incarnation writes
    assert bot.result[0].open_orders_at_exit == 0
    with sqlite3.connect(path) as conn:
        (summary,) = conn.execute("SELECT summary FROM sessions").fetchone()
        assert summary is not None and '"open_orders_at_exit": 0' in summary
        restarts = conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'ChildRestarting'").fetchone()[0]
        assert restarts >= 1
    assert journal.dropped == 0


async def test_a_switch_the_venue_never_arms_refuses_the_start_and_nothing_quotes(autojump_clock):
    from extmm.venue.errors import NetworkError
    from supervisors.root import StartupError

    async with inprocess_simulator(start_ms=START_MS, markets=list(MARKETS), seed=7) as (venue, runner):
        placed: list[object] = []
        real_place = venue.place_order

        async def refuse(countdown_s):
            raise NetworkError("the switch endpoint is down")

        async def place(order):
            placed.append(order)
            return await real_place(order)

        venue.set_dead_mans_switch = refuse  # type: ignore[method-assign]
        venue.place_order = place  # type: ignore[method-assign]
        root = RootSupervisor(cfg=bot_config(), port=venue, network="paper", epoch_ms=runner.now_ms,
                              rng=random.Random(7))
        with pytest.raises(StartupError, match="gave up after heartbeat"):
            await root.run(stop=trio.Event())
        assert placed == [] and not root.ready
        # Retried under the heartbeat's policy before giving up (5 restarts, then escalation).
        assert root.restarts["heartbeat"] == 5


HOOK = "http://127.0.0.1:9/hook/secret-token-123456"


def _hooked(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Route the alerts child's webhook into a list (the poster `watch_alerts` builds)."""
    from extmm.ops import alerts

    posted: list[dict] = []

    def poster(url: str, timeout_s: float):
        assert url == HOOK

        async def post(body: dict) -> None:
            posted.append(body)

        return post

    monkeypatch.setattr(alerts, "http_poster", poster)
    return posted


async def test_a_crashed_alerts_child_restarts_under_its_policy_and_alerts_again_while_quoting_goes_on(
    autojump_clock, monkeypatch
):
    import attrs

    from extmm.config import AlertsConfig

    posted = _hooked(monkeypatch)
    cfg = attrs.evolve(bot_config(), alerts=AlertsConfig(webhook_url=HOOK))
    async with running_bot(cfg, send_alerts=True) as bot:
        await trio.sleep(20)
        assert [c.id for c in bot.root.services.children()][-1] == "alerts"
        events = bot.root.events.subscribe(1024)
        killed_at = trio.current_time()
        assert bot.root.kill("alerts")
        restarting, started = await _restart_of(events, "alerts")
        assert SERVICE_BACKOFF.initial * (1 - SERVICE_BACKOFF.jitter) <= restarting.delay <= SERVICE_BACKOFF.initial
        assert started.at - killed_at >= restarting.delay
        sent = {m: bot.orders_sent(m) for m in MARKETS}
        await trio.sleep(15)
        assert bot.root.restarts["alerts"] == 1
        assert bot.root.quoting and bot.root.fatal is None
        for market in MARKETS:
            assert bot.orders_sent(market) > sent[market]
        assert not [p for p in bot.root.restarts if p.startswith(MARKETS)]
        assert {c.id: str(c.state) for c in bot.root.services.children()}["alerts"] == "running"
        # The new incarnation watches and posts: a breaker trip reaches the webhook.
        posted.clear()
        bot.root.operator_trip("drill after restart")
        await wait_until(lambda: any("FIRING breaker_tripped" in b["text"] for b in posted), within=10)
    assert bot.result[0].open_orders_at_exit == 0


async def test_no_alerts_child_unless_the_run_asks_for_it(autojump_clock, monkeypatch):
    """A backtest or chaos run with a config that has a webhook posts nothing (`send_alerts`
    is the `run` command's), and without a webhook `run` has no alerts child either."""
    import attrs

    from extmm.config import AlertsConfig

    posted = _hooked(monkeypatch)
    for cfg, send in ((attrs.evolve(bot_config(), alerts=AlertsConfig(webhook_url=HOOK)), False),
                      (bot_config(), True)):
        async with running_bot(cfg, send_alerts=send) as bot:
            await trio.sleep(5)
            assert "alerts" not in {c.id for c in bot.root.services.children()}
            with pytest.raises(UnknownChild):
                bot.root.kill("alerts")
            bot.root.operator_trip("drill")
            await wait_until(lambda b=bot: b.root.breaker_trips == 1, within=5)
            await trio.sleep(5)
    assert posted == []
