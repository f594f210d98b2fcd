"""Alert events from the status snapshots, and an optional webhook that carries them.

The same events as the Prometheus rules in scripts/prometheus-alerts.yml: breaker
tripped, market halted, dead man's switch heartbeat failing, reconnect storm, drawdown,
no fills for long. `AlertDetector` is edge-triggered (one alert when a condition starts,
one "resolved" when it ends) and reads only `AppStatus` snapshots and the times given to
it, so tests drive it directly.

The webhook is never on the trading path: `watch_alerts` polls the status, puts alerts
on a small bounded channel (dropping, and counting, when full), and one sender task
POSTs them with a timeout; every failure is logged (the URL never: it usually embeds a
token) and swallowed. The body is Slack-, Discord- and Telegram-compatible:
`{"text": ..., "content": ...}` plus `chat_id` when `alerts.telegram_chat_id` is set
(Slack reads `text`, Discord `content`, Telegram's sendMessage `chat_id` and `text`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import attrs
import trio
from loguru import logger

from extmm.config import AlertsConfig
from extmm.ops.secrets import redact_known, register_secret
from extmm.ops.status import AppStatus

POLL_S = 1.0
QUEUE = 16  # alerts waiting for the webhook; more are dropped (and counted)


@attrs.frozen(kw_only=True)
class Alert:
    kind: str  # breaker_tripped | market_halted | dms_heartbeat_failing | reconnect_storm | drawdown | no_fills
    key: str  # what it is about: "" for the account, else the market
    firing: bool  # False: the condition is over (resolved)
    message: str

    def text(self, network: str) -> str:
        head = "FIRING" if self.firing else "resolved"
        return f"[extmm {network}] {head} {self.kind}{f' {self.key}' if self.key else ''}: {self.message}"


@attrs.define
class AlertDetector:
    cfg: AlertsConfig
    active: dict[tuple[str, str], bool] = attrs.Factory(dict)
    reconnects: deque[tuple[float, int]] = attrs.Factory(deque)
    peak_net: Decimal | None = None
    last_fills: int | None = None
    last_fill_at: float | None = None

    def _edge(self, kind: str, key: str, now_on: bool, message: str, out: list[Alert]) -> None:
        was_on = self.active.get((kind, key), False)
        if now_on != was_on:
            self.active[(kind, key)] = now_on
            out.append(Alert(kind=kind, key=key, firing=now_on, message=message))

    def update(self, status: AppStatus, now: float) -> list[Alert]:
        out: list[Alert] = []
        self._edge(
            "breaker_tripped", "", status.breaker_state == "OPEN",
            f"circuit breaker {status.breaker_state}"
            + (f" ({status.breaker_last_reason})" if status.breaker_last_reason else ""),
            out,
        )
        for m in status.markets:
            self._edge("market_halted", m.name, m.state == "HALTED", f"market {m.name} is {m.state}", out)
        # The heartbeat re-arms every third of the countdown: less than a third left means
        # at least one heartbeat failed (SPEC §4.11).
        failing = (
            status.dms_remaining_s is not None
            and status.dms_countdown_s is not None
            and status.dms_countdown_s > 0
            and status.dms_remaining_s < status.dms_countdown_s / 3
        )
        self._edge(
            "dms_heartbeat_failing", "", failing,
            f"dead man's switch {status.dms_remaining_s or 0:.0f}s left of {status.dms_countdown_s:.0f}s",
            out,
        )
        total = sum(m.feed_reconnects for m in status.markets)
        self.reconnects.append((now, total))
        while self.reconnects and self.reconnects[0][0] < now - self.cfg.reconnect_window_s:
            self.reconnects.popleft()
        recent = total - self.reconnects[0][1]
        self._edge(
            "reconnect_storm", "", recent >= self.cfg.reconnects,
            f"{recent} feed reconnects in {self.cfg.reconnect_window_s:g}s", out,
        )
        net = status.net_pnl
        self.peak_net = net if self.peak_net is None else max(self.peak_net, net)
        drawdown = self.peak_net - net
        self._edge(
            "drawdown", "", drawdown >= Decimal(str(self.cfg.drawdown_usd)),
            f"net PnL {net:+.2f} USD, {drawdown:.2f} USD below the session peak", out,
        )
        fills = sum(m.fills for m in status.markets)
        if self.last_fills is None or fills != self.last_fills or self.last_fill_at is None:
            self.last_fills, self.last_fill_at = fills, now
        quoting = any(m.state == "ACTIVE" for m in status.markets)
        quiet = now - self.last_fill_at
        self._edge(
            "no_fills", "", quoting and quiet >= self.cfg.no_fills_s,
            f"no fill for {quiet:.0f}s while quoting", out,
        )
        return out


def webhook_body(alert: Alert, *, network: str, chat_id: str | None) -> dict[str, Any]:
    text = alert.text(network)
    body: dict[str, Any] = {"text": text, "content": text}
    if chat_id is not None:
        body["chat_id"] = chat_id
    return body


Post = Callable[[dict[str, Any]], Awaitable[None]]


def http_poster(url: str, timeout_s: float) -> Post:
    """POST JSON to `url`; raises on a transport failure or a non-2xx answer."""
    import httpx

    register_secret(url)  # a webhook URL usually carries a token: mask it everywhere

    async def post(body: dict[str, Any]) -> None:
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
            response = await client.post(url, json=body)
        if not 200 <= response.status_code < 300:
            raise RuntimeError(f"HTTP {response.status_code}")

    return post


@attrs.define
class AlertStats:
    sent: int = 0
    failed: int = 0
    dropped: int = 0


async def watch_alerts(
    get_status: Callable[[], AppStatus | None],
    cfg: AlertsConfig,
    *,
    post: Post | None = None,
    poll_s: float = POLL_S,
    stats: AlertStats | None = None,
    on_alert: Callable[[Alert], Any] | None = None,
) -> None:
    """Detect alerts every `poll_s` and send them to the webhook; never raises (runs until
    cancelled). Without a webhook URL (and no `post`) the alerts are only logged."""
    stats = stats if stats is not None else AlertStats()
    if post is None and cfg.webhook_url is not None:
        post = http_poster(cfg.webhook_url, cfg.timeout_s)
    detector = AlertDetector(cfg)
    send, receive = trio.open_memory_channel[dict[str, Any]](QUEUE)

    async def sender(post: Post) -> None:
        async for body in receive:
            try:
                with trio.fail_after(cfg.timeout_s * 2):
                    await post(body)
                stats.sent += 1
            except Exception as exc:  # noqa: BLE001 - a failing webhook never disturbs trading
                stats.failed += 1
                if stats.failed == 1 or stats.failed % 10 == 0:
                    logger.warning("alert webhook failed ({} so far): {}", stats.failed,
                                   redact_known(f"{type(exc).__name__}: {exc}"))

    async with trio.open_nursery() as nursery:
        if post is not None:
            nursery.start_soon(sender, post)
        while True:
            try:
                status = get_status()
                alerts = detector.update(status, trio.current_time()) if status is not None else []
                for alert in alerts:
                    text = alert.text(status.network if status is not None else "?")
                    (logger.warning if alert.firing else logger.info)("alert: {}", text)
                    if on_alert is not None:
                        on_alert(alert)
                    if post is None:
                        continue
                    body = webhook_body(alert, network=status.network if status else "?",
                                        chat_id=cfg.telegram_chat_id)
                    try:
                        send.send_nowait(body)
                    except trio.WouldBlock:
                        stats.dropped += 1
            except Exception:  # noqa: BLE001 - alerting must not take the bot down
                logger.opt(exception=True).warning("alert detection failed; continuing")
            await trio.sleep(poll_s)
