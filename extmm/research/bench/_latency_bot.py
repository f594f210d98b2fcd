"""`bench latency`, the bot's side: its config and the instruments around it.

`LatencyOptions` (what to run), `bench_config` (the bot's configuration for the probe),
`StampedVenue` (a `NetworkVenue` that stamps book frames on arrival, orders on entry to
`place_order` and their requests on the socket, into a bounded `BotStamps`), the signing
floor and the garbage-collector pauses. Clocks here are real (CLOCK_MONOTONIC, the probe's
axis): this is a benchmark, not trading logic.
"""

from __future__ import annotations

import gc
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs

from extmm.config import BotConfig, parse_config
from extmm.venue.network import NetworkVenue
from extmm.venue.signing import Credentials, NonceSource, OrderSigner
from extmm.venue.types import OrderRequest, StreamMessage

ORDER_BODY_HEAD = b'{"id":"'
FLOOR_ORDERS = 2000  # orders kept for the signing floor
STAMPS_KEPT = 200_000  # bot-side stamps kept for the breakdown


@attrs.frozen(kw_only=True)
class LatencyOptions:
    """What to run. The bot's config: seed model with α = β = k = 0 and no funding shift, so
    the quote is a fixed distance from the mid (the probe recognises frames by price);
    replace threshold and coalescing 0, so every move is answered at once. The half-spread
    (base_spread · mid, ≈ 42 ticks by default) must exceed two probe steps (2 · step_ticks + 1)
    or the moving crowd would trade with our quotes; the probe refuses to run otherwise.

    The venue's request budget (at most 12,000/min on the top tier) cannot carry two
    replaces per update at 4 × 50 updates/s; the limiter is raised here because this bench
    measures the pipeline, not the budget.
    """

    markets: int = 4
    rate_hz: float = 50.0
    duration_s: float = 20.0
    quote_loop_ms: int = 100
    base_spread: float = 0.0005
    rate_limit_per_min: int = 1_000_000
    verify_signatures: bool = True
    pin_cpus: bool = True  # bot on one core, the simulator (a stand-in for a remote venue) on another
    step_ticks: int = 6
    startup_timeout_s: float = 60.0
    profile_path: str | None = None
    sim_profile_path: str | None = None
    log_level: str = "WARNING"
    journal_path: str | None = None  # the bot keeps its trading journal here (None: no journal)

def bench_config(markets: Sequence[str], opts: LatencyOptions) -> BotConfig:
    return parse_config(
        {
            "stp": "ACCOUNT",
            "quote_loop_ms": opts.quote_loop_ms,
            "replace_coalesce_ms": 0,
            "dead_mans_switch_sec": 120,
            "risk": {"max_net_position_usd": 1000, "max_open_orders": 30, "min_balance_usd": 50},
            "markets": [
                {
                    "name": name,
                    "k": 0.0,
                    "alpha": 0.0,
                    "beta": 0.0,
                    "base_spread": opts.base_spread,
                    "quote_notional_cap_usd": 50,
                    "replace_threshold_bps": 0,
                    "min_order_size": 0,
                    "post_only": True,
                    "model": {"type": "seed", "funding_horizon_s": 0},
                }
                for name in markets
            ],
        }
    )


class BotStamps:
    """When book frames reached the bot, orders entered `place_order` and their requests
    went out on the socket (CLOCK_MONOTONIC, the probe's axis), and the orders themselves
    for the signing floor. Bounded."""

    def __init__(self) -> None:
        self.frames: OrderedDict[tuple[str, int], float] = OrderedDict()
        self.orders: OrderedDict[str, float] = OrderedDict()
        # externalId → when its request went out on the socket
        self.written: OrderedDict[str, float] = OrderedDict()
        self.requests: deque[OrderRequest] = deque(maxlen=FLOOR_ORDERS)
        self.round_trips: deque[float] = deque(maxlen=STAMPS_KEPT)  # place_order entered → returned

    def frame(self, market: str, seq: int) -> None:
        self.frames[(market, seq)] = time.monotonic()
        if len(self.frames) > STAMPS_KEPT:
            self.frames.popitem(last=False)

    def order(self, order: OrderRequest) -> None:
        self.orders[order.external_id] = time.monotonic()
        if len(self.orders) > STAMPS_KEPT:
            self.orders.popitem(last=False)
        self.requests.append(order)

    def request_written(self, body: bytes, _at: float) -> None:
        """The write lane's hook: an order request (headers and body in one write) goes out
        now. An order body starts with its externalId."""
        if body.startswith(ORDER_BODY_HEAD):
            end = body.find(b'"', len(ORDER_BODY_HEAD))
            if end > 0:
                self.written[body[len(ORDER_BODY_HEAD) : end].decode(errors="replace")] = time.monotonic()
                if len(self.written) > STAMPS_KEPT:
                    self.written.popitem(last=False)


class _StampedSubscription:
    def __init__(self, inner: Any, market: str, stamps: BotStamps) -> None:
        self._inner = inner
        self._market = market
        self._stamps = stamps

    async def receive(self) -> StreamMessage:
        msg = await self._inner.receive()
        self._stamps.frame(self._market, msg.seq)
        return msg

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class StampedVenue(NetworkVenue):
    """`NetworkVenue` that stamps book frames on arrival and orders on entry to `place_order`."""

    def __init__(self, *args: Any, stamps: BotStamps, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stamps = stamps

    async def place_order(self, order: OrderRequest) -> Any:
        self.stamps.order(order)
        started = time.monotonic()
        try:
            return await super().place_order(order)
        finally:
            self.stamps.round_trips.append(time.monotonic() - started)

    def orderbook_stream(self, market: str, *, depth: int | None = None) -> Any:
        return self._stamped(market, depth)

    @asynccontextmanager
    async def _stamped(self, market: str, depth: int | None) -> AsyncIterator[Any]:
        async with super().orderbook_stream(market, depth=depth) as sub:
            yield _StampedSubscription(sub, market, self.stamps)


def signing_floor(
    orders: Sequence[OrderRequest], credentials: Credentials, domain: Any, markets: Sequence[Any]
) -> list[float]:
    """Seconds to sign and serialise each order alone (what `place_order` does before sending)."""
    if not orders:
        return []
    signer = OrderSigner(credentials, domain, nonces=NonceSource(start=1))
    for market in markets:
        signer.add_market(market)
    signer.sign_json(orders[0])  # warm the SDK's caches, as the bot's first orders did
    times = []
    for order in orders:
        started = time.perf_counter()
        signer.sign_json(order)
        times.append(time.perf_counter() - started)
    return times


class GcPauses:
    """Durations of the bot's cyclic garbage collections while inside the `with` block."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._started = 0.0

    def _callback(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.durations.append(time.perf_counter() - self._started)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)
