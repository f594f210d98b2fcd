"""Prometheus metrics and `/healthz`, both computed from the latest `AppStatus`.

`Metrics` owns its own `CollectorRegistry` (tests may build several). A custom collector
turns the newest status into metric families at scrape time, so cumulative totals from
the actors are exposed as true counters without double counting. `serve_metrics` serves
`GET /metrics` (text exposition) and `GET /healthz` (JSON; 200 when healthy, else 503) on
localhost with Starlette under hypercorn's trio worker.

Metrics (all prefixed `extmm_`; per-market series carry the `market` label):

| name                                  | type    | labels              | meaning                                       |
|---------------------------------------|---------|---------------------|-----------------------------------------------|
| `extmm_info`                          | gauge   | network             | always 1; which venue network                 |
| `extmm_uptime_seconds`                | gauge   |                     | seconds since start                           |
| `extmm_healthy`, `extmm_ready`        | gauge   |                     | 1 / 0, as `/healthz` reports                  |
| `extmm_breaker_state`                 | gauge   |                     | 0 closed, 1 half-open, 2 open                 |
| `extmm_breaker_trips_total`           | counter |                     | circuit-breaker trips                         |
| `extmm_dms_armed`                     | gauge   |                     | 1 while the dead man's switch is armed        |
| `extmm_dms_countdown_seconds`         | gauge   |                     | configured countdown                          |
| `extmm_dms_remaining_seconds`         | gauge   |                     | until the venue cancels (only while armed)    |
| `extmm_rate_limit_tokens`             | gauge   |                     | REST request budget left                      |
| `extmm_rate_limit_capacity`           | gauge   |                     | REST request budget size                      |
| `extmm_rest_requests_total`           | counter |                     | REST requests sent                            |
| `extmm_rest_429_total`                | counter |                     | HTTP 429 answers                              |
| `extmm_rest_errors_total`             | counter |                     | failed REST calls                             |
| `extmm_rest_latency_seconds`          | gauge   | quantile            | REST latency p50 / p99 (recent window)        |
| `extmm_balance_usd`, `extmm_equity_usd` | gauge |                     | account balance and equity, when known        |
| `extmm_market_state`                  | gauge   | market, state       | 1 for the market's current state, else 0      |
| `extmm_quotes_published_total`        | counter | market              | quotes the Quoter proposed to Risk            |
| `extmm_orders_sent_total`             | counter | market              | orders placed (replaces included)             |
| `extmm_orders_rejected_total`         | counter | market, reason      | orders the venue rejected                     |
| `extmm_orders_cancelled_total`        | counter | market              | cancels sent                                  |
| `extmm_replaces_total`                | counter | market              | replaces (new order with cancelId)            |
| `extmm_fills_total`                   | counter | market              | fills of our orders                           |
| `extmm_open_orders`                   | gauge   | market              | our resting orders                            |
| `extmm_inventory_contracts`           | gauge   | market              | position in the base asset                    |
| `extmm_inventory_usd`                 | gauge   | market              | position valued at the mid                    |
| `extmm_pnl_usd`                       | gauge   | market, component   | spread, inventory, fees, funding, net         |
| `extmm_book_age_seconds`              | gauge   | market              | since the last top-of-book change             |
| `extmm_book_stale`                    | gauge   | market              | 1 when the book is missing, invalid or old    |
| `extmm_mid_price`, `extmm_spread_bps` | gauge   | market              | book mid and quoted spread                    |
| `extmm_sigma`                         | gauge   | market              | volatility estimate the Quoter uses           |
| `extmm_book_gaps_total`               | counter | market              | sequence gaps (book resyncs)                  |
| `extmm_feed_reconnects_total`         | counter | market              | market-data reconnects                        |
| `extmm_stream_reconnects_total`       | counter | market, topic       | stream reconnects (orderbook, trades, funding, mark, account) |
| `extmm_malformed_frames_total`        | counter | market              | frames rejected as malformed                  |
| `extmm_actor_restarts_total`          | counter | market, actor       | supervisor restarts per actor                 |
| `extmm_order_latency_seconds`         | gauge   | market, quantile    | order round trip p50 / p99                    |

plus the standard `process_*` series (CPU, memory, file descriptors) on Linux.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.typing import ASGIFramework
from loguru import logger
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from extmm.ops.secrets import redact_known
from extmm.ops.status import MARKET_STATES, AppStatus

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464
BREAKER_STATE_VALUE = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}

StatusGetter = Callable[[], AppStatus | None]


class Metrics:
    """Prometheus series for one bot process; `update(status)` before each scrape."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry()
        self._status: AppStatus | None = None
        self.registry.register(_StatusCollector(lambda: self._status))
        if process_metrics:
            ProcessCollector(registry=self.registry)

    def update(self, status: AppStatus) -> None:
        self._status = status

    @property
    def status(self) -> AppStatus | None:
        return self._status

    def exposition(self) -> bytes:
        """The Prometheus text format of every series (what `/metrics` returns)."""
        return generate_latest(self.registry)


class _StatusCollector:
    def __init__(self, current: Callable[[], AppStatus | None]) -> None:
        self._current = current

    def collect(self) -> Iterator[Metric]:
        status = self._current()
        if status is None:
            return iter(())
        return iter(status_families(status))


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


class _Families:
    """Declares each family once and fills samples, skipping unknown (None) values."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def _family(self, kind: type, name: str, doc: str, labels: tuple[str, ...]) -> Any:
        family = self.families.get(name)
        if family is None:
            family = kind(name, doc, labels=list(labels))
            self.families[name] = family
        return family

    def gauge(self, name: str, doc: str, value: float | None, **labels: str) -> None:
        family = self._family(GaugeMetricFamily, name, doc, tuple(labels))
        if value is not None:
            family.add_metric(list(labels.values()), float(value))

    def counter(self, name: str, doc: str, value: float | None, **labels: str) -> None:
        # CounterMetricFamily appends the `_total` suffix itself.
        family = self._family(CounterMetricFamily, name.removesuffix("_total"), doc, tuple(labels))
        if value is not None:
            family.add_metric(list(labels.values()), float(value))


def status_families(status: AppStatus) -> list[Metric]:
    """Every `extmm_*` metric family for one status snapshot."""
    f = _Families()
    f.gauge("extmm_info", "Always 1; labels describe the process.", 1, network=status.network)
    f.gauge("extmm_uptime_seconds", "Seconds since the bot started.", status.uptime_s)
    f.gauge("extmm_healthy", "1 when every market is healthy or safely flat.", int(status.healthy))
    f.gauge("extmm_ready", "1 after startup reconciliation.", int(status.ready))
    f.gauge(
        "extmm_breaker_state",
        "Circuit breaker: 0 closed, 1 half-open, 2 open.",
        BREAKER_STATE_VALUE.get(status.breaker_state, math.nan),
    )
    f.counter("extmm_breaker_trips_total", "Circuit breaker trips.", status.breaker_trips)
    f.gauge("extmm_dms_armed", "1 while the dead man's switch is armed.", int(status.dms_armed))
    f.gauge("extmm_dms_countdown_seconds", "Configured dead man's switch countdown.", status.dms_countdown_s)
    f.gauge(
        "extmm_dms_remaining_seconds",
        "Seconds until the venue cancels our orders unless re-armed.",
        status.dms_remaining_s,
    )
    f.gauge("extmm_rate_limit_tokens", "REST request budget left.", status.rate_tokens)
    f.gauge("extmm_rate_limit_capacity", "REST request budget capacity.", status.rate_capacity)
    f.counter("extmm_rest_requests_total", "REST requests sent.", status.rest_requests)
    f.counter("extmm_rest_429_total", "REST answers with HTTP 429.", status.rest_429s)
    f.counter("extmm_rest_errors_total", "Failed REST calls.", status.rest_errors)
    for quantile, ms in (("0.5", status.rest_latency_p50_ms), ("0.99", status.rest_latency_p99_ms)):
        f.gauge("extmm_rest_latency_seconds", "REST latency quantiles.", _seconds(ms), quantile=quantile)
    balance = float(status.balance) if status.balance is not None else None
    equity = float(status.equity) if status.equity is not None else None
    f.gauge("extmm_balance_usd", "Account balance.", balance)
    f.gauge("extmm_equity_usd", "Account equity.", equity)
    if status.lifetime_net is not None:
        f.gauge("extmm_lifetime_pnl_usd", "Net PnL over every journaled session.", float(status.lifetime_net))
    if status.journal is not None:
        f.counter("extmm_journal_rows_written_total", "Journal rows committed.", status.journal.written)
        f.counter("extmm_journal_rows_dropped_total", "Journal rows lost (counted).", status.journal.dropped)
        f.gauge("extmm_journal_pending_rows", "Journal rows waiting for the disk.", status.journal.pending)
        f.gauge("extmm_journal_degraded", "1 while journal writes fail.", int(status.journal.degraded is not None))

    for m in status.markets:
        market = m.name
        states = MARKET_STATES if m.state in MARKET_STATES else (*MARKET_STATES, m.state)
        for state in states:
            f.gauge(
                "extmm_market_state",
                "1 for the market's current state.",
                int(state == m.state),
                market=market,
                state=state,
            )
        f.counter("extmm_quotes_published_total", "Quotes proposed to Risk.", m.quotes_published, market=market)
        f.counter("extmm_orders_sent_total", "Orders placed.", m.orders_sent, market=market)
        for reason, count in _reject_reasons(m.rejects, m.reject_reasons):
            f.counter("extmm_orders_rejected_total", "Orders rejected.", count, market=market, reason=reason)
        f.counter("extmm_orders_cancelled_total", "Cancels sent.", m.cancels, market=market)
        f.counter("extmm_replaces_total", "Replaces sent.", m.replaces, market=market)
        f.counter("extmm_fills_total", "Fills of our orders.", m.fills, market=market)
        f.gauge("extmm_open_orders", "Our resting orders.", m.open_orders, market=market)
        f.gauge("extmm_inventory_contracts", "Position in the base asset.", float(m.position), market=market)
        f.gauge("extmm_inventory_usd", "Position valued at the mid.", m.position_usd, market=market)
        for component, value in m.pnl.items():
            f.gauge("extmm_pnl_usd", "PnL by component.", float(value), market=market, component=component)
        f.gauge("extmm_book_age_seconds", "Since the last top-of-book change.", m.book_age_s, market=market)
        f.gauge(
            "extmm_book_stale",
            "1 when the book is missing, invalid or old.",
            int(m.book_stale),
            market=market,
        )
        f.gauge("extmm_mid_price", "Book mid.", m.mid, market=market)
        f.gauge("extmm_spread_bps", "Quoted spread in basis points.", m.spread_bps, market=market)
        f.gauge("extmm_sigma", "Volatility estimate.", m.sigma, market=market)
        f.counter("extmm_book_gaps_total", "Book sequence gaps.", m.book_gaps, market=market)
        f.counter("extmm_feed_reconnects_total", "Market-data reconnects.", m.feed_reconnects, market=market)
        for topic, count in status.stream_reconnects.get(market, {}).items():
            f.counter(
                "extmm_stream_reconnects_total",
                "Stream reconnects by topic (account: the shared account stream).",
                count,
                market=market,
                topic=topic,
            )
        f.counter("extmm_malformed_frames_total", "Malformed frames.", m.malformed_frames, market=market)
        for actor in m.actors:
            f.counter(
                "extmm_actor_restarts_total",
                "Supervisor restarts.",
                actor.restarts,
                market=market,
                actor=actor.name,
            )
        for quantile, ms in (("0.5", m.latency_p50_ms), ("0.99", m.latency_p99_ms)):
            f.gauge(
                "extmm_order_latency_seconds",
                "Order round-trip quantiles.",
                _seconds(ms),
                market=market,
                quantile=quantile,
            )
    return list(f.families.values())


def _reject_reasons(total: int, reasons: tuple[tuple[str, int], ...]) -> list[tuple[str, int]]:
    # Rejects without a reported reason still count, under "unknown".
    out = [(reason or "unknown", count) for reason, count in reasons]
    unexplained = total - sum(count for _, count in out)
    if unexplained > 0:
        out.append(("unknown", unexplained))
    merged: dict[str, int] = {}
    for reason, count in out:
        merged[reason] = merged.get(reason, 0) + count
    return sorted(merged.items())


# -- /healthz ----------------------------------------------------------------------------


def health_payload(status: AppStatus | None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for `/healthz`: 200 when healthy, 503 otherwise."""
    if status is None:
        return 503, {"ok": False, "healthy": False, "ready": False, "reason": "no status yet"}
    body: dict[str, Any] = {
        "ok": status.healthy,
        "healthy": status.healthy,
        "ready": status.ready,
        "network": status.network,
        "uptime_s": round(status.uptime_s, 3),
        "breaker": {
            "state": status.breaker_state,
            "trips": status.breaker_trips,
            "last_reason": redact_known(status.breaker_last_reason) if status.breaker_last_reason else None,
        },
        "dms": {"armed": status.dms_armed, "remaining_s": status.dms_remaining_s},
        "markets": {
            m.name: {"state": m.state, "book_stale": m.book_stale, "open_orders": m.open_orders,
                     "position": str(m.position), "pnl_net": str(m.pnl.net), "fills": m.fills}
            for m in status.markets
        },
        "pnl": {"session": str(status.net_pnl),
                "lifetime": None if status.lifetime_net is None else str(status.lifetime_net)},
    }
    if status.journal is not None:
        body["journal"] = {"written": status.journal.written, "dropped": status.journal.dropped,
                           "pending": status.journal.pending, "degraded": status.journal.degraded}
    return (200 if status.healthy else 503), body


# -- HTTP server -------------------------------------------------------------------------


def build_app(metrics: Metrics, get_status: StatusGetter) -> Starlette:
    """The ASGI app behind `serve_metrics`: `GET /metrics` and `GET /healthz`."""

    def refresh() -> AppStatus | None:
        try:
            status = get_status()
        except Exception:
            # A broken status builder must not take the endpoint down; serve the last one.
            logger.opt(exception=True).warning("metrics: building the status failed")
            return metrics.status
        if status is not None:
            metrics.update(status)
        return status

    async def metrics_endpoint(request: Request) -> Response:
        refresh()
        # The library picks the text format (or OpenMetrics) the scraper asked for.
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(metrics.registry), headers={"Content-Type": content_type})

    async def health_endpoint(request: Request) -> Response:
        code, body = health_payload(refresh())
        return JSONResponse(body, status_code=code, headers={"Cache-Control": "no-store"})

    return Starlette(
        routes=[
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/healthz", health_endpoint, methods=["GET"]),
        ]
    )


async def serve_metrics(
    metrics: Metrics,
    get_status: StatusGetter,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = DEFAULT_PORT,
    task_status: trio.TaskStatus[int | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `/metrics` and `/healthz` on `host:port` until cancelled.

    `port=None` disables the endpoint (returns at once after `started(None)`); `port=0`
    binds any free port. `task_status.started(bound_port)` runs once the socket listens.
    The CLI's "0 disables" maps to None: `port=args.metrics_port or None`.
    """
    if port is None:
        task_status.started(None)
        return
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    # Through standard logging, which `configure_logging` routes into loguru.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    app = build_app(metrics, get_status)
    async with trio.open_nursery() as nursery:
        # Starlette spells the ASGI scope/message types as plain mappings, hypercorn as TypedDicts
        asgi_app = cast(ASGIFramework, app)
        binds: list[str] = await nursery.start(partial(hypercorn_serve, asgi_app, config))
        bound_port = _port_of(binds[0])
        logger.info("metrics: serving /metrics and /healthz on http://{}:{}", host, bound_port)
        task_status.started(bound_port)


def _port_of(bind: str) -> int:
    # hypercorn reports "http://127.0.0.1:9464" (or "http://[::1]:9464")
    return int(bind.rsplit(":", 1)[1])
