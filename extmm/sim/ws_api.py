"""Stream v1 WebSocket endpoints of the simulator (SPEC §5): one connection per topic.

Each connection gets a `Subscription` from the runner (bounded frame queue, its own
`seq`); this module only checks the handshake and copies frames to the socket. A client
too slow to keep up overflows its queue and is disconnected (close code 1008), as a real
venue would do; it never makes the simulator buffer without bound. Keep-alive pings
(every 15 s) are WebSocket ping frames sent by hypercorn itself
(`Config.websocket_ping_interval`): ASGI has no message for a protocol ping.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from loguru import logger
from starlette.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from extmm.sim.model import SimReject
from extmm.sim.runner import SimRunner
from extmm.sim.subscription import StreamKind, Subscription

STREAM_PREFIX = "/stream.extended.exchange/v1"
SEND_TIMEOUT_S = 5.0


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "ERROR", "error": {"code": code, "message": message}}, status_code=status)


async def _deny(websocket: WebSocket, status: int, code: int, message: str) -> None:
    await websocket.send_denial_response(_error(status, code, message))


async def _serve(websocket: WebSocket, runner: SimRunner, subscription: Subscription) -> None:
    """Copy the subscription's frames to the socket until either side ends."""
    await websocket.accept()
    client_gone = False
    try:
        async with trio.open_nursery() as nursery:
            # The client sends nothing on v1; reading still matters: it notices a
            # disconnect at once instead of at the next send.
            nursery.start_soon(_watch_client, websocket, nursery.cancel_scope)
            await _send_frames(websocket, subscription)
            nursery.cancel_scope.cancel()
        client_gone = nursery.cancel_scope.cancelled_caught and not subscription.closed
    except* (WebSocketDisconnect, OSError, RuntimeError) as group:
        # RuntimeError: Starlette refusing to send once the peer's close has been seen.
        client_gone = True
        logger.debug("stream {} ended by the client: {!r}", subscription.describe(), group.exceptions)
    finally:
        runner.unsubscribe(subscription)
    if client_gone:
        return
    code, reason = subscription.close_code or 1000, subscription.close_reason
    try:
        await websocket.close(code=code, reason=reason)
    except (OSError, RuntimeError):
        pass


async def _send_frames(websocket: WebSocket, subscription: Subscription) -> None:
    with subscription.cancel_scope:
        async for frame in subscription.frames:
            delay = frame.due - trio.current_time()
            if delay > 0:
                await trio.sleep(delay)
            if subscription.closed:
                return  # dropped: queued frames are not delivered any more
            # A frame goes out whole or the connection is given up: cancelling in the middle
            # of a frame would leave garbage on the wire before the close frame.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + SEND_TIMEOUT_S) as send:
                await websocket.send_text(frame.text)
            if send.cancelled_caught:
                subscription.close(1008, "send timed out: client not reading")
                return


async def _watch_client(websocket: WebSocket, cancel_scope: trio.CancelScope) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            cancel_scope.cancel()
            return


def _public_endpoint(kind: StreamKind) -> Callable[[WebSocket], Awaitable[None]]:
    async def endpoint(websocket: WebSocket) -> None:
        runner: SimRunner = websocket.app.state.runner
        if not websocket.headers.get("user-agent"):
            await _deny(websocket, 400, 400, "User-Agent header is required")
            return
        market = websocket.path_params.get("market")
        if market is not None and market not in runner.market_names:
            await _deny(websocket, 404, 1001, f"market {market} not found")
            return
        depth = websocket.query_params.get("depth")
        if kind == "orderbook" and depth not in (None, "1"):
            await _deny(websocket, 400, 400, "depth must be 1 or absent")
            return
        subscription = runner.subscribe(kind, market=market, depth_one=depth == "1")
        await _serve(websocket, runner, subscription)

    endpoint.__name__ = f"stream_{kind}"
    return endpoint


async def _account_endpoint(websocket: WebSocket) -> None:
    runner: SimRunner = websocket.app.state.runner
    if not websocket.headers.get("user-agent"):
        await _deny(websocket, 400, 400, "User-Agent header is required")
        return
    try:
        account = runner.authenticate(websocket.headers.get("x-api-key"))
    except SimReject as exc:
        await _deny(websocket, exc.http_status, exc.code, exc.message)
        return
    subscription = runner.subscribe("account", account_id=account.id)
    await _serve(websocket, runner, subscription)


def routes() -> list[WebSocketRoute]:
    p = STREAM_PREFIX
    return [
        WebSocketRoute(f"{p}/orderbooks", _public_endpoint("orderbook")),
        WebSocketRoute(f"{p}/orderbooks/{{market}}", _public_endpoint("orderbook")),
        WebSocketRoute(f"{p}/publicTrades", _public_endpoint("trades")),
        WebSocketRoute(f"{p}/publicTrades/{{market}}", _public_endpoint("trades")),
        WebSocketRoute(f"{p}/funding", _public_endpoint("funding")),
        WebSocketRoute(f"{p}/funding/{{market}}", _public_endpoint("funding")),
        WebSocketRoute(f"{p}/prices/mark", _public_endpoint("mark")),
        WebSocketRoute(f"{p}/prices/mark/{{market}}", _public_endpoint("mark")),
        WebSocketRoute(f"{p}/prices/index", _public_endpoint("index")),
        WebSocketRoute(f"{p}/prices/index/{{market}}", _public_endpoint("index")),
        WebSocketRoute(f"{p}/account", _account_endpoint),
    ]
