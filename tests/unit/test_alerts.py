"""Alert events and the optional webhook (issue 13).

The detector is edge-triggered on status snapshots; the webhook is exercised against a
local HTTP server on 127.0.0.1 (accepting, failing with 500, and not listening at all);
a webhook that fails or hangs never disturbs a running bot.
"""

from __future__ import annotations

import json
import socket
from decimal import Decimal
from functools import partial
from pathlib import Path

import attrs
import trio
import yaml
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from extmm.config import AlertsConfig
from extmm.ops.alerts import AlertDetector, AlertStats, watch_alerts
from extmm.ops.metrics import status_families
from extmm.ops.status import PnlSplit, example_status
from tests.botharness import running_bot, wait_until

ROOT = Path(__file__).resolve().parents[2]


def calm():
    st = example_status()
    markets = tuple(attrs.evolve(m, state="ACTIVE") for m in st.markets)
    return attrs.evolve(st, breaker_state="CLOSED", markets=markets, dms_remaining_s=100.0, dms_countdown_s=120.0)


def test_detector_fires_once_per_condition_and_resolves():
    cfg = AlertsConfig(drawdown_usd=5, no_fills_s=600, reconnects=3, reconnect_window_s=60)
    d = AlertDetector(cfg)
    base = calm()
    assert d.update(base, 0.0) == []
    tripped = attrs.evolve(base, breaker_state="OPEN", breaker_last_reason="429 burst")
    (a,) = d.update(tripped, 1.0)
    assert (a.kind, a.firing) == ("breaker_tripped", True) and "429 burst" in a.message
    assert d.update(tripped, 2.0) == []  # still open: no repeat
    (a,) = d.update(base, 3.0)
    assert (a.kind, a.firing) == ("breaker_tripped", False)

    halted = attrs.evolve(base, markets=(attrs.evolve(base.markets[0], state="HALTED"), *base.markets[1:]))
    (a,) = d.update(halted, 4.0)
    assert (a.kind, a.key) == ("market_halted", base.markets[0].name)
    d.update(base, 5.0)

    (a,) = d.update(attrs.evolve(base, dms_remaining_s=30.0), 6.0)  # < 120/3: a heartbeat failed
    assert a.kind == "dms_heartbeat_failing"
    d.update(base, 7.0)

    stormy = attrs.evolve(base, markets=(attrs.evolve(base.markets[0], feed_reconnects=base.markets[0].feed_reconnects + 3), *base.markets[1:]))
    (a,) = d.update(stormy, 8.0)
    assert a.kind == "reconnect_storm" and "3 feed reconnects" in a.message
    # Outside the window the storm is over.
    assert [x.firing for x in d.update(stormy, 100.0)] == [False]

    peak = base.net_pnl
    losing = attrs.evolve(stormy, markets=tuple(
        attrs.evolve(m, pnl=PnlSplit(net=m.pnl.net - Decimal(3))) for m in stormy.markets))
    assert losing.net_pnl == peak - 6
    kinds = [x.kind for x in d.update(losing, 101.0)]
    assert kinds == ["drawdown"]
    # No fill for no_fills_s while quoting.
    assert [x.kind for x in d.update(losing, 101.0 + 700)] == ["no_fills"]


def test_prometheus_rules_cover_the_events_and_use_real_metrics():
    rules = yaml.safe_load((ROOT / "scripts" / "prometheus-alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    for name in ("ExtmmBreakerTripped", "ExtmmMarketHalted", "ExtmmDmsHeartbeatFailing",
                 "ExtmmReconnectStorm", "ExtmmDrawdown", "ExtmmNoFills"):
        assert name in alerts and alerts[name]["annotations"]["summary"]
    exported = {f.name for f in status_families(example_status())}
    exported |= {n + "_total" for n in exported}
    import re

    for rule in alerts.values():
        for metric in re.findall(r"\bextmm_[a-z_0-9]+", rule["expr"]):
            assert metric in exported, (rule["alert"], metric)


# -- the webhook against a local HTTP server ------------------------------------------------------


async def serve_hook(nursery: trio.Nursery, status_code: int = 200) -> tuple[str, list[dict]]:
    received: list[dict] = []

    async def hook(request: Request) -> JSONResponse:
        received.append(json.loads(await request.body()))
        return JSONResponse({"ok": status_code == 200}, status_code=status_code)

    app = Starlette(routes=[Route("/hook/secret-token-123456", hook, methods=["POST"])])
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds = await nursery.start(partial(hypercorn_serve, app, config))
    port = int(binds[0].rsplit(":", 1)[1])
    return f"http://127.0.0.1:{port}/hook/secret-token-123456", received


async def test_webhook_posts_slack_discord_telegram_compatible_json(nursery):
    url, received = await serve_hook(nursery)
    status = attrs.evolve(calm(), breaker_state="OPEN", breaker_last_reason="operator")
    stats = AlertStats()
    cfg = AlertsConfig(webhook_url=url, telegram_chat_id="-100123")
    async with trio.open_nursery() as inner:
        inner.start_soon(partial(watch_alerts, lambda: status, cfg, poll_s=0.05, stats=stats))
        await wait_until(lambda: bool(received), within=10, step=0.05)
        inner.cancel_scope.cancel()
    (body,) = received
    assert body["text"] == body["content"] and body["chat_id"] == "-100123"
    assert body["text"].startswith("[extmm paper] FIRING breaker_tripped: circuit breaker OPEN (operator)")
    assert stats.sent == 1 and stats.failed == 0


async def test_failing_webhooks_are_counted_and_swallowed(nursery, capsys):
    from loguru import logger

    url, received = await serve_hook(nursery, status_code=500)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/hook/secret-token-123456"
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    try:
        for target in (url, dead):
            status = attrs.evolve(calm(), breaker_state="OPEN")
            stats = AlertStats()
            async with trio.open_nursery() as inner:
                inner.start_soon(partial(watch_alerts, lambda s=status: s, AlertsConfig(webhook_url=target, timeout_s=2),
                                         poll_s=0.05, stats=stats))
                await wait_until(lambda s=stats: s.failed > 0, within=10, step=0.05)
                inner.cancel_scope.cancel()
            assert stats.sent == 0 and stats.failed == 1
    finally:
        logger.remove(sink)
    assert len(received) == 1  # the 500 server did get the alert
    assert any("alert webhook failed" in x for x in lines)
    assert not any("secret-token-123456" in x for x in lines)  # the URL's token is masked


async def test_a_hanging_or_failing_webhook_never_disturbs_trading(autojump_clock):
    calls: list[dict] = []

    async def hangs(body: dict) -> None:
        calls.append(body)
        await trio.sleep_forever()

    async def fails(body: dict) -> None:
        calls.append(body)
        raise ConnectionError("webhook down")

    for post in (hangs, fails):
        calls.clear()
        async with running_bot() as bot:
            stats = AlertStats()
            fired: list = []
            async with trio.open_nursery() as side:
                side.start_soon(partial(watch_alerts, bot.root.status, AlertsConfig(timeout_s=1), post=post,
                                        stats=stats, on_alert=fired.append))
                await trio.sleep(10)
                sent_before = bot.orders_sent("BTC-USD")
                bot.root.operator_trip("test")
                await wait_until(lambda f=fired: any(a.kind == "breaker_tripped" for a in f), within=5)
                await trio.sleep(10)
                assert calls and stats.sent == 0
                # The bot is alive and consistent: the breaker's cancel went through.
                assert bot.venue_open_orders() == []
                assert bot.orders_sent("BTC-USD") >= sent_before
                side.cancel_scope.cancel()
        assert bot.result and bot.result[0].clean
