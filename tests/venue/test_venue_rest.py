"""NetworkVenue over httpx.MockTransport: every REST call, error mapping, retries, safe places."""

from __future__ import annotations

import inspect
import json
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import trio

from extmm import __version__
from extmm.domain.units import Side
from extmm.markets import bundled_markets
from extmm.venue.endpoints import MAINNET, SN_MAIN, SN_SEPOLIA, TESTNET, SigningDomain, endpoint_for
from extmm.venue.errors import (
    AuthError,
    MalformedResponse,
    NetworkError,
    OrderBuildFailed,
    OrderRejected,
    RateLimited,
    TransientServerError,
)
from extmm.venue.network import NetworkVenue
from extmm.venue.placement import placement_known
from extmm.venue.port import ExchangePort
from extmm.venue.ratelimit import TokenBucket
from extmm.venue.rest import RequestOutcome, RetryPolicy
from extmm.venue.signing import Credentials, NonceSource
from extmm.venue.types import OrderRequest

API_KEY = "test-api-key-not-real"
CREDENTIALS = Credentials(
    api_key=API_KEY,
    vault=10002,
    stark_private_key="0x7a7ff6fd3cab02ccdcd4a572563f5976f8976899b03a39773795a3c486d4986",
    stark_public_key="0x61c5e7e8339b7d56f197f54ea91b776776690e3232313de0f2ecbd0ef76f466",
)
REST_URL = "https://venue.test/api/v1"
EXPIRY_MS = 1790427600000


class ZeroJitter(random.Random):
    """Backoff with nothing taken off at random, so virtual times are exact."""

    def random(self) -> float:
        return 0.0


def ok(data: Any = None, *, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"status": "OK", "data": data})


def error(code: int | str, message: str, *, status: int) -> httpx.Response:
    return httpx.Response(status, json={"status": "ERROR", "error": {"code": code, "message": message}})


ORDER_JSON = {
    "id": 1811328331287359488,
    "accountId": 3004,
    "externalId": "ext-1",
    "market": "BTC-USD",
    "type": "LIMIT",
    "side": "BUY",
    "status": "NEW",
    "price": "84000",
    "qty": "0.001",
    "filledQty": "0",
    "postOnly": True,
    "reduceOnly": False,
    "createdTime": 1,
    "updatedTime": 2,
    "expiryTime": EXPIRY_MS,
}


class FakeVenue:
    """Routes requests to per-(method, path) handlers and records everything it saw."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []
        self.routes: dict[tuple[str, str], Callable[[httpx.Request], Any]] = {
            ("GET", "/api/v1/info/markets"): lambda r: ok(list(bundled_markets().values())),
            ("GET", "/api/v1/info/starknet"): lambda r: ok(
                {"name": "Perpetuals", "version": "v0", "chainId": "SN_MAIN", "revision": 1}
            ),
        }

    def route(self, method: str, path: str, handler: Callable[[httpx.Request], Any]) -> None:
        self.routes[(method, "/api/v1" + path)] = handler

    def seen(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == "/api/v1" + path]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(trio.current_time())
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return error(404, f"no route {request.method} {request.url.path}", status=404)
        result = handler(request)
        if hasattr(result, "__await__"):
            result = await result
        return result


def make_venue(
    fake: FakeVenue, *, credentials: Credentials | None = CREDENTIALS, **kwargs: Any
) -> NetworkVenue:
    kwargs.setdefault("retry", RetryPolicy(attempts=3, base_s=0.5, cap_s=4.0))
    kwargs.setdefault("rng", ZeroJitter())
    kwargs.setdefault("limiter", TokenBucket(capacity=1000, refill_per_s=1000.0))
    kwargs.setdefault("nonces", NonceSource(start=1))
    return NetworkVenue(
        REST_URL, "wss://venue.test/stream", credentials, transport=httpx.MockTransport(fake), **kwargs
    )


def query(request: httpx.Request) -> list[tuple[str, str]]:
    return parse_qsl(request.url.query.decode())


def order_request(external_id: str = "ext-1", **changes: Any) -> OrderRequest:
    fields: dict[str, Any] = {
        "market": "BTC-USD",
        "side": Side.BUY,
        "qty": Decimal("0.00100"),
        "price": Decimal("84000"),
        "external_id": external_id,
        "expiry_ms": EXPIRY_MS,
        "max_fee_rate": Decimal("0"),
    }
    return OrderRequest(**{**fields, **changes})


# -- happy paths ---------------------------------------------------------------------------------


async def test_public_markets_carry_user_agent_and_no_api_key() -> None:
    fake = FakeVenue()
    async with make_venue(fake) as venue:
        markets = await venue.get_markets(["BTC-USD", "ETH-USD"])
    assert [m.name for m in markets] == ["BTC-USD", "ETH-USD"]
    [request] = fake.requests
    assert query(request) == [("market", "BTC-USD"), ("market", "ETH-USD")]
    assert request.headers["User-Agent"] == f"extmm/{__version__}"
    assert "X-Api-Key" not in request.headers


async def test_private_reads_parse_and_send_the_api_key() -> None:
    fake = FakeVenue()
    fake.route(
        "GET",
        "/user/fees",
        lambda r: ok([{"market": "BTC-USD", "makerFeeRate": "0", "takerFeeRate": "0.00025"}]),
    )
    fake.route(
        "GET",
        "/user/balance",
        lambda r: ok(
            {"balance": "100", "equity": "101.5", "availableForTrade": "90", "unrealisedPnl": "1.5"}
        ),
    )
    position = {
        "market": "BTC-USD",
        "side": "LONG",
        "size": "0.01",
        "openPrice": "84000",
        "markPrice": "84100",
    }
    fake.route("GET", "/user/positions", lambda r: ok([position]))
    fake.route("GET", "/user/orders", lambda r: ok([ORDER_JSON]))
    fake.route(
        "GET", "/user/orders/external/ext 1/x", lambda r: ok([{**ORDER_JSON, "externalId": "ext 1/x"}])
    )
    fake.route("GET", "/user/orders/history", lambda r: ok([{**ORDER_JSON, "status": "CANCELLED"}]))
    trade = {
        "id": 7,
        "orderId": 1811328331287359488,
        "market": "BTC-USD",
        "side": "BUY",
        "price": "84000",
        "qty": "0.001",
        "value": "84",
        "fee": "0",
        "isTaker": False,
        "createdTime": 5,
    }
    fake.route("GET", "/user/trades", lambda r: ok([trade]))
    payment = {
        "market": "BTC-USD",
        "side": "LONG",
        "size": "0.01",
        "value": "841",
        "markPrice": "84100",
        "fundingFee": "0.0841",
        "fundingRate": "0.0001",
        "paidTime": 9,
    }
    fake.route("GET", "/user/funding/history", lambda r: ok([payment]))

    async with make_venue(fake) as venue:
        [fees] = await venue.get_fees(["BTC-USD"])
        balance = await venue.get_balance()
        [pos] = await venue.get_positions("BTC-USD")
        [open_order] = await venue.get_open_orders("BTC-USD")
        [by_external] = await venue.get_orders_by_external_id("ext 1/x")
        [old] = await venue.get_order_history("BTC-USD", limit=5)
        [fill] = await venue.get_trades(limit=7)
        [funding] = await venue.get_funding_history("BTC-USD", limit=3, from_ms=1000)

    assert fees.taker == Decimal("0.00025")
    assert balance is not None and balance.equity == Decimal("101.5")
    assert pos.signed_size == Decimal("0.01")
    assert open_order.id == 1811328331287359488 and open_order.status == "NEW"
    assert by_external.external_id == "ext 1/x"
    assert old.status == "CANCELLED"
    assert fill.order_id == 1811328331287359488
    assert funding.funding_fee == Decimal("0.0841")
    for request in fake.requests:
        assert request.headers["X-Api-Key"] == API_KEY
        assert request.headers["User-Agent"].startswith("extmm/")
    assert query(fake.seen("GET", "/user/fees")[0]) == [("market", "BTC-USD")]
    assert fake.requests[4].url.raw_path == b"/api/v1/user/orders/external/ext%201%2Fx"
    assert query(fake.seen("GET", "/user/orders/history")[0]) == [("market", "BTC-USD"), ("limit", "5")]
    assert query(fake.seen("GET", "/user/trades")[0]) == [("limit", "7")]
    assert query(fake.seen("GET", "/user/funding/history")[0]) == [
        ("market", "BTC-USD"),
        ("fromTime", "1000"),
        ("limit", "3"),
    ]


async def test_balance_404_means_zero_and_external_lookup_404_means_none() -> None:
    fake = FakeVenue()
    fake.route("GET", "/user/balance", lambda r: error(404, "NOT_FOUND", status=404))
    fake.route("GET", "/user/orders/external/nope", lambda r: httpx.Response(404))
    async with make_venue(fake) as venue:
        assert await venue.get_balance() is None
        assert await venue.get_orders_by_external_id("nope") == []


async def test_place_signs_posts_once_and_fetches_domain_and_market_once() -> None:
    fake = FakeVenue()
    bodies: list[dict[str, Any]] = []

    def place(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        return ok({"id": 100 + len(bodies), "externalId": body["id"]})

    fake.route("POST", "/user/order", place)
    async with make_venue(fake) as venue:
        first = await venue.place_order(order_request("ext-1"))
        second = await venue.place_order(order_request("ext-2", side=Side.SELL, cancel_id="ext-1"))
        with pytest.raises(OrderBuildFailed, match="already sent"):
            await venue.place_order(order_request("ext-1"))

    assert (first.id, first.external_id) == (101, "ext-1")
    assert (second.id, second.external_id) == (102, "ext-2")
    assert len(fake.seen("GET", "/info/starknet")) == 1  # custom endpoint: domain asked once
    assert len(fake.seen("GET", "/info/markets")) == 1
    assert query(fake.seen("GET", "/info/markets")[0]) == [("market", "BTC-USD")]
    [post, _] = fake.seen("POST", "/user/order")
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["X-Api-Key"] == API_KEY
    assert [b["nonce"] for b in bodies] == ["1", "2"]
    assert bodies[0]["settlement"]["collateralPosition"] == "10002"
    assert "cancelId" not in bodies[0]
    assert bodies[1]["cancelId"] == "ext-1"
    assert bodies[1]["side"] == "SELL"


async def test_configured_domain_is_not_fetched() -> None:
    fake = FakeVenue()
    fake.route("POST", "/user/order", lambda r: ok({"id": 1, "externalId": "ext-1"}))
    async with make_venue(fake, signing_domain=SN_MAIN) as venue:
        await venue.place_order(order_request())
        assert await venue.get_signing_domain() == SN_MAIN
    assert fake.seen("GET", "/info/starknet") == []


async def test_cancels_mass_cancel_and_dead_mans_switch() -> None:
    fake = FakeVenue()
    fake.route("DELETE", "/user/order/42", lambda r: httpx.Response(200, json={"status": "OK"}))
    fake.route("DELETE", "/user/order", lambda r: httpx.Response(204))
    fake.route("POST", "/user/order/massCancel", lambda r: httpx.Response(200, json={"status": "OK"}))
    fake.route("POST", "/user/deadmanswitch", lambda r: httpx.Response(200, content=b""))
    async with make_venue(fake) as venue:
        await venue.cancel_order(42)
        await venue.cancel_order_by_external_id("ext-9")
        await venue.mass_cancel(markets=["BTC-USD"])
        await venue.mass_cancel(order_ids=[1, 2], external_ids=["a"], cancel_all=False)
        await venue.mass_cancel(cancel_all=True)
        await venue.set_dead_mans_switch(120)
        await venue.set_dead_mans_switch(0)
        with pytest.raises(ValueError):
            await venue.mass_cancel()

    assert query(fake.seen("DELETE", "/user/order")[0]) == [("externalId", "ext-9")]
    masses = [json.loads(r.content) for r in fake.seen("POST", "/user/order/massCancel")]
    assert masses == [
        {"markets": ["BTC-USD"], "cancelAll": False},
        {"orderIds": [1, 2], "externalOrderIds": ["a"], "cancelAll": False},
        {"cancelAll": True},
    ]
    dms = fake.seen("POST", "/user/deadmanswitch")
    assert [query(r) for r in dms] == [[("countdownTime", "120")], [("countdownTime", "0")]]
    assert all(r.content == b"" for r in dms)
    assert all(r.headers["X-Api-Key"] == API_KEY for r in fake.requests)


async def test_public_only_venue_refuses_private_calls_without_sending() -> None:
    fake = FakeVenue()
    async with make_venue(fake, credentials=None) as venue:
        with pytest.raises(AuthError):
            await venue.get_balance()
        with pytest.raises(RuntimeError):
            await venue.place_order(order_request())
        with pytest.raises(RuntimeError):
            venue.account_stream()
    assert fake.requests == []


# -- error mapping --------------------------------------------------------------------------------


async def test_429_backs_off_then_succeeds_at_exact_virtual_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeVenue()
    answers = iter([httpx.Response(429), httpx.Response(429), ok([ORDER_JSON])])
    fake.route("GET", "/user/orders", lambda r: next(answers))
    async with make_venue(fake, rate_limited_pause_s=0.0) as venue:
        t0 = trio.current_time()
        orders = await venue.get_open_orders()
        stats = venue.statistics()
    assert len(orders) == 1
    # base 0.5 s, zero jitter: 0.5 s, then 1 s
    assert [t - t0 for t in fake.times] == [pytest.approx(0.0), pytest.approx(0.5), pytest.approx(1.5)]
    assert (stats.requests, stats.errors, stats.rate_limited) == (3, 2, 2)


async def test_429_retry_after_pauses_the_shared_bucket(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeVenue()
    answers = iter([httpx.Response(429, headers={"Retry-After": "3"}), ok([])])
    fake.route("GET", "/user/orders", lambda r: next(answers))
    async with make_venue(fake, limiter=TokenBucket(capacity=1, refill_per_s=1.0)) as venue:
        t0 = trio.current_time()
        await venue.get_open_orders()
    # The retry sleeps the 3 s Retry-After; the bucket, paused 3 s from empty, then
    # needs one more second for the token itself.
    assert [t - t0 for t in fake.times] == [pytest.approx(0.0), pytest.approx(4.0)]


async def test_429_on_every_attempt_raises_rate_limited(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeVenue()
    fake.route("GET", "/user/positions", lambda r: httpx.Response(429, headers={"Retry-After": "0.25"}))
    async with make_venue(fake) as venue:
        with pytest.raises(RateLimited) as caught:
            await venue.get_positions()
    assert caught.value.retry_after == 0.25
    assert len(fake.requests) == 3


async def test_5xx_reads_retry_then_raise_transient(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeVenue()
    fake.route("GET", "/user/balance", lambda r: error(1006, "Internal Server Error", status=503))
    async with make_venue(fake) as venue:
        with pytest.raises(TransientServerError) as caught:
            await venue.get_balance()
        stats = venue.statistics()
    assert caught.value.http_status == 503
    assert "1006" in str(caught.value)
    assert len(fake.requests) == 3
    assert (stats.server_errors, stats.errors) == (3, 3)


async def test_writes_are_never_retried(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeVenue()
    fake.route("DELETE", "/user/order/7", lambda r: httpx.Response(502, text="bad gateway"))
    fake.route("POST", "/user/deadmanswitch", lambda r: httpx.Response(429))
    async with make_venue(fake) as venue:
        with pytest.raises(TransientServerError):
            await venue.cancel_order(7)
        with pytest.raises(RateLimited):
            await venue.set_dead_mans_switch(60)
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>oops</html>"),
        httpx.Response(200, json={"data": []}),
        httpx.Response(200, content=b""),
        httpx.Response(200, json={"status": "OK", "data": {"not": "a list"}}),
    ],
)
async def test_malformed_bodies_raise_malformed_and_are_not_retried(response: httpx.Response) -> None:
    fake = FakeVenue()
    fake.route("GET", "/user/orders", lambda r: response)
    async with make_venue(fake) as venue:
        with pytest.raises(MalformedResponse):
            await venue.get_open_orders()
    assert len(fake.requests) == 1


async def test_auth_and_application_errors() -> None:
    fake = FakeVenue()
    fake.route("GET", "/user/positions", lambda r: httpx.Response(401))
    fake.route("GET", "/user/trades", lambda r: error(1001, "Market not found", status=400))
    fake.route("GET", "/user/fees", lambda r: error("NOT_FOUND", "nothing", status=200))
    async with make_venue(fake) as venue:
        with pytest.raises(AuthError) as auth:
            await venue.get_positions()
        with pytest.raises(OrderRejected) as rejected:
            await venue.get_trades()
        with pytest.raises(OrderRejected) as enveloped:
            await venue.get_fees(["BTC-USD"])
    assert API_KEY not in str(auth.value)
    assert (rejected.value.code, rejected.value.http_status) == (1001, 400)
    assert rejected.value.venue_message == "Market not found"
    assert (enveloped.value.code, enveloped.value.http_status) == ("NOT_FOUND", 200)
    assert len(fake.requests) == 3


async def test_transport_failures_on_reads_retry_then_raise_network_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeVenue()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    fake.route("GET", "/info/markets", refuse)
    async with make_venue(fake) as venue:
        with pytest.raises(NetworkError, match="ConnectError"):
            await venue.get_markets()
    assert len(fake.requests) == 3


async def test_place_rejected_by_the_venue_is_not_looked_up() -> None:
    fake = FakeVenue()
    fake.route("POST", "/user/order", lambda r: error(1140, "Order cost exceeds balance", status=400))
    async with make_venue(fake, signing_domain=SN_MAIN) as venue:
        with pytest.raises(OrderRejected) as caught:
            await venue.place_order(order_request())
    assert caught.value.code == 1140
    assert placement_known(caught.value) is False
    assert fake.seen("GET", "/user/orders/external/ext-1") == []


# -- ambiguous places ------------------------------------------------------------------------------


def timeout_after_receiving(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)  # the venue got it; the ack was lost


async def test_ambiguous_place_found_by_external_id_counts_as_placed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeVenue()
    fake.route("POST", "/user/order", timeout_after_receiving)
    lookups = iter([ok([]), ok([{**ORDER_JSON, "id": 555, "externalId": "ext-1"}])])
    fake.route("GET", "/user/orders/external/ext-1", lambda r: next(lookups))
    async with make_venue(fake, signing_domain=SN_MAIN) as venue:
        placed = await venue.place_order(order_request("ext-1"))
    assert (placed.id, placed.external_id) == (555, "ext-1")
    assert len(fake.seen("POST", "/user/order")) == 1
    assert len(fake.seen("GET", "/user/orders/external/ext-1")) == 2


async def test_ambiguous_place_absent_after_lookups_is_marked_not_placed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeVenue()
    fake.route("POST", "/user/order", lambda r: httpx.Response(500, text="upstream died"))
    fake.route("GET", "/user/orders/external/ext-1", lambda r: ok([]))
    async with make_venue(fake, signing_domain=SN_MAIN) as venue:
        t0 = trio.current_time()
        with pytest.raises(TransientServerError) as caught:
            await venue.place_order(order_request("ext-1"))
        elapsed = trio.current_time() - t0
        with pytest.raises(OrderBuildFailed, match="already sent"):
            await venue.place_order(order_request("ext-1"))
    assert caught.value.placed is False  # type: ignore[attr-defined]
    assert placement_known(caught.value) is False
    assert len(fake.seen("POST", "/user/order")) == 1
    assert len(fake.seen("GET", "/user/orders/external/ext-1")) == 4
    # lookups after 0.5, 1, 2, 4 s (PLACE_LOOKUP: base 0.5, cap 4; nothing taken off at random)
    assert elapsed == pytest.approx(7.5)


async def test_ambiguous_place_with_failing_lookups_stays_unknown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeVenue()
    fake.route("POST", "/user/order", timeout_after_receiving)
    fake.route("GET", "/user/orders/external/ext-1", lambda r: httpx.Response(503))
    async with make_venue(fake, signing_domain=SN_MAIN) as venue:
        with pytest.raises(NetworkError) as caught:
            await venue.place_order(order_request("ext-1"))
    assert placement_known(caught.value) is None
    assert len(fake.seen("POST", "/user/order")) == 1


# -- priority, observer, statistics ------------------------------------------------------------------


async def test_shared_bucket_serves_cancel_then_place_then_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeVenue()
    fake.route("GET", "/user/orders", lambda r: ok([]))
    fake.route("POST", "/user/order", lambda r: ok({"id": 1, "externalId": "ext-1"}))
    fake.route("DELETE", "/user/order/9", lambda r: httpx.Response(200, json={"status": "OK"}))
    async with make_venue(
        fake, signing_domain=SN_MAIN, limiter=TokenBucket(capacity=1, refill_per_s=1.0)
    ) as venue:
        await venue.get_markets()  # market cache warm; the bucket is now empty
        t0 = trio.current_time()

        async def later(delay: float, call: Callable[[], Any]) -> None:
            await trio.sleep(delay)
            await call()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(later, 0.1, venue.get_open_orders)
            nursery.start_soon(later, 0.2, lambda: venue.place_order(order_request()))
            nursery.start_soon(later, 0.3, lambda: venue.cancel_order(9))
    served = [(r.method, round(t - t0, 9)) for r, t in zip(fake.requests, fake.times, strict=True)][1:]
    assert served == [("DELETE", 1.0), ("POST", 2.0), ("GET", 3.0)]


async def test_observer_sees_every_attempt_and_statistics_track_latency(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeVenue()
    latencies = iter([0.010, 0.020, 0.030, 0.040, 0.100])

    async def slow(request: httpx.Request) -> httpx.Response:
        await trio.sleep(next(latencies))
        return ok([])

    fake.route("GET", "/user/orders", slow)
    fake.route("DELETE", "/user/order/1", lambda r: httpx.Response(503))
    seen: list[RequestOutcome] = []
    bucket = TokenBucket(capacity=10, refill_per_s=0.001)
    async with make_venue(fake, observer=seen.append, limiter=bucket) as venue:
        for _ in range(5):
            await venue.get_open_orders()
        with pytest.raises(TransientServerError):
            await venue.cancel_order(1)
        stats = venue.statistics()
    assert [(o.operation, o.outcome, o.status) for o in seen] == [("get_open_orders", "ok", 200)] * 5 + [
        ("cancel_order", "server_error", 503)
    ]
    assert [o.latency_s for o in seen[:5]] == pytest.approx([0.010, 0.020, 0.030, 0.040, 0.100])
    # nearest rank over [0, .01, .02, .03, .04, .1]: p50 = 3rd value, p99 = 6th
    assert stats.latency_p50_ms == pytest.approx(20.0)
    assert stats.latency_p99_ms == pytest.approx(100.0)
    assert (stats.requests, stats.errors, stats.server_errors) == (6, 1, 1)
    assert stats.tokens_available == pytest.approx(10 - 6, abs=0.01)


async def test_channel_observer_never_blocks_and_counts_drops() -> None:
    fake = FakeVenue()
    fake.route("GET", "/user/orders", lambda r: ok([]))
    send, receive = trio.open_memory_channel[RequestOutcome](1)
    async with send, receive, make_venue(fake, observer=send) as venue:
        for _ in range(3):
            await venue.get_open_orders()
        first = receive.receive_nowait()
        assert first.operation == "get_open_orders"
        with pytest.raises(trio.WouldBlock):
            receive.receive_nowait()
        assert venue._observer.dropped == 2  # type: ignore[union-attr]  # noqa: SLF001


async def test_custom_domain_revision_is_kept_as_a_string() -> None:
    fake = FakeVenue()
    fake.routes[("GET", "/api/v1/info/starknet")] = lambda r: ok(
        {"name": "Perpetuals", "version": "v0", "chainId": "SN_SIM", "revision": 1}
    )
    async with make_venue(fake) as venue:
        assert await venue.get_signing_domain() == SigningDomain(chain_id="SN_SIM", revision="1")


def test_network_venue_offers_every_port_method_with_compatible_parameters() -> None:
    port_methods = {
        n: m for n, m in vars(ExchangePort).items() if inspect.isfunction(m) and not n.startswith("_")
    }
    assert len(port_methods) >= 20
    for name, port_method in port_methods.items():
        ours = getattr(NetworkVenue, name, None)
        assert ours is not None, f"NetworkVenue lacks {name}"
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(port_method), name
        port_params = inspect.signature(port_method).parameters
        our_params = inspect.signature(ours).parameters
        for param_name, param in port_params.items():
            assert param_name in our_params, f"{name}: missing parameter {param_name}"
            assert our_params[param_name].kind == param.kind, f"{name}.{param_name}"
            assert our_params[param_name].default == param.default, f"{name}.{param_name} default"
        extra = [p for n, p in our_params.items() if n not in port_params]
        assert all(p.default is not inspect.Parameter.empty for p in extra), f"{name}: extra required params"


async def test_failure_before_sending_is_known_not_placed() -> None:
    fake = FakeVenue()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down", request=request)

    fake.route("GET", "/info/starknet", down)
    async with make_venue(fake, retry=RetryPolicy(attempts=1)) as venue:
        with pytest.raises(NetworkError) as caught:
            await venue.place_order(order_request())
    assert placement_known(caught.value) is False
    assert fake.seen("POST", "/user/order") == []


def test_endpoints_and_for_endpoint_domain() -> None:
    assert MAINNET.rest_url == "https://api.starknet.extended.exchange/api/v1"
    assert MAINNET.signing_domain == SN_MAIN and TESTNET.signing_domain == SN_SEPOLIA
    overridden = endpoint_for(
        "testnet", stream_url="wss://starknet.sepolia.extended.exchange/stream.extended.exchange/v1/"
    )
    assert overridden.signing_domain == SN_SEPOLIA
    assert overridden.stream_url.endswith("/v1")
    assert overridden.rest_url == TESTNET.rest_url
    sim = endpoint_for(
        "paper", rest_url="http://127.0.0.1:8080/api/v1/", stream_url="ws://127.0.0.1:8080/stream/v1"
    )
    assert (sim.name, sim.rest_url, sim.signing_domain) == ("custom", "http://127.0.0.1:8080/api/v1", None)
    assert not sim.is_real_venue and MAINNET.is_real_venue
    with pytest.raises(ValueError):
        endpoint_for("paper")
    venue = NetworkVenue.for_endpoint(TESTNET, CREDENTIALS)
    assert venue.rest_url == TESTNET.rest_url and venue._signing_domain == SN_SEPOLIA  # noqa: SLF001
    assert "test-api-key" not in repr(venue)
