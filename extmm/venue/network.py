"""`NetworkVenue`: the exchange port over the network (httpx REST + trio-websocket streams).

Works against the real venue or anything speaking its protocol (our simulator over
loopback): it only needs the REST and stream base URLs. One instance per sub-account;
it owns the httpx client and the account's token bucket, so use it as an async context
manager. Writes are never blindly retried; an ambiguous place is settled by externalId
(`extmm.venue.placement`). The stream subscriptions are in `extmm.venue.network_streams`.
"""

from __future__ import annotations

import random
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import httpx
import trio

import extmm
from extmm.venue.endpoints import Endpoint, SigningDomain
from extmm.venue.errors import (
    MalformedResponse,
    NetworkError,
    OrderBuildFailed,
    OrderRejected,
    TransientServerError,
    VenueError,
)
from extmm.venue.lane import WriteLane
from extmm.venue.network_streams import NetworkStreams
from extmm.venue.parse import (
    parse_balance,
    parse_fee_rates,
    parse_funding_payment,
    parse_list,
    parse_markets,
    parse_order,
    parse_placed_order,
    parse_position,
    parse_signing_domain,
    parse_trade,
)
from extmm.venue.placement import PLACE_LOOKUP, orders_by_external_id, settle_ambiguous_place
from extmm.venue.ratelimit import Priority, TokenBucket
from extmm.venue.rest import ChannelObserver, Observer, RequestOutcome, RestClient, RetryPolicy
from extmm.venue.signing import Credentials, NonceSource, OrderSigner, dumps
from extmm.venue.streams import StreamOptions
from extmm.venue.types import (
    BalanceInfo,
    FeeRates,
    FundingPayment,
    MarketInfo,
    OrderInfo,
    OrderRequest,
    PlacedOrder,
    PositionInfo,
    TradeInfo,
    VenueStats,
)

DEFAULT_USER_AGENT = f"extmm/{extmm.__version__}"


class NetworkVenue(NetworkStreams):
    """Implements `extmm.venue.port.ExchangePort` over REST and v1 streams.

    `credentials=None` gives a public-only venue (markets and public streams). The
    Starknet signing domain is `signing_domain` when given (mainnet/testnet endpoints
    pass theirs), else fetched once from `GET /info/starknet` (simulator, paper).
    `observer` receives a `RequestOutcome` per HTTP attempt: a callable that must not
    block, or a trio memory send channel (full → sample dropped, see `ChannelObserver`).
    A 429 pauses the whole token bucket for its Retry-After, else `rate_limited_pause_s`:
    the venue counts per IP, so every market backs off together.
    """

    def __init__(
        self,
        rest_url: str,
        stream_url: str,
        credentials: Credentials | None = None,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        rate_limit_per_min: int = 1000,
        rate_limit_burst: int | None = None,
        limiter: TokenBucket | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
        signing_domain: SigningDomain | None = None,
        retry: RetryPolicy = RetryPolicy(),
        place_lookup: RetryPolicy = PLACE_LOOKUP,
        observer: Observer | trio.MemorySendChannel[RequestOutcome] | None = None,
        nonces: NonceSource | None = None,
        stream_options: StreamOptions = StreamOptions(),
        rng: random.Random | None = None,
        rate_limited_pause_s: float = 1.0,
        sent_id_memory: int = 100_000,
        write_lane: bool | None = None,
        lane_on_write: Callable[[bytes, float], None] | None = None,
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.stream_url = stream_url.rstrip("/")
        self._credentials = credentials
        self._user_agent = user_agent
        self._limiter = limiter or TokenBucket.per_minute(rate_limit_per_min, burst=rate_limit_burst)
        self._transport = transport
        self._timeout_s = timeout_s
        self._signing_domain = signing_domain
        self._retry = retry
        self._place_lookup = place_lookup
        if observer is not None and not callable(observer):
            observer = ChannelObserver(observer)
        self._observer = observer
        self._nonces = nonces
        self._stream_options = stream_options
        self._rng = rng or random.Random()
        self._rate_limited_pause_s = rate_limited_pause_s
        self._client: httpx.AsyncClient | None = None
        self._rest: RestClient | None = None
        self._markets: dict[str, MarketInfo] = {}
        self._signer: OrderSigner | None = None
        self._signer_lock = trio.Lock()
        # externalIds already sent as new orders (bounded): a second send is refused.
        self._sent_ids: OrderedDict[str, None] = OrderedDict()
        self._sent_id_memory = sent_id_memory
        # Order writes (place, cancel, mass cancel) go through `WriteLane` unless told not
        # to; by default not when a custom httpx transport is given (tests mock that one)
        # nor when the environment routes the REST URL through a proxy (httpx honours
        # HTTPS_PROXY and friends; the lane connects directly).
        if write_lane is None:
            write_lane = transport is None and not proxied(self.rest_url)
        self._use_lane = write_lane
        self._lane_on_write = lane_on_write
        self._lane: WriteLane | None = None

    @classmethod
    def for_endpoint(
        cls, endpoint: Endpoint, credentials: Credentials | None = None, **kwargs: Any
    ) -> NetworkVenue:
        kwargs.setdefault("signing_domain", endpoint.signing_domain)
        return cls(endpoint.rest_url, endpoint.stream_url, credentials, **kwargs)

    def __repr__(self) -> str:
        vault = self._credentials.vault if self._credentials else None
        return f"NetworkVenue(rest_url={self.rest_url!r}, vault={vault})"

    async def __aenter__(self) -> NetworkVenue:
        headers = {"User-Agent": self._user_agent, "Accept": "application/json"}
        self._client = httpx.AsyncClient(
            base_url=self.rest_url,
            transport=self._transport,
            timeout=httpx.Timeout(self._timeout_s),
            headers=headers,
            follow_redirects=False,
        )
        if self._use_lane:
            self._lane = WriteLane(
                self.rest_url, headers=headers, timeout_s=self._timeout_s, on_write=self._lane_on_write
            )
        self._rest = RestClient(
            self._client,
            lane=self._lane,
            limiter=self._limiter,
            api_key=self._credentials.api_key if self._credentials else None,
            retry=self._retry,
            observer=self._observer,
            rng=self._rng,
            rate_limited_pause_s=self._rate_limited_pause_s,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        client, self._client, self._rest = self._client, None, None
        lane, self._lane = self._lane, None
        with trio.CancelScope(shield=True):
            if lane is not None:
                await lane.aclose()
            if client is not None:
                await client.aclose()

    @property
    def rest(self) -> RestClient:
        if self._rest is None:
            raise RuntimeError("NetworkVenue is not open: use `async with NetworkVenue(...)`")
        return self._rest

    @property
    def limiter(self) -> TokenBucket:
        return self._limiter

    # -- public ---------------------------------------------------------------------------
    async def get_markets(self, names: Sequence[str] | None = None) -> list[MarketInfo]:
        params = [("market", name) for name in names or ()]
        data = await self.rest.get("/info/markets", operation="get_markets", params=params)
        markets = parse_markets(data)
        for market in markets:
            self._markets[market.name] = market
        return markets

    async def get_signing_domain(self) -> SigningDomain:
        """The domain orders are signed under: configured, or fetched once from the venue."""
        if self._signing_domain is None:
            data = await self.rest.get("/info/starknet", operation="get_starknet_domain")
            self._signing_domain = parse_signing_domain(data)
        return self._signing_domain

    # -- private reads ------------------------------------------------------------------------
    async def get_fees(self, markets: Sequence[str]) -> list[FeeRates]:
        params = [("market", name) for name in markets]
        data = await self.rest.get("/user/fees", operation="get_fees", params=params, private=True)
        return parse_list(data, parse_fee_rates, "fees")

    async def get_balance(self) -> BalanceInfo | None:
        try:
            data = await self.rest.get("/user/balance", operation="get_balance", private=True)
        except OrderRejected as exc:
            if exc.http_status == 404:  # the venue's way of saying "zero balance" (SPEC §4.2)
                return None
            raise
        return parse_balance(data)

    async def get_positions(self, market: str | None = None) -> list[PositionInfo]:
        data = await self.rest.get(
            "/user/positions", operation="get_positions", params=_market_param(market), private=True
        )
        return parse_list(data, parse_position, "positions")

    async def get_open_orders(self, market: str | None = None) -> list[OrderInfo]:
        data = await self.rest.get(
            "/user/orders", operation="get_open_orders", params=_market_param(market), private=True
        )
        return parse_list(data, parse_order, "open orders")

    async def get_orders_by_external_id(self, external_id: str) -> list[OrderInfo]:
        return await orders_by_external_id(self.rest, external_id, retry=True)

    async def get_order_history(self, market: str | None = None, limit: int = 100) -> list[OrderInfo]:
        params = [*_market_param(market), ("limit", limit)]
        data = await self.rest.get(
            "/user/orders/history", operation="get_order_history", params=params, private=True
        )
        return parse_list(data, parse_order, "order history")

    async def get_trades(self, market: str | None = None, limit: int = 100) -> list[TradeInfo]:
        params = [*_market_param(market), ("limit", limit)]
        data = await self.rest.get("/user/trades", operation="get_trades", params=params, private=True)
        return parse_list(data, parse_trade, "trades")

    async def get_funding_history(
        self, market: str | None = None, limit: int = 100, *, from_ms: int = 0
    ) -> list[FundingPayment]:
        """`GET /user/funding/history` (DOC26 "Get funding payments"; `fromTime` is required)."""
        params = [*_market_param(market), ("fromTime", from_ms), ("limit", limit)]
        data = await self.rest.get(
            "/user/funding/history", operation="get_funding_history", params=params, private=True
        )
        return parse_list(data, parse_funding_payment, "funding history")

    async def get_leverage(self, markets: Sequence[str]) -> dict[str, Decimal]:
        """`GET /user/leverage?market=…` (SPEC §4.7): market → leverage."""
        from extmm.venue.leverage import parse_leverage

        params = [("market", name) for name in markets]
        data = await self.rest.get("/user/leverage", operation="get_leverage", params=params, private=True)
        return parse_leverage(data)

    async def set_leverage(self, market: str, leverage: Decimal) -> None:
        """`PATCH /user/leverage` `{"market", "leverage"}` (SPEC §4.7); never retried blindly."""
        await self.rest.request(
            "PATCH",
            "/user/leverage",
            operation="set_leverage",
            body=dumps({"market": market, "leverage": str(leverage)}),
            private=True,
            allow_empty=True,
        )

    # -- writes ---------------------------------------------------------------------------------
    async def place_order(self, order: OrderRequest) -> PlacedOrder:
        """Sign and send; on an ambiguous failure learn the truth by externalId.

        Returns the placed order, or raises. After NetworkError / TransientServerError /
        MalformedResponse the error carries `placed`: False (looked up, absent) or None
        (could not tell) — see `placement_known`. The externalId is never sent twice.
        """
        try:
            signer = await self._signer_for(order.market)
        except VenueError as exc:
            exc.placed = False  # type: ignore[attr-defined]  # failed before anything was sent
            raise
        if order.external_id in self._sent_ids:
            raise OrderBuildFailed(f"externalId {order.external_id!r} was already sent; use a fresh one")
        try:
            body = signer.sign_json(order)
        except (ValueError, KeyError, ArithmeticError) as exc:
            # A value the SDK refuses must be a tracked rejection, never a crashed actor.
            raise OrderBuildFailed(str(exc)) from None
        self._remember_sent(order.external_id)
        try:
            data = await self.rest.request(
                "POST",
                "/user/order",
                operation="place_order",
                body=body,
                private=True,
                priority=Priority.PLACE,
                fast=True,
            )
            return parse_placed_order(data)
        except (NetworkError, TransientServerError, MalformedResponse) as exc:
            return await settle_ambiguous_place(
                self.rest, order, exc, lookup=self._place_lookup, rng=self._rng
            )

    async def cancel_order(self, order_id: int) -> None:
        await self.rest.request(
            "DELETE",
            f"/user/order/{int(order_id)}",
            operation="cancel_order",
            private=True,
            priority=Priority.CANCEL,
            allow_empty=True,
            fast=True,
        )

    async def cancel_order_by_external_id(self, external_id: str) -> None:
        await self.rest.request(
            "DELETE",
            "/user/order",
            operation="cancel_order_by_external_id",
            params=[("externalId", external_id)],
            private=True,
            priority=Priority.CANCEL,
            allow_empty=True,
            fast=True,
        )

    async def mass_cancel(
        self,
        *,
        order_ids: Sequence[int] = (),
        external_ids: Sequence[str] = (),
        markets: Sequence[str] = (),
        cancel_all: bool = False,
    ) -> None:
        body: dict[str, Any] = {}
        if order_ids:
            body["orderIds"] = [int(i) for i in order_ids]
        if external_ids:
            body["externalOrderIds"] = list(external_ids)
        if markets:
            body["markets"] = list(markets)
        if not body and not cancel_all:
            raise ValueError("mass_cancel needs order_ids, external_ids, markets or cancel_all=True")
        body["cancelAll"] = cancel_all
        await self.rest.request(
            "POST",
            "/user/order/massCancel",
            operation="mass_cancel",
            body=dumps(body),
            private=True,
            priority=Priority.CANCEL,
            allow_empty=True,
            fast=True,
        )

    async def set_dead_mans_switch(self, countdown_s: int) -> None:
        """Arm (countdown_s > 0) or disarm (0) the venue-side mass auto-cancel (SPEC §4.11)."""
        if countdown_s < 0:
            raise ValueError("countdown must be ≥ 0 seconds (0 disarms)")
        await self.rest.request(
            "POST",
            "/user/deadmanswitch",
            operation="dead_mans_switch",
            params=[("countdownTime", int(countdown_s))],
            private=True,
            priority=Priority.CANCEL,
            allow_empty=True,
            fast=True,
        )

    # -- health -------------------------------------------------------------------------------------
    def statistics(self) -> VenueStats:
        tokens = self._limiter.tokens_available() if _in_trio() else 0.0
        if self._rest is None:
            return VenueStats(tokens_available=tokens)
        rest = self._rest.statistics()
        return VenueStats(
            requests=rest.requests,
            errors=rest.errors,
            rate_limited=rest.rate_limited,
            server_errors=rest.server_errors,
            latency_p50_ms=rest.latency_p50_ms,
            latency_p99_ms=rest.latency_p99_ms,
            tokens_available=tokens,
        )

    # -- internals ------------------------------------------------------------------------------------
    async def _signer_for(self, market: str) -> OrderSigner:
        if self._credentials is None:
            raise RuntimeError("placing orders needs credentials (public-only venue)")
        signer = self._signer
        if signer is not None and signer.has_market(market):
            return signer  # the hot path: no lock, no scheduling point before the order goes out
        async with self._signer_lock:
            if self._signer is None:
                domain = await self.get_signing_domain()
                self._signer = OrderSigner(self._credentials, domain, nonces=self._nonces)
            if not self._signer.has_market(market):
                info = self._markets.get(market)
                if info is None:
                    await self.get_markets([market])
                    info = self._markets.get(market)
                if info is None:
                    raise OrderRejected(1001, f"market {market} not found", None)
                self._signer.add_market(info)
            return self._signer

    def _remember_sent(self, external_id: str) -> None:
        self._sent_ids[external_id] = None
        while len(self._sent_ids) > self._sent_id_memory:
            self._sent_ids.popitem(last=False)

def proxied(url: str) -> bool:
    """Whether the environment sends requests to `url` through a proxy (the stdlib's reading
    of HTTP(S)_PROXY / ALL_PROXY / NO_PROXY, which httpx follows too)."""
    parsed = httpx.URL(url)
    proxies = urllib.request.getproxies()
    if parsed.scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(parsed.host)


def _market_param(market: str | None) -> list[tuple[str, str | int]]:
    return [] if market is None else [("market", market)]


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
