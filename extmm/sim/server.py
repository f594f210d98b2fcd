"""The simulator's HTTP + WebSocket server: a Starlette app served by hypercorn's trio worker.

Why this stack: hypercorn runs natively on trio (no asyncio bridge), serves HTTP/1.1 and
WebSockets on one port and sends protocol pings itself (`websocket_ping_interval`, the
venue's 15 s); Starlette is a small, well-kept ASGI framework whose routing and
WebSocket denial responses cover what the venue's surface needs. Routes live in
`http_api` (REST, SPEC §2–§4) and `ws_api` (stream v1, SPEC §5).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from extmm.sim import http_api, ws_api
from extmm.sim.runner import SimRunner

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
