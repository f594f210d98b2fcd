"""`InProcessVenue`: the exchange port over a simulator engine in the same trio run.

For virtual-time backtests under `MockClock`: no sockets, yet the same bytes. Every
call renders the engine's answer with `extmm.sim.wire` and parses it with
`extmm.venue.parse`, and streams are the runner's own subscriptions (bounded queues of
the JSON text a WebSocket would carry, `seq` included), so the bot's parsing path is
the one it uses against the network. Each call may `await trio.sleep(latency_s)`; the
runner's fault controller applies here too (429 → RateLimited, 5xx →
TransientServerError, reject storms, stream faults).

Signing: by default orders are signed with the SDK exactly as on the network path
(`extmm.venue.signing.OrderSigner`). With an engine built with
`EngineConfig(verify_signatures=False)` pass `sign=False`: bodies go unsigned, which
saves roughly a millisecond per order in long backtests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from typing import Any

import trio
from loguru import logger

from extmm.sim import wire
from extmm.sim.engine import SimEngine
from extmm.sim.faults import FaultSpec, parse_faults
from extmm.sim.launch import SimCredentials, build_engine, set_account_fees
from extmm.sim.model import AccountInfo, SimReject
from extmm.sim.ratebudget import AddressBudget
from extmm.sim.runner import SimRunner
from extmm.sim.subscription import StreamKind, Subscription
from extmm.venue import parse
from extmm.venue.endpoints import SigningDomain
from extmm.venue.errors import (
    MalformedResponse,
    OrderBuildFailed,
    OrderRejected,
    RateLimited,
    SequenceGap,
    StreamClosed,
    TransientServerError,
)
from extmm.venue.signing import NonceSource, OrderSigner
from extmm.venue.types import (
    AccountUpdate,
    BalanceInfo,
    FeeRates,
    FundingPayment,
    MarketInfo,
    OrderInfo,
    OrderRequest,
    PlacedOrder,
    PositionInfo,
    StreamMessage,
    TradeInfo,
    VenueStats,
    signed_fee_rate,
)


class InProcessStream:
    """One subscription read in-process; `receive` behaves like the network stream's."""

    def __init__(self, subscription: Subscription, *, check_seq: bool) -> None:
        self._sub = subscription
        self._check_seq = check_seq
        self._last_seq: int | None = None
        self.malformed = 0

    async def receive(self) -> StreamMessage:
        while True:
            try:
                frame = await self._sub.frames.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise StreamClosed(self._closed_text()) from None
            delay = frame.due - trio.current_time()
            if delay > 0:
                await trio.sleep(delay)
            if self._sub.closed:  # dropped or overflowed: like a socket, nothing more arrives
                raise StreamClosed(self._closed_text())
            try:
                message = parse.parse_stream_message(parse.loads_stream(frame.text))
            except MalformedResponse as exc:
                self.malformed += 1
                logger.warning("in-process stream {}: malformed frame skipped: {}", self._sub.describe(), exc)
                continue
            if self._check_seq and self._last_seq is not None and message.seq != self._last_seq + 1:
                raise SequenceGap(self._last_seq + 1, message.seq)
            self._last_seq = message.seq
            return message

    def _closed_text(self) -> str:
        code = self._sub.close_code
        return f"stream {self._sub.describe()} closed (code {code}: {self._sub.close_reason})"


class InProcessAccountStream:
    def __init__(self, stream: InProcessStream) -> None:
        self._stream = stream

    async def receive(self) -> AccountUpdate:
        while True:
            message = await self._stream.receive()
            try:
                update = parse.parse_account_update(message)
            except MalformedResponse as exc:
                logger.warning("in-process account stream: bad {} frame skipped: {}", message.type, exc)
                continue
            if update is not None:
                return update


class PublicStreams:
    """The four public stream methods of the port over a `_stream(kind, market, check_seq)`
    context manager; shared by the in-process and the replay ports. Only book streams
    check `seq` (trades, funding and mark may skip, SPEC §5.3)."""

    def _stream(
        self, kind: StreamKind, market: str, *, check_seq: bool
    ) -> AbstractAsyncContextManager[InProcessStream]:
        raise NotImplementedError  # each port opens its own (InProcessVenue, ReplayVenue)

    def orderbook_stream(self, market: str) -> AbstractAsyncContextManager[InProcessStream]:
        return self._stream("orderbook", market, check_seq=True)

    def public_trades_stream(self, market: str) -> AbstractAsyncContextManager[InProcessStream]:
        return self._stream("trades", market, check_seq=False)

    def funding_stream(self, market: str) -> AbstractAsyncContextManager[InProcessStream]:
        return self._stream("funding", market, check_seq=False)

    def mark_price_stream(self, market: str) -> AbstractAsyncContextManager[InProcessStream]:
        return self._stream("mark", market, check_seq=False)


class InProcessVenue(PublicStreams):
    """`ExchangePort` over a `SimRunner`'s engine, for one account.

    `account` is an `AccountInfo` or `SimCredentials` of an engine account (with its
    private key on record when signing). `latency_s` is slept before every REST-like call.
    """

    def __init__(
        self,
        runner: SimRunner,
        account: AccountInfo | SimCredentials,
        *,
        latency_s: float = 0.0,
        sign: bool | None = None,
        nonces: NonceSource | None = None,
        queue_capacity: int = 1024,
    ) -> None:
        self._runner = runner
        self._engine = runner.engine
        account_id = account.account_id if isinstance(account, SimCredentials) else account.id
        self._account = self._engine.account_info(account_id)
        self.latency_s = latency_s
        self._queue_capacity = queue_capacity
        self._sign = self._engine.config.verify_signatures if sign is None else sign
        self._signer: OrderSigner | None = None
        if self._sign:
            if self._account.private_key is None:
                raise ValueError("signing needs the account's Stark private key")
            self._signer = OrderSigner(
                SimCredentials.of(self._account).credentials(),
                SigningDomain.of(self._engine.domain),
                nonces=nonces,
            )
            for name in self._engine.market_names():
                self._signer.add_market(self._engine.market_object(name))
        self._nonces = nonces or NonceSource(start=1)
        self._requests = 0
        self._errors = 0
        self._rate_limited = 0
        self._server_errors = 0

    def __repr__(self) -> str:
        return f"InProcessVenue(account={self._account.id}, latency_s={self.latency_s})"

    @property
    def account_id(self) -> int:
        """The engine account this port trades for (tests read the engine's truth with it)."""
        return self._account.id

    @property
    def runner(self) -> SimRunner:
        return self._runner

    # -- plumbing ------------------------------------------------------------------------
    async def _call(self, fn: Any, *args: Any, write: bool = False, **kwargs: Any) -> Any:
        """One REST-like call: latency, faults, SimReject → OrderRejected, then publish."""
        self._requests += 1
        budget = self._runner.ip_budget
        if budget is not None:  # the per-address budget (SPEC §7); in-process: one address
            wait = budget.admit("in-process", trio.current_time())
            if wait is not None:
                self._rate_limited += 1
                raise RateLimited(retry_after=wait)
        if self.latency_s > 0:
            await trio.sleep(self.latency_s)
        faults = self._runner.faults
        fault = faults.rest_fault()
        if fault is not None and not fault.apply_anyway:
            self._raise_fault(fault.http_status, fault.code, fault.message)
        try:
            result = fn(*args, **kwargs)
        except SimReject as exc:
            self._errors += 1
            raise OrderRejected(exc.code, exc.message, exc.http_status) from None
        finally:
            if write:
                self._runner.pump()
        if fault is not None:
            self._raise_fault(fault.http_status, fault.code, fault.message)
        return result

    def _raise_fault(self, http_status: int, code: int, message: str) -> None:
        self._errors += 1
        if http_status == 429:
            self._rate_limited += 1
            raise RateLimited()
        self._server_errors += 1
        raise TransientServerError(f"HTTP {http_status}: {code} {message}", http_status)

    def _now(self) -> int:
        return self._runner.now_ms()

    # -- public ----------------------------------------------------------------------------
    async def get_markets(self, names: Sequence[str] | None = None) -> list[MarketInfo]:
        engine = self._engine

        def read() -> list[dict[str, Any]]:
            wanted = [n for n in engine.market_names() if names is None or n in names]
            return [wire.market(engine.market_object(n), engine.market_stats(n)) for n in wanted]

        return parse.parse_markets(await self._call(read))

    # -- private reads ------------------------------------------------------------------------
    async def get_fees(self, markets: Sequence[str]) -> list[FeeRates]:
        rows = await self._call(self._engine.fees, self._account.id, list(markets) or None)
        return [parse.parse_fee_rates(wire.fee(row)) for row in rows]

    async def get_balance(self) -> BalanceInfo | None:
        state = await self._call(self._engine.balance, self._account.id)
        if state.balance == 0 and state.equity == 0:
            return None  # the venue answers 404 for a zero balance
        return parse.parse_balance(wire.balance(state))

    async def get_positions(self, market: str | None = None) -> list[PositionInfo]:
        rows = await self._call(self._engine.positions, self._account.id, market)
        return [parse.parse_position(wire.position(p)) for p in rows]

    async def get_open_orders(self, market: str | None = None) -> list[OrderInfo]:
        rows = await self._call(self._engine.open_orders, self._account.id, market)
        return [parse.parse_order(wire.order(o)) for o in rows]

    async def get_orders_by_external_id(self, external_id: str) -> list[OrderInfo]:
        rows = await self._call(self._engine.orders_by_external_id, self._account.id, external_id)
        return [parse.parse_order(wire.order(o)) for o in rows]

    async def get_order_history(self, market: str | None = None, limit: int = 100) -> list[OrderInfo]:
        rows = await self._call(self._engine.order_history, self._account.id, market, limit)
        return [parse.parse_order(wire.order(o)) for o in rows]

    async def get_trades(self, market: str | None = None, limit: int = 100) -> list[TradeInfo]:
        rows = await self._call(self._engine.trades, self._account.id, market, limit)
        return [parse.parse_trade(wire.trade(t)) for t in rows]

    async def get_funding_history(self, market: str | None = None, limit: int = 100) -> list[FundingPayment]:
        rows = await self._call(self._engine.funding_payments, self._account.id, market, limit)
        return [parse.parse_funding_payment(wire.funding_payment(f)) for f in rows]

    async def get_leverage(self, markets: Sequence[str]) -> dict[str, Decimal]:
        rows = await self._call(self._engine.leverage, self._account.id)
        wanted = set(markets)
        return {m: lev for m, lev in rows if not wanted or m in wanted}

    async def set_leverage(self, market: str, leverage: Decimal) -> None:
        await self._call(
            lambda: self._engine.set_leverage(self._account.id, market, Decimal(leverage), self._now()), write=True
        )

    # -- writes --------------------------------------------------------------------------------
    def _body(self, order: OrderRequest) -> dict[str, Any]:
        if self._signer is not None:
            return self._signer.sign(order)
        body: dict[str, Any] = {
            "id": order.external_id,
            "market": order.market,
            "type": order.order_type,
            "side": order.side.value,
            "qty": str(order.qty),
            "price": str(order.price),
            "reduceOnly": order.reduce_only,
            "postOnly": order.post_only,
            "timeInForce": order.time_in_force,
            "expiryEpochMillis": order.expiry_ms,
            "fee": str(signed_fee_rate(order.max_fee_rate)),
            "nonce": str(self._nonces.next()),
            "selfTradeProtectionLevel": order.stp,
        }
        if order.cancel_id is not None:
            body["cancelId"] = order.cancel_id
        return body

    async def place_order(self, order: OrderRequest) -> PlacedOrder:
        try:
            body = self._body(order)
        except (ValueError, KeyError, ArithmeticError) as exc:
            raise OrderBuildFailed(str(exc)) from None  # as NetworkVenue: never sent, tracked

        def place() -> dict[str, Any]:
            rejection = self._runner.faults.order_rejection()
            if rejection == "rest":
                raise SimReject(1006, "Internal Server Error", 400)
            force = ("POST_ONLY_FAILED" if order.post_only else "UNKNOWN") if rejection == "engine" else None
            ack = self._engine.place_order(self._account.id, body, self._now(), force_reject=force)
            return wire.placed_order(ack)

        return parse.parse_placed_order(await self._call(place, write=True))

    async def cancel_order(self, order_id: int) -> None:
        await self._call(
            lambda: self._engine.cancel_order(self._account.id, order_id, self._now()), write=True
        )

    async def cancel_order_by_external_id(self, external_id: str) -> None:
        await self._call(
            lambda: self._engine.cancel_order_by_external_id(self._account.id, external_id, self._now()),
            write=True,
        )

    async def mass_cancel(
        self,
        *,
        order_ids: Sequence[int] = (),
        external_ids: Sequence[str] = (),
        markets: Sequence[str] = (),
        cancel_all: bool = False,
    ) -> None:
        if not (order_ids or external_ids or markets or cancel_all):
            raise OrderRejected(400, "give orderIds, externalOrderIds, markets or cancelAll", 400)
        await self._call(
            lambda: self._engine.mass_cancel(
                self._account.id,
                self._now(),
                order_ids=list(order_ids),
                external_ids=list(external_ids),
                markets=list(markets),
                cancel_all=cancel_all,
            ),
            write=True,
        )

    async def set_dead_mans_switch(self, countdown_s: int) -> None:
        countdown_s = self._runner.faults.dms_countdown_s(countdown_s)
        await self._call(lambda: self._engine.set_dms(self._account.id, countdown_s, self._now()), write=True)

    # -- streams ---------------------------------------------------------------------------------
    @asynccontextmanager
    async def _stream(
        self, kind: StreamKind, market: str | None, *, check_seq: bool
    ) -> AsyncIterator[InProcessStream]:
        if market is not None and market not in self._runner.market_names:
            raise OrderRejected(1001, f"market {market!r} not found", 404)
        if self.latency_s > 0:
            await trio.sleep(self.latency_s)
        account_id = self._account.id if kind == "account" else None
        sub = self._runner.subscribe(
            kind, market=market, account_id=account_id, capacity=self._queue_capacity
        )
        try:
            yield InProcessStream(sub, check_seq=check_seq)
        finally:
            self._runner.unsubscribe(sub)

    @asynccontextmanager
    async def account_stream(self) -> AsyncIterator[InProcessAccountStream]:
        async with self._stream("account", None, check_seq=True) as stream:
            yield InProcessAccountStream(stream)

    # -- health -------------------------------------------------------------------------------------
    def statistics(self) -> VenueStats:
        latency_ms = self.latency_s * 1000.0
        return VenueStats(
            requests=self._requests,
            errors=self._errors,
            rate_limited=self._rate_limited,
            server_errors=self._server_errors,
            latency_p50_ms=latency_ms,
            latency_p99_ms=latency_ms,
            tokens_available=float("inf"),
        )


@asynccontextmanager
async def inprocess_simulator(
    *,
    start_ms: int,
    markets: Sequence[str] | None = None,
    seed: int = 0,
    faults: FaultSpec | str | None = None,
    balance: Decimal | int | str = Decimal(10_000),
    verify_signatures: bool = False,
    latency_s: float = 0.0,
    engine: SimEngine | None = None,
    maker_fee: Decimal | None = None,
    taker_fee: Decimal | None = None,
    ip_rate_limit_per_min: int | None = None,
    flow: str = "default",
) -> AsyncIterator[tuple[InProcessVenue, SimRunner]]:
    """An engine, its runner (running in a nursery) and a funded account's port, for backtests.

    `start_ms` is the simulated epoch at trio time "now"; under `MockClock` the whole
    simulation then runs in virtual time. Signatures are off by default here (speed).
    `ip_rate_limit_per_min` enforces the venue's per-address request budget (off by
    default here: virtual-time backtests and benchmarks drive far more than a minute's
    budget through a port that has no token bucket of its own).
    """
    if engine is None:
        engine = build_engine(
            markets=markets, seed=seed, start_ms=start_ms, verify_signatures=verify_signatures, flow=flow
        )
    spec = parse_faults(faults) if isinstance(faults, str) or faults is None else faults
    info = engine.create_account(balance=balance)
    set_account_fees(engine, info.id, maker_fee, taker_fee)
    runner = SimRunner(engine, faults=spec, seed=seed)
    if ip_rate_limit_per_min:
        runner.ip_budget = AddressBudget(ip_rate_limit_per_min)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        yield InProcessVenue(runner, info, latency_s=latency_s), runner
        nursery.cancel_scope.cancel()
