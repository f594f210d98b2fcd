"""The simulator's HTTP + WebSocket server: a Starlette app served by hypercorn's trio worker.

Why this stack: hypercorn runs natively on trio (no asyncio bridge), serves HTTP/1.1 and
WebSockets on one port and sends protocol pings itself (`websocket_ping_interval`, the
venue's 15 s); Starlette is a small, well-kept ASGI framework whose routing and
WebSocket denial responses cover what the venue's surface needs. Routes live in
`http_api` (REST, SPEC §2–§4) and `ws_api` (stream v1, SPEC §5). `serve_simulator`
starts engine, runner and server on a socket and hands back a `SimHandle`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from loguru import logger
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from extmm.sim import http_api, ws_api
from extmm.sim.engine import SimEngine
from extmm.sim.faults import FaultController, FaultSpec, parse_faults
from extmm.sim.http_api import REST_PREFIX
from extmm.sim.launch import SimCredentials, build_engine, set_account_fees
from extmm.sim.model import AccountInfo
from extmm.sim.ratebudget import DEFAULT_IP_RATE_LIMIT_PER_MIN, AddressBudget
from extmm.sim.runner import SimRunner
from extmm.sim.signing import KeyPair
from extmm.sim.ws_api import STREAM_PREFIX

_hypercorn_log = logging.getLogger("extmm.sim.hypercorn")
_hypercorn_log.setLevel(logging.WARNING)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown path or method: the venue's error envelope instead of Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    return http_api.error_response(exc.status_code, exc.status_code, str(exc.detail))


def build_app(runner: SimRunner) -> Starlette:
    app = Starlette(
        routes=[*http_api.routes(), *ws_api.routes()],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.runner = runner
    return app


def hypercorn_config(host: str, port: int, ping_interval_s: float | None) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.websocket_ping_interval = ping_interval_s
    config.accesslog = None
    config.errorlog = _hypercorn_log
    config.graceful_timeout = 1.0
    return config


async def serve_app(
    app: Starlette,
    host: str,
    port: int,
    ping_interval_s: float | None = 15.0,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until cancelled; `task_status.started((host, port))` with the bound port."""
    config = hypercorn_config(host, port, ping_interval_s)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve, app, config)
        bound = urlsplit(binds[0])
        assert bound.hostname is not None and bound.port is not None
        task_status.started((bound.hostname, bound.port))


# -- the simulator on a socket ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SimHandle:
    """Where a running simulator listens and how to reach into it (tests, the `sim` command)."""

    host: str
    port: int
    rest_url: str
    stream_url: str
    account: SimCredentials
    engine: SimEngine
    runner: SimRunner
    faults: FaultController

    @classmethod
    def listening(
        cls, host: str, port: int, *, info: AccountInfo, engine: SimEngine, runner: SimRunner
    ) -> SimHandle:
        """The handle of a simulator whose app now listens on `host:port`."""
        url_host = f"[{host}]" if ":" in host else host
        return cls(
            host=host,
            port=port,
            rest_url=f"http://{url_host}:{port}{REST_PREFIX}",
            stream_url=f"ws://{url_host}:{port}{STREAM_PREFIX}",
            account=SimCredentials.of(info),
            engine=engine,
            runner=runner,
            faults=runner.faults,
        )

    def announcement(self) -> dict[str, Any]:
        """The `sim` command's first stdout line (paper credentials included on purpose)."""
        return {"rest": self.rest_url, "stream": self.stream_url, "account": self.account.as_dict()}


async def serve_simulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    markets: Sequence[str] | None = None,
    seed: int = 0,
    faults: FaultSpec | str | None = None,
    api_key: str | None = None,
    vault: int | None = None,
    private_key: int | None = None,
    balance: Decimal | int | str = Decimal(10_000),
    verify_signatures: bool = True,
    strict_nonce: bool = False,
    engine: SimEngine | None = None,
    start_ms: int | None = None,
    ping_interval_s: float | None = 15.0,
    tick_s: float = 0.05,
    book_interval_s: float = 0.1,
    snapshot_interval_s: float = 60.0,
    heartbeat_s: float = 1.0,
    queue_capacity: int = 256,
    maker_fee: Decimal | None = None,
    taker_fee: Decimal | None = None,
    ip_rate_limit_per_min: int | None = DEFAULT_IP_RATE_LIMIT_PER_MIN,
    flow: str = "default",
    task_status: trio.TaskStatus[SimHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a simulator on `host:port` (0: a free port) until cancelled.

    `task_status.started` hands back a `SimHandle` once the socket listens. The engine
    starts at `start_ms` (default: the wall clock, read once here, because order expiries
    are wall-clock epoch times); pass `engine` to serve one built by the caller. A funded
    account is created from `api_key`/`vault`/`private_key` (missing ones generated).
    `maker_fee`/`taker_fee` set that account's rates (`/user/fees`; a negative maker rate
    is a rebate). `ip_rate_limit_per_min`: the request budget per client address shared
    by every key (SPEC §7; None: unlimited).
    """
    if start_ms is None:
        start_ms = int(time.time() * 1000)
    if engine is None:
        engine = build_engine(
            markets=markets,
            seed=seed,
            start_ms=start_ms,
            verify_signatures=verify_signatures,
            strict_nonce=strict_nonce,
            flow=flow,
        )
    spec = parse_faults(faults) if isinstance(faults, str) or faults is None else faults
    info = engine.create_account(
        balance=balance,
        api_key=api_key,
        key_pair=KeyPair.from_private(private_key) if private_key is not None else None,
        vault=vault,
    )
    set_account_fees(engine, info.id, maker_fee, taker_fee)
    runner = SimRunner(
        engine,
        faults=spec,
        seed=seed,
        tick_s=tick_s,
        book_interval_s=book_interval_s,
        snapshot_interval_s=snapshot_interval_s,
        heartbeat_s=heartbeat_s,
        queue_capacity=queue_capacity,
    )
    runner.ip_budget = AddressBudget(ip_rate_limit_per_min) if ip_rate_limit_per_min else None
    app = build_app(runner)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        bound_host, bound_port = await nursery.start(serve_app, app, host, port, ping_interval_s)
        handle = SimHandle.listening(bound_host, bound_port, info=info, engine=engine, runner=runner)
        logger.info(
            "simulator listening on {}:{} (markets {})", bound_host, bound_port, sorted(runner.market_names)
        )
        task_status.started(handle)
