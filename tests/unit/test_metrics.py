"""Prometheus metrics and /healthz from `AppStatus`, scraped over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import attrs
import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from extmm.ops.metrics import BREAKER_STATE_VALUE, Metrics, health_payload, serve_metrics
from extmm.ops.secrets import clear_registered_secrets, register_secret
from extmm.ops.status import MARKET_STATES, AppStatus, example_status

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> tuple[Samples, dict[str, str]]:
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def secrets_registry() -> Iterator[None]:
    clear_registered_secrets()
    yield
    clear_registered_secrets()


def test_metrics_mirror_the_status() -> None:
    status = example_status()
    metrics = Metrics()
    assert "extmm_" not in metrics.exposition().decode()  # nothing before the first status
    metrics.update(status)
    samples, types = _samples(metrics.exposition().decode())

    assert _value(samples, "extmm_info", network=status.network) == 1
    assert _value(samples, "extmm_uptime_seconds") == status.uptime_s
    assert _value(samples, "extmm_healthy") == int(status.healthy)
    assert _value(samples, "extmm_breaker_state") == BREAKER_STATE_VALUE[status.breaker_state]
    assert _value(samples, "extmm_breaker_trips_total") == status.breaker_trips
    assert _value(samples, "extmm_dms_remaining_seconds") == status.dms_remaining_s
    assert _value(samples, "extmm_dms_countdown_seconds") == status.dms_countdown_s
    assert _value(samples, "extmm_rate_limit_tokens") == status.rate_tokens
    assert _value(samples, "extmm_rest_requests_total") == status.rest_requests
    assert _value(samples, "extmm_rest_429_total") == status.rest_429s
    assert _value(samples, "extmm_rest_latency_seconds", quantile="0.99") == pytest.approx(
        status.rest_latency_p99_ms / 1000
    )
    assert _value(samples, "extmm_equity_usd") == float(status.equity)
    for name in ("extmm_breaker_trips", "extmm_rest_requests", "extmm_orders_sent", "extmm_actor_restarts"):
        assert types[name] == "counter"
    assert types["extmm_inventory_usd"] == "gauge"

    for m in status.markets:
        market = m.name
        for state in MARKET_STATES:
            assert _value(samples, "extmm_market_state", market=market, state=state) == int(state == m.state)
        assert _value(samples, "extmm_quotes_published_total", market=market) == m.quotes_published
        assert _value(samples, "extmm_orders_sent_total", market=market) == m.orders_sent
        assert _value(samples, "extmm_orders_cancelled_total", market=market) == m.cancels
        assert _value(samples, "extmm_replaces_total", market=market) == m.replaces
        assert _value(samples, "extmm_fills_total", market=market) == m.fills
        assert _value(samples, "extmm_open_orders", market=market) == m.open_orders
        assert _value(samples, "extmm_inventory_contracts", market=market) == float(m.position)
        assert _value(samples, "extmm_inventory_usd", market=market) == m.position_usd
        for component, amount in m.pnl.items():
            assert _value(samples, "extmm_pnl_usd", market=market, component=component) == float(amount)
        for reason, count in m.reject_reasons:
            assert _value(samples, "extmm_orders_rejected_total", market=market, reason=reason) == count
        assert _value(samples, "extmm_book_age_seconds", market=market) == pytest.approx(m.book_age_s)
        assert _value(samples, "extmm_book_stale", market=market) == int(m.book_stale)
        for actor in m.actors:
            assert (
                _value(samples, "extmm_actor_restarts_total", market=market, actor=actor.name)
                == actor.restarts
            )
        assert _value(samples, "extmm_order_latency_seconds", market=market, quantile="0.5") == pytest.approx(
            m.latency_p50_ms / 1000
        )


def test_unknown_values_are_left_out_and_unexplained_rejects_count_as_unknown() -> None:
    status = example_status()
    btc = attrs.evolve(status.markets[0], rejects=5, reject_reasons=(("post_only", 2),), sigma=None)
    status = attrs.evolve(status, markets=(btc,), dms_remaining_s=None, balance=None, equity=None)
    metrics = Metrics(process_metrics=False)
    metrics.update(status)
    samples, _ = _samples(metrics.exposition().decode())
    assert _value(samples, "extmm_dms_armed") == 0
    names = {name for name, _ in samples}
    assert "extmm_dms_remaining_seconds" not in names and "extmm_equity_usd" not in names
    assert "extmm_sigma" not in names
    assert _value(samples, "extmm_orders_rejected_total", market="BTC-USD", reason="post_only") == 2
    assert _value(samples, "extmm_orders_rejected_total", market="BTC-USD", reason="unknown") == 3


def test_two_metrics_objects_do_not_share_series() -> None:
    a, b = Metrics(process_metrics=False), Metrics(process_metrics=False)
    a.update(example_status())
    assert b"extmm_" in a.exposition() and b"extmm_" not in b.exposition()


def test_health_payload() -> None:
    status = example_status()
    code, body = health_payload(status)
    assert code == 200 and body["ok"] is True and body["ready"] is status.ready
    assert body["markets"] == {
        m.name: {"state": m.state, "book_stale": m.book_stale, "open_orders": m.open_orders,
                 "position": str(m.position), "pnl_net": str(m.pnl.net), "fills": m.fills}
        for m in status.markets
    }
    assert body["pnl"] == {"session": str(status.net_pnl), "lifetime": None} and "journal" not in body
    assert health_payload(attrs.evolve(status, healthy=False))[0] == 503
    code, body = health_payload(None)
    assert code == 503 and body["ok"] is False


# -- over HTTP ---------------------------------------------------------------------------


class _StatusBox:
    def __init__(self, status: AppStatus | None) -> None:
        self.status = status
        self.fail = False

    def __call__(self) -> AppStatus | None:
        if self.fail:
            raise RuntimeError("status builder bug")
        return self.status


@asynccontextmanager
async def _serve(metrics: Metrics, get_status: Callable[[], AppStatus | None]) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_metrics(metrics, get_status, port=0, task_status=task_status)
        )
        assert isinstance(port, int) and port > 0
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


@pytest.fixture
def box() -> _StatusBox:
    return _StatusBox(example_status())


@pytest.fixture
async def base_url(box: _StatusBox) -> AsyncIterator[str]:
    async with _serve(Metrics(), box) as url:
        yield url


async def test_scrape_metrics_over_http(base_url: str, box: _StatusBox) -> None:
    async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples, _ = _samples(response.text)
    btc = box.status.markets[0]
    assert _value(samples, "extmm_orders_sent_total", market=btc.name) == btc.orders_sent
    assert _value(samples, "extmm_pnl_usd", market=btc.name, component="net") == float(btc.pnl.net)
    assert any(name.startswith("process_") for name, _ in samples)


async def test_scrape_follows_the_latest_status(base_url: str, box: _StatusBox) -> None:
    async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
        first, _ = _samples((await client.get("/metrics")).text)
        box.status = attrs.evolve(box.status, breaker_state="OPEN", breaker_trips=2, healthy=False)
        second, _ = _samples((await client.get("/metrics")).text)
        box.fail = True  # a broken status builder: the last good status is served
        third, _ = _samples((await client.get("/metrics")).text)
    assert _value(first, "extmm_breaker_state") == BREAKER_STATE_VALUE["CLOSED"]
    assert _value(second, "extmm_breaker_state") == BREAKER_STATE_VALUE["OPEN"]
    assert _value(second, "extmm_breaker_trips_total") == 2
    assert _value(third, "extmm_breaker_state") == BREAKER_STATE_VALUE["OPEN"]


async def test_healthz_is_200_when_healthy_and_503_otherwise(base_url: str, box: _StatusBox) -> None:
    async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
        healthy = await client.get("/healthz")
        box.status = attrs.evolve(box.status, healthy=False, breaker_state="OPEN")
        unhealthy = await client.get("/healthz")
        box.status = None
        starting = await client.get("/healthz")
        missing = await client.get("/nope")
    assert healthy.status_code == 200
    body = healthy.json()
    assert body["ok"] is True and body["breaker"]["state"] == "CLOSED"
    assert body["markets"]["ETH-USD"]["state"] == "HALTED"
    assert unhealthy.status_code == 503
    assert unhealthy.json()["ok"] is False and unhealthy.json()["breaker"]["state"] == "OPEN"
    assert starting.status_code == 503 and starting.json()["ready"] is False
    assert missing.status_code == 404


async def test_no_secret_in_metrics_or_healthz(secrets_registry: None) -> None:
    api_key = "3f1e9c2ab7d84e6f9a0b1c2d3e4f5a6b"
    register_secret(api_key)
    status = attrs.evolve(
        example_status(),
        breaker_last_reason=f"operator signal; key {api_key} rejected",
        balance=Decimal("1"),
    )
    box = _StatusBox(status)
    async with _serve(Metrics(), box) as url:
        async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
            metrics_text = (await client.get("/metrics")).text
            health_text = (await client.get("/healthz")).text
    assert api_key not in metrics_text and api_key not in health_text
    assert "operator signal; key *** rejected" in health_text


async def test_port_none_disables_the_endpoint() -> None:
    async with trio.open_nursery() as nursery:
        result = await nursery.start(
            lambda task_status: serve_metrics(Metrics(), lambda: None, port=None, task_status=task_status)
        )
    assert result is None


def _exposed_names() -> set[str]:
    metrics = Metrics(process_metrics=False)
    metrics.update(example_status())
    return {family.name for family in text_string_to_metric_families(metrics.exposition().decode())}


def test_every_metric_is_documented_in_the_module_table() -> None:
    import extmm.ops.metrics as module

    documented = set(re.findall(r"`(extmm_\w+)`", module.__doc__ or ""))
    # counters are documented with their `_total` sample name
    exposed = {name + "_total" if f"{name}_total" in documented else name for name in _exposed_names()}
    assert exposed == documented


def test_grafana_dashboard_uses_only_exposed_metrics() -> None:
    dashboard = json.loads(
        (Path(__file__).resolve().parents[2] / "scripts" / "grafana-dashboard.json").read_text()
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {re.sub(r"_total$", "", name) for e in exprs for name in re.findall(r"extmm_\w+", e)}
    assert used and used <= _exposed_names()
