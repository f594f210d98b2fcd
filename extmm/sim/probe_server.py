"""The probe simulator on a socket: the simulator's app wrapped in taps that stamp order
requests and book frames for `extmm.sim.probe.LatencyProbe`, plus its control routes
under /probe (start, stop, latency).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import attrs
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, Router

from extmm.sim.http_api import REST_PREFIX
from extmm.sim.probe import Clock, LatencyProbe, build_probe_engine, monotonic_clock
from extmm.sim.probe_track import ProbeSettings
from extmm.sim.runner import SimRunner
from extmm.sim.server import SimHandle, build_app, serve_app
from extmm.sim.signing import KeyPair
from extmm.sim.ws_api import STREAM_PREFIX

PROBE_PREFIX = "/probe"
ORDER_PATH = REST_PREFIX + "/user/order"
BOOK_PREFIX = STREAM_PREFIX + "/orderbooks/"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- ASGI taps and control routes ------------------------------------------------------------------


def _seq_of(text: str) -> int | None:
    """The envelope's `seq` (the runner writes it last: `…,"seq":N}`) without parsing the frame."""
    at = text.rfind('"seq":')
    if at < 0 or not text.endswith("}"):
        return None
    try:
        return int(text[at + 6 : -1])
    except ValueError:
        return None


class ProbeTaps:
    """ASGI middleware around the simulator app: stamps order requests once complete and book
    frames as they are handed to the socket, and serves the probe's own routes under /probe."""

    def __init__(self, app: App, probe: LatencyProbe) -> None:
        self.app = app
        self.probe = probe
        self.routes = Router(
            routes=[
                Route(PROBE_PREFIX + "/start", self._start, methods=["POST"]),
                Route(PROBE_PREFIX + "/stop", self._stop, methods=["POST"]),
                Route(PROBE_PREFIX + "/latency", self._latency, methods=["GET"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path.startswith(PROBE_PREFIX + "/"):
                await self.routes(scope, receive, send)
                return
            if path == ORDER_PATH and scope["method"] == "POST":
                receive = self._order_tap(receive)
        elif scope["type"] == "websocket" and scope["path"].startswith(BOOK_PREFIX):
            send = self._frame_tap(send, unquote(scope["path"][len(BOOK_PREFIX) :]))
        await self.app(scope, receive, send)

    def _order_tap(self, receive: Receive) -> Receive:
        chunks: list[bytes] = []

        async def tapped() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    # The whole request is here (a body can trail its headers): stamp now,
                    # before the handler parses it or checks its signature.
                    self.probe.on_order(b"".join(chunks), self.probe.clock())
            return message

        return tapped

    def _frame_tap(self, send: Send, market: str) -> Send:
        async def tapped(message: Message) -> None:
            if message["type"] == "websocket.send" and message.get("text"):
                self.probe.on_frame_written(market, _seq_of(message["text"]), self.probe.clock())
            await send(message)

        return tapped

    async def _start(self, request: Request) -> JSONResponse:
        self.probe.start()
        return JSONResponse({"state": self.probe.state})

    async def _stop(self, request: Request) -> JSONResponse:
        self.probe.stop()
        return JSONResponse({"state": self.probe.state})

    async def _latency(self, request: Request) -> JSONResponse:
        if request.query_params.get("samples") == "0":
            report = self.probe.report()
            report["samples"] = []
            return JSONResponse(report)
        return JSONResponse(self.probe.report())


# -- serving ---------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ProbeHandle:
    sim: SimHandle
    probe: LatencyProbe
    probe_url: str

    def announcement(self) -> dict[str, Any]:
        """The first stdout line of `python -m extmm sim probe` (paper credentials on purpose)."""
        return {
            **self.sim.announcement(),
            "probe": self.probe_url,
            "markets": sorted(self.sim.engine.market_names()),
        }


async def serve_probe_simulator(
    *,
    markets: int,
    settings: ProbeSettings,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
    verify_signatures: bool = True,
    api_key: str | None = None,
    private_key: int | None = None,
    balance: Decimal | int | str = Decimal(100_000),
    start_ms: int | None = None,
    clock: Clock = monotonic_clock,
    task_status: trio.TaskStatus[ProbeHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a probe simulator on `host:port` until cancelled; `started` hands back a ProbeHandle."""
    if start_ms is None:
        start_ms = int(time.time() * 1000)  # order expiries are wall-clock epoch times
    engine = build_probe_engine(markets, seed=seed, start_ms=start_ms, verify_signatures=verify_signatures)
    info = engine.create_account(
        balance=balance,
        api_key=api_key,
        key_pair=KeyPair.from_private(private_key) if private_key is not None else None,
    )
    runner = SimRunner(engine, seed=seed)
    probe = LatencyProbe(settings, clock=clock)
    probe.attach(engine, runner, info.id)
    app = ProbeTaps(build_app(runner), probe)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await nursery.start(probe.run)
        bound_host, bound_port = await nursery.start(serve_app, app, host, port, 15.0)
        sim = SimHandle.listening(bound_host, bound_port, info=info, engine=engine, runner=runner)
        probe_url = sim.rest_url.removesuffix(REST_PREFIX) + PROBE_PREFIX
        task_status.started(ProbeHandle(sim=sim, probe=probe, probe_url=probe_url))
