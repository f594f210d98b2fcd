"""REST surface of the simulator under `/api/v1` (SPEC §2–§4): paths, envelopes, status codes.

Every handler goes through `endpoint`, which applies the venue's conventions in order:
`User-Agent` required (400 without it, a choice: DOC26 calls it mandatory but does not
say how it refuses), injected latency and 429/5xx faults, then `X-Api-Key` on `/user/*`
(401, empty key or unknown). Engine refusals (`SimReject`) become
`{"status":"ERROR","error":{"code":…,"message":…}}` with the engine's HTTP status; a bug
becomes 500 with code 1006, like the venue's own "Internal Server Error" body.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import trio
from loguru import logger
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from extmm.sim import wire
from extmm.sim.engine import UNCHECKED
from extmm.sim.model import AccountInfo, SimReject
from extmm.sim.runner import SimRunner
from extmm.sim.validation import parse_mass_cancel

REST_PREFIX = "/api/v1"
MAX_PAGE = 10_000

Handler = Callable[[Request, SimRunner, AccountInfo | None], Awaitable[Any]]


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")), status_code=status, media_type="application/json"
    )


def error_response(http_status: int, code: int, message: str) -> Response:
    return json_response(wire.error(code, message), http_status)


def _bad_request(message: str) -> SimReject:
    return SimReject(400, message, 400)


def endpoint(fn: Handler, *, private: bool = False) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        runner: SimRunner = request.app.state.runner
        if not request.headers.get("user-agent"):
            return error_response(400, 400, "User-Agent header is required")
        budget = runner.ip_budget
        if budget is not None:
            # SPEC §7: one budget per client address, whatever the key or endpoint.
            address = request.client.host if request.client is not None else "?"
            wait = budget.admit(address, trio.current_time())
            if wait is not None:
                response = error_response(429, 429, "Rate limit exceeded")
                response.headers["Retry-After"] = str(max(int(wait + 0.999), 1))
                return response
        faults = runner.faults
        latency = faults.rest_latency_s()
        if latency > 0:
            await trio.sleep(latency)
        fault = faults.rest_fault()
        if fault is not None and not fault.apply_anyway:
            return json_response(fault.body(), fault.http_status)
        try:
            account = runner.authenticate(request.headers.get("x-api-key")) if private else None
            result = await fn(request, runner, account)
            response = result if isinstance(result, Response) else json_response(result)
        except SimReject as exc:
            response = error_response(exc.http_status, exc.code, exc.message)
        except Exception:
            logger.exception("simulator: {} {} failed", request.method, request.url.path)
            response = error_response(500, 1006, "Internal Server Error")
        finally:
            # Account updates caused by this request go out now, not at the next tick.
            runner.pump()
        if fault is not None:
            return json_response(fault.body(), fault.http_status)
        return response

    handle.__name__ = fn.__name__
    return handle


# -- query helpers -------------------------------------------------------------------------------


def _int_param(
    request: Request, name: str, *, required: bool = False, minimum: int | None = None
) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if required:
            raise _bad_request(f"query parameter {name} is required")
        return None
    try:
        value = int(raw)
    except ValueError:
        raise _bad_request(f"query parameter {name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise _bad_request(f"query parameter {name} must be ≥ {minimum}")
    return value


def _markets_param(request: Request, runner: SimRunner) -> list[str] | None:
    names = request.query_params.getlist("market")
    return names or None


def _path_market(request: Request, runner: SimRunner) -> str:
    name: str = request.path_params["market"]
    if name not in runner.market_names:
        raise SimReject(1001, f"market {name!r} not found", 404)
    return name


def _path_id(request: Request, name: str) -> int:
    raw = request.path_params[name]
    try:
        return int(raw)
    except ValueError:
        raise _bad_request(f"{name} must be an integer, got {raw!r}") from None


def _paginate(request: Request, items: Sequence[dict[str, Any]], default_limit: int = 100) -> dict[str, Any]:
    """Cursor pagination of SPEC §2.4 over items sorted by id descending."""
    cursor = _int_param(request, "cursor")
    limit = _int_param(request, "limit", minimum=1) or default_limit
    limit = min(limit, MAX_PAGE)
    if cursor is not None:
        items = [item for item in items if item["id"] < cursor]
    page = list(items[:limit])
    pagination = {"cursor": page[-1]["id"] if page else (cursor or 0), "count": len(page)}
    return wire.ok(page, pagination=pagination)


def _filter(items: list[dict[str, Any]], request: Request, *keys: str) -> list[dict[str, Any]]:
    for key in keys:
        wanted = request.query_params.getlist(key)
        if wanted:
            items = [item for item in items if str(item.get(key)) in wanted]
    return items


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad_request("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad_request("request body must be a JSON object")
    return body


# -- public ----------------------------------------------------------------------------------------


async def get_markets(request: Request, runner: SimRunner, _: AccountInfo | None) -> dict[str, Any]:
    engine = runner.engine
    wanted = _markets_param(request, runner)
    names = [n for n in engine.market_names() if wanted is None or n in wanted]
    return wire.ok([wire.market(engine.market_object(n), engine.market_stats(n)) for n in names])


async def get_market_stats(request: Request, runner: SimRunner, _: AccountInfo | None) -> dict[str, Any]:
    return wire.ok(wire.market_stats(runner.engine.market_stats(_path_market(request, runner))))


async def get_orderbook(request: Request, runner: SimRunner, _: AccountInfo | None) -> dict[str, Any]:
    market = _path_market(request, runner)
    return wire.ok(wire.orderbook_rest(runner.engine.book_snapshot(market)))


async def get_public_trades(request: Request, runner: SimRunner, _: AccountInfo | None) -> dict[str, Any]:
    market = _path_market(request, runner)
    limit = _int_param(request, "limit", minimum=1) or 50
    trades = runner.engine.public_trades(market, limit=min(limit, 1000))
    return wire.ok(wire.public_trades(reversed(trades)))  # newest first, like every list


async def get_starknet_domain(request: Request, runner: SimRunner, _: AccountInfo | None) -> dict[str, Any]:
    return wire.ok(wire.starknet_domain(runner.engine.domain))


async def get_funding_rates(request: Request, runner: SimRunner, _: AccountInfo | None) -> dict[str, Any]:
    market = _path_market(request, runner)
    start = _int_param(request, "startTime", required=True, minimum=0)
    end = _int_param(request, "endTime", required=True, minimum=0)
    points = runner.engine.funding_rates(market, start_ms=start or 0, end_ms=end)
    cursor = _int_param(request, "cursor")
    limit = min(_int_param(request, "limit", minimum=1) or MAX_PAGE, MAX_PAGE)
    if cursor is not None:
        points = [p for p in points if p.ts < cursor]
    page = points[:limit]
    pagination = {"cursor": page[-1].ts if page else (cursor or 0), "count": len(page)}
    return wire.ok([wire.funding_rate(p) for p in page], pagination=pagination)


# -- private reads -----------------------------------------------------------------------------------


async def get_account_info(
    request: Request, runner: SimRunner, account: AccountInfo | None
) -> dict[str, Any]:
    assert account is not None
    return wire.ok(wire.account_info(account))


async def get_balance(request: Request, runner: SimRunner, account: AccountInfo | None) -> dict[str, Any]:
    assert account is not None
    balance = runner.engine.balance(account.id)
    if balance.balance == 0 and balance.equity == 0:
        raise SimReject(404, "balance not found", 404)  # DOC26: 404 when the balance is 0
    return wire.ok(wire.balance(balance))


async def get_positions(request: Request, runner: SimRunner, account: AccountInfo | None) -> dict[str, Any]:
    assert account is not None
    items = [wire.position(p) for p in runner.engine.positions(account.id)]
    return wire.ok(_filter(items, request, "market", "side"))


async def get_open_orders(request: Request, runner: SimRunner, account: AccountInfo | None) -> dict[str, Any]:
    assert account is not None
    items = [wire.order(o) for o in runner.engine.open_orders(account.id)]
    items.sort(key=lambda o: o["id"], reverse=True)
    return wire.ok(_filter(items, request, "market", "type", "side"))


async def get_order(request: Request, runner: SimRunner, account: AccountInfo | None) -> dict[str, Any]:
    assert account is not None
    return wire.ok(wire.order(runner.engine.get_order(account.id, _path_id(request, "order_id"))))


async def get_orders_by_external_id(
    request: Request, runner: SimRunner, account: AccountInfo | None
) -> dict[str, Any]:
    assert account is not None
    orders = runner.engine.orders_by_external_id(account.id, request.path_params["external_id"])
    return wire.ok([wire.order(o) for o in orders])


async def get_order_history(
    request: Request, runner: SimRunner, account: AccountInfo | None
) -> dict[str, Any]:
    assert account is not None
    items = [wire.order(o) for o in runner.engine.order_history(account.id)]
    if request.query_params.get("sort", "ID") != "UPDATED_AT":
        items.sort(key=lambda o: o["id"], reverse=True)
    items = _filter(items, request, "market", "type", "side", "id", "externalId")
    return _paginate(request, items)


async def get_trades(request: Request, runner: SimRunner, account: AccountInfo | None) -> dict[str, Any]:
    assert account is not None
    items = [wire.trade(t) for t in runner.engine.trades(account.id)]
    items = _filter(items, request, "market", "side")
    wanted_types = request.query_params.getlist("type")
    if wanted_types:
        items = [t for t in items if t["tradeType"] in wanted_types]
    return _paginate(request, items)


async def get_fees(request: Request, runner: SimRunner, account: AccountInfo | None) -> dict[str, Any]:
    assert account is not None
    wanted = _markets_param(request, runner)
    return wire.ok([wire.fee(f) for f in runner.engine.fees(account.id, wanted)])


async def get_funding_history(
    request: Request, runner: SimRunner, account: AccountInfo | None
) -> dict[str, Any]:
    assert account is not None
    items = [wire.funding_payment(f) for f in runner.engine.funding_payments(account.id)]
    items = _filter(items, request, "market", "side")
    since = _int_param(request, "fromTime")
    if since is not None:
        items = [f for f in items if f["paidTime"] >= since]
    return _paginate(request, items)


async def get_leverage(request: Request, runner: SimRunner, account: AccountInfo | None) -> dict[str, Any]:
    assert account is not None
    wanted = _markets_param(request, runner)
    rows = runner.engine.leverage(account.id)
    return wire.ok([wire.leverage(m, lev) for m, lev in rows if wanted is None or m in wanted])


# -- private writes --------------------------------------------------------------------------------


async def place_order(request: Request, runner: SimRunner, account: AccountInfo | None) -> dict[str, Any]:
    assert account is not None
    body = await _json_body(request)
    rejection = runner.faults.order_rejection()
    if rejection == "rest":
        raise SimReject(1006, "Internal Server Error", 400)
    force = None
    if rejection == "engine":
        force = "POST_ONLY_FAILED" if body.get("postOnly") is True else "UNKNOWN"
    engine = runner.engine
    verdict: object = UNCHECKED
    if engine.config.verify_signatures:
        # The Stark check (≈ 0.5 ms) releases the GIL: run it off the event loop, which
        # meanwhile reads other requests and writes stream frames.
        verdict = await trio.to_thread.run_sync(engine.check_signature, account.id, body)
    ack = engine.place_order(account.id, body, runner.now_ms(), force_reject=force, signature=verdict)
    return wire.ok(wire.placed_order(ack))


async def cancel_order(request: Request, runner: SimRunner, account: AccountInfo | None) -> dict[str, Any]:
    assert account is not None
    runner.engine.cancel_order(account.id, _path_id(request, "order_id"), runner.now_ms())
    return wire.ok()


async def cancel_order_by_external_id(
    request: Request, runner: SimRunner, account: AccountInfo | None
) -> dict[str, Any]:
    assert account is not None
    external_id = request.query_params.get("externalId")
    if not external_id:
        raise _bad_request("query parameter externalId is required")
    runner.engine.cancel_order_by_external_id(account.id, external_id, runner.now_ms())
    return wire.ok()


async def mass_cancel(request: Request, runner: SimRunner, account: AccountInfo | None) -> dict[str, Any]:
    assert account is not None
    selection = parse_mass_cancel(await _json_body(request))
    unknown = [m for m in selection["markets"] if m not in runner.market_names]
    if unknown:
        raise SimReject(1001, f"market {unknown[0]!r} not found", 400)
    runner.engine.mass_cancel(account.id, runner.now_ms(), **selection)
    return wire.ok()


async def dead_mans_switch(
    request: Request, runner: SimRunner, account: AccountInfo | None
) -> dict[str, Any]:
    assert account is not None
    countdown = _int_param(request, "countdownTime", required=True, minimum=0)
    assert countdown is not None
    countdown = runner.faults.dms_countdown_s(countdown)
    runner.engine.set_dms(account.id, countdown, runner.now_ms())
    return wire.ok()


async def set_leverage(request: Request, runner: SimRunner, account: AccountInfo | None) -> dict[str, Any]:
    assert account is not None
    body = await _json_body(request)
    market = body.get("market")
    if not isinstance(market, str):
        raise _bad_request("market is required")
    try:
        leverage = Decimal(str(body.get("leverage")))
    except InvalidOperation:
        raise _bad_request("leverage must be a number") from None
    runner.engine.set_leverage(account.id, market, leverage, runner.now_ms())
    return wire.ok(wire.leverage(market, leverage))


def routes() -> list[Route]:
    p = REST_PREFIX

    def public(path: str, fn: Handler, methods: tuple[str, ...] = ("GET",)) -> Route:
        return Route(p + path, endpoint(fn), methods=list(methods))

    def private(path: str, fn: Handler, methods: tuple[str, ...] = ("GET",)) -> Route:
        return Route(p + path, endpoint(fn, private=True), methods=list(methods))

    return [
        public("/info/markets", get_markets),
        public("/info/markets/{market}/stats", get_market_stats),
        public("/info/markets/{market}/orderbook", get_orderbook),
        public("/info/markets/{market}/trades", get_public_trades),
        public("/info/starknet", get_starknet_domain),
        public("/info/{market}/funding", get_funding_rates),
        private("/user/account/info", get_account_info),
        private("/user/balance", get_balance),
        private("/user/positions", get_positions),
        private("/user/orders", get_open_orders),
        private("/user/orders/history", get_order_history),
        private("/user/orders/external/{external_id}", get_orders_by_external_id),
        private("/user/orders/{order_id}", get_order),
        private("/user/trades", get_trades),
        private("/user/fees", get_fees),
        private("/user/funding/history", get_funding_history),
        private("/user/leverage", get_leverage),
        private("/user/leverage", set_leverage, ("PATCH",)),
        private("/user/order", place_order, ("POST",)),
        private("/user/order", cancel_order_by_external_id, ("DELETE",)),
        private("/user/order/massCancel", mass_cancel, ("POST",)),
        private("/user/order/{order_id}", cancel_order, ("DELETE",)),
        private("/user/deadmanswitch", dead_mans_switch, ("POST",)),
    ]
