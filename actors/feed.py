"""Feed: the public streams of one market (order book, funding, mark price; public trades
when the market's model recalibrates online).

Sends raw book and trades frames on to the Book without parsing them; reconnects with the
given backoff on stream failures (and when the Book asks for a resync); reports readiness
only after the first snapshot has arrived and been handed on.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation

import trio
from loguru import logger

from actors.channels import send
from actors.messages import (
    BookFrame,
    FeedControl,
    FeedOut,
    FeedReset,
    FundingRate,
    MarkPrice,
    PublicTrades,
    Resync,
)
from extmm.venue.errors import RECOVERABLE_STREAM_ERRORS as RECOVERABLE
from extmm.venue.port import ExchangePort


class _ResyncRequested(Exception):
    pass


async def feed_actor(
    *,
    port: ExchangePort,
    market: str,
    out: trio.MemorySendChannel[FeedOut],
    control: trio.MemoryReceiveChannel[FeedControl],
    reconnect_delay: Callable[[int], float],
    first_snapshot_timeout_s: float = 30.0,
    side_streams: bool = True,
    trades_stream: bool = False,
    on_reconnect: Callable[[str], None] = lambda topic: None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    ready = trio.Event()

    async def book_loop() -> None:
        failures = 0
        while True:
            try:
                async with port.orderbook_stream(market) as stream:
                    await out.send(FeedReset(reason="connected" if failures == 0 else "reconnected"))
                    while True:
                        msg = await stream.receive()
                        await send(
                            out,
                            BookFrame(
                                type=msg.type,
                                data=msg.data,
                                seq=msg.seq,
                                exchange_ts_ms=msg.ts,
                                received_at=trio.current_time(),
                            ),
                        )
                        if msg.type == "SNAPSHOT":
                            failures = 0
                            ready.set()
                        _check_control(control)
            except _ResyncRequested as exc:
                logger.info("{}: resync requested ({}); reconnecting the book stream", market, exc)
                on_reconnect("orderbook")
                continue
            except RECOVERABLE as exc:
                on_reconnect("orderbook")
                failures += 1
                delay = reconnect_delay(failures)
                logger.warning("{}: book stream failed ({}); reconnect #{} in {:.2f}s", market, exc, failures, delay)
                await out.send(FeedReset(reason=f"stream failed: {type(exc).__name__}"))
                await trio.sleep(delay)

    async def side_loop(kind: str) -> None:
        failures = 0
        opener = {
            "funding": port.funding_stream,
            "mark": port.mark_price_stream,
            "trades": port.public_trades_stream,
        }[kind]
        while True:
            try:
                async with opener(market) as stream:
                    while True:
                        msg = await stream.receive()
                        failures = 0
                        if kind == "trades":  # raw, like book frames: the Book reads the prints
                            parsed: FeedOut | None = PublicTrades(
                                data=msg.data, exchange_ts_ms=msg.ts, received_at=trio.current_time()
                            )
                        else:
                            parsed = _parse_side_message(kind, msg.data, msg.ts)
                        if parsed is not None:
                            await send(out, parsed)
            except RECOVERABLE as exc:
                on_reconnect(kind)
                failures += 1
                delay = reconnect_delay(failures)
                logger.info("{}: {} stream failed ({}); retry in {:.2f}s", market, kind, exc, delay)
                await trio.sleep(delay)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(book_loop)
        if side_streams:
            nursery.start_soon(side_loop, "funding")
            nursery.start_soon(side_loop, "mark")
        if trades_stream:
            nursery.start_soon(side_loop, "trades")
        with trio.fail_after(first_snapshot_timeout_s):
            await ready.wait()
        task_status.started()


def _check_control(control: trio.MemoryReceiveChannel[FeedControl]) -> None:
    while True:
        try:
            msg = control.receive_nowait()
        except trio.WouldBlock:
            return
        match msg:
            case Resync(reason=reason):
                raise _ResyncRequested(reason)


def _parse_side_message(kind: str, data: object, ts: int) -> FeedOut | None:
    """Funding `{m, T, f}` and mark `{m, p, ts}` payloads; None (logged) when malformed."""
    try:
        if not isinstance(data, dict):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        if kind == "funding":
            return FundingRate(rate=float(Decimal(str(data["f"]))), exchange_ts_ms=int(data.get("T") or ts))
        return MarkPrice(price=Decimal(str(data["p"])), exchange_ts_ms=int(data.get("ts") or ts))
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        logger.warning("malformed {} frame skipped: {}", kind, exc)
        return None
