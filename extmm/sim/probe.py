"""Probe mode of the simulator: deterministic book moves that time a bot's tick-to-wire path.

`python -m extmm.sim.probe` serves synthetic markets (copies of BTC-USD named P1-USD, P2-USD …)
whose crowd book has no noise and no takers. Once started (`POST /probe/start`) it learns
where the bot quotes relative to the mid, then moves each market's mid along a fixed grid
at a fixed rate; it stamps when each moving book frame is written to a stream socket and
when each order request has fully arrived (before parsing or signature checks), and pairs
them by price. `GET /probe/latency` returns the samples (`python -m extmm bench latency`).
"""

from __future__ import annotations

import argparse
import copy
import json
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any
from urllib.parse import unquote

import attrs
import orjson
import trio
from loguru import logger
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, Router

from extmm.domain.units import MarketSpec, Rounding, Side
from extmm.markets import bundled_markets
from extmm.ops.gctune import settle_heap
from extmm.sim.engine import EngineConfig, SimEngine
from extmm.sim.flow import FlowParams
from extmm.sim.http_api import REST_PREFIX
from extmm.sim.runner import SimRunner
from extmm.sim.server import SimHandle
from extmm.sim.signing import STARK_EC_ORDER, KeyPair
from extmm.sim.ws_api import STREAM_PREFIX

PROBE_PREFIX = "/probe"
ORDER_PATH = REST_PREFIX + "/user/order"
BOOK_PREFIX = STREAM_PREFIX + "/orderbooks/"
TEMPLATE_MARKET = "BTC-USD"
MAX_SAMPLES = 500_000  # about 40 minutes of 4 markets × 50 updates/s × 2 sides

Clock = Callable[[], float]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def monotonic_clock() -> float:
    """CLOCK_MONOTONIC: one axis for every process on the machine, so a bench running the
    bot elsewhere can place its own stamps next to the probe's."""
    return time.monotonic()


def process_cpu_s() -> float:
    """CPU seconds (user + system) this process has used: how busy the simulator was."""
    return time.process_time()


# -- markets ---------------------------------------------------------------------------------------


def probe_market_names(count: int) -> list[str]:
    if count < 1:
        raise ValueError("the probe needs at least one market")
    return [f"P{i}-USD" for i in range(1, count + 1)]


def probe_market_objects(count: int) -> list[dict[str, Any]]:
    """Copies of the bundled BTC-USD market object, each with its own name and synthetic id."""
    template = bundled_markets()[TEMPLATE_MARKET]
    out = []
    for name in probe_market_names(count):
        asset = name.split("-")[0]
        market = copy.deepcopy(template)
        market.update(name=name, uiName=name, assetName=asset, description=f"latency probe {asset}")
        # Like BTC's "BTC-6" padded to 15 bytes: the id only has to differ between markets.
        market["l2Config"]["syntheticId"] = "0x" + f"{asset}-6".encode().hex().ljust(30, "0")
        out.append(market)
    return out


def probe_flow(market: dict[str, Any], depth_levels: int = 100) -> FlowParams:
    """A still crowd: no diffusion, no takers, no mark noise, no funding; only the probe moves it."""
    return FlowParams.for_market(
        market,
        sigma=0.0,
        taker_rate=0.0,
        mark_noise_bps=0.0,
        funding_mean=0.0,
        funding_noise=0.0,
        size_jitter=0.0,
        depth_levels=depth_levels,
    )


def build_probe_engine(
    count: int, *, seed: int = 0, start_ms: int, verify_signatures: bool = True
) -> SimEngine:
    markets = probe_market_objects(count)
    config = EngineConfig(
        seed=seed,
        verify_signatures=verify_signatures,
        strict_nonce=False,  # the SDK draws nonces beyond DOC26's 2^31 (see build_engine)
        flow_params={m["name"]: probe_flow(m) for m in markets},
    )
    return SimEngine(config, start_ms=start_ms, markets=markets)


def _move_mid(engine: SimEngine, market: str, mid_ticks: int) -> None:
    # The probe sets the market's flow mid and lets the crowd re-place itself around it at
    # once, as the engine's own flow step does.
    m = engine.world.market(market)
    assert m.flow is not None
    m.flow.mid = mid_ticks * m.flow.tick
    engine.crowd.refresh(m)


# -- the mid path ----------------------------------------------------------------------------------


def grid_cycle(levels: int) -> list[int]:
    """One cycle of grid positions: up by 2 to 2·levels, then down by 2 through the odd ones.

    Every position occurs once per cycle, so within a cycle a price names its frame, and
    consecutive positions are at most 2 apart, so a move never jumps across a resting quote
    that is more than two steps from the mid (the crowd would trade with it).
    """
    if levels < 1:
        raise ValueError("levels must be ≥ 1")
    return list(range(0, 2 * levels + 1, 2)) + list(range(2 * levels - 1, 0, -2))


@attrs.frozen(kw_only=True)
class ProbeSettings:
    """rate_hz: mid moves per second per market. step_ticks: grid spacing; one move is one
    or two steps. levels: the mid rises 2·levels steps and comes back (one cycle). settle_s:
    how long the bot's quotes must stay unchanged before their offsets from the mid count
    as learnt. calibrate_timeout_s: give up on a market that has not quoted by then."""

    rate_hz: float = 50.0
    step_ticks: int = 6
    levels: int = 50
    settle_s: float = 0.3
    calibrate_timeout_s: float = 30.0

    def __attrs_post_init__(self) -> None:
        if not self.rate_hz > 0 or self.step_ticks < 3 or self.levels < 1 or self.settle_s < 0:
            raise ValueError("ProbeSettings: need rate_hz > 0, step_ticks ≥ 3, levels ≥ 1, settle_s ≥ 0")

    @property
    def tolerance_ticks(self) -> int:
        """How far an order may sit from the price a frame implies and still answer it;
        below half a step, so no two frames of a cycle can claim the same order."""
        return (self.step_ticks - 1) // 2


# -- records ---------------------------------------------------------------------------------------


@attrs.define(slots=True)
class ProbeFrame:
    """One move of one market's mid and when its book frame left the simulator."""

    market: str
    number: int
    mid_ticks: int
    pushed_at: float  # queued for the stream connections
    seqs: tuple[int, ...] = ()
    written_at: float | None = None  # handed to the socket
    answered: set[Side] = attrs.Factory(set)


@attrs.frozen(kw_only=True)
class Sample:
    """An order request that answers a probe frame."""

    market: str
    side: Side
    frame: int
    seqs: tuple[int, ...]
    mid_ticks: int
    price_ticks: int
    pushed_at: float
    written_at: float
    received_at: float
    external_id: str

    @property
    def latency_s(self) -> float:
        return self.received_at - self.written_at

    def to_json(self) -> dict[str, Any]:
        return {
            "market": self.market,
            "side": self.side.value,
            "frame": self.frame,
            "seqs": list(self.seqs),
            "mid_ticks": self.mid_ticks,
            "price_ticks": self.price_ticks,
            "pushed_at": self.pushed_at,
            "written_at": self.written_at,
            "received_at": self.received_at,
            "external_id": self.external_id,
        }


class MarketTrack:
    """The probe's state for one market: calibration, position on the grid, recent frames."""

    def __init__(self, spec: MarketSpec, base_ticks: int, settings: ProbeSettings) -> None:
        self.spec = spec
        self.name = spec.name
        self.base_ticks = base_ticks
        self.cycle = grid_cycle(settings.levels)
        self.step_ticks = settings.step_ticks
        self.position = 0  # index into cycle
        self.state = "idle"  # idle | calibrating | running | failed | stopped
        self.reason = ""
        self.bid_offset: int | None = None  # mid − our bid, ticks
        self.ask_offset: int | None = None  # our ask − mid, ticks
        # Frames older than one cycle share prices with newer ones: they are forgotten.
        self.frames: deque[ProbeFrame] = deque(maxlen=len(self.cycle))
        self.frames_sent = 0
        self.frames_written = 0
        self.orders = 0
        self.matched = 0
        self.unmatched = 0
        self.repeats = 0
        self._quotes_seen: tuple[str, str] | None = None
        self._quotes_since = 0.0

    @property
    def mid_ticks(self) -> int:
        return self.base_ticks + self.step_ticks * self.cycle[self.position]

    def advance(self) -> int:
        self.position = (self.position + 1) % len(self.cycle)
        return self.mid_ticks

    def calibrate(self, bids: list[tuple[str, int]], asks: list[tuple[str, int]], now: float, settle_s: float) -> bool:
        """Learn the quote offsets once exactly one bid and one ask have rested unchanged for settle_s."""
        if len(bids) != 1 or len(asks) != 1:
            self._quotes_seen = None
            return False
        seen = (bids[0][0], asks[0][0])
        if seen != self._quotes_seen:
            self._quotes_seen, self._quotes_since = seen, now
            return False
        if now - self._quotes_since < settle_s:
            return False
        self.bid_offset = self.mid_ticks - bids[0][1]
        self.ask_offset = asks[0][1] - self.mid_ticks
        return True

    def implied_mid(self, side: Side, price_ticks: int) -> int | None:
        if self.bid_offset is None or self.ask_offset is None:
            return None
        return price_ticks + self.bid_offset if side is Side.BUY else price_ticks - self.ask_offset

    def statistics(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "bid_offset_ticks": self.bid_offset,
            "ask_offset_ticks": self.ask_offset,
            "frames": self.frames_sent,
            "frames_written": self.frames_written,
            "orders": self.orders,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "repeats": self.repeats,
        }


# -- the probe -------------------------------------------------------------------------------------


class LatencyProbe:
    """Drives the probe markets' mids and pairs book frames with the order requests answering them.

    Times come from `clock` and are passed into the `on_*` methods, so the pairing logic
    can be tested with made-up times. The engine and runner are attached after the server
    starts (`attach`); until then, and until `start`, every tap is ignored.
    """

    def __init__(self, settings: ProbeSettings, *, clock: Clock = monotonic_clock) -> None:
        self.settings = settings
        self.clock = clock
        self.engine: SimEngine | None = None
        self.runner: SimRunner | None = None
        self.account_id: int | None = None
        self.tracks: dict[str, MarketTrack] = {}
        self.samples: list[Sample] = []
        self.dropped_samples = 0
        self.malformed_orders = 0
        self._unwritten: dict[tuple[str, int], ProbeFrame] = {}
        self._start = trio.Event()
        self._stop = trio.Event()
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self._cpu_at_start: float | None = None
        self.cpu_s: float | None = None  # this process's CPU time while driving

    def attach(self, engine: SimEngine, runner: SimRunner, account_id: int) -> None:
        self.engine, self.runner, self.account_id = engine, runner, account_id
        for name in engine.market_names():
            spec = engine.market_spec(name)
            base = spec.price_to_ticks(Decimal(str(engine.mid(name))), Rounding.DOWN)
            self.tracks[name] = MarketTrack(spec, base, self.settings)

    # -- control ----------------------------------------------------------------------------
    def start(self) -> None:
        self._start.set()

    def stop(self) -> None:
        self._stop.set()

    @property
    def state(self) -> str:
        if self._stop.is_set():
            return "stopped"
        if not self._start.is_set():
            return "idle"
        states = {t.state for t in self.tracks.values()}
        if "calibrating" in states:
            return "calibrating"
        return "running" if "running" in states else "failed"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wait for `start`, calibrate, move the mids until `stop`. Start with `nursery.start`."""
        task_status.started()
        await self._start.wait()
        async with trio.open_nursery() as nursery:

            async def stop_when_asked() -> None:
                await self._stop.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_when_asked)
            await self._calibrate()
            running = [t for t in self.tracks.values() if t.state == "running"]
            if running:
                await self._drive(running)
            nursery.cancel_scope.cancel()
        for track in self.tracks.values():
            if track.state in ("running", "calibrating"):
                track.state = "stopped"
        self.stopped_at = self.clock()
        if self._cpu_at_start is not None:
            self.cpu_s = process_cpu_s() - self._cpu_at_start

    async def _calibrate(self) -> None:
        engine, account_id = self.engine, self.account_id
        if engine is None or account_id is None:
            raise RuntimeError("the probe is not attached to a simulator")
        for track in self.tracks.values():
            track.state = "calibrating"
            _move_mid(engine, track.name, track.mid_ticks)
        deadline = trio.current_time() + self.settings.calibrate_timeout_s
        pending = list(self.tracks.values())
        while pending:
            now = self.clock()
            for track in list(pending):
                bids: list[tuple[str, int]] = []
                asks: list[tuple[str, int]] = []
                for order in engine.open_orders(account_id, track.name):
                    ticks = track.spec.price_to_ticks(order.price, Rounding.DOWN)
                    (bids if order.side is Side.BUY else asks).append((order.external_id, ticks))
                if track.calibrate(bids, asks, now, self.settings.settle_s):
                    pending.remove(track)
                    # A move of two steps must not carry the crowd's touch across a resting
                    # quote: the crowd would trade with it and the position would skew quotes.
                    closest = min(track.bid_offset or 0, track.ask_offset or 0)
                    if closest <= 2 * self.settings.step_ticks + 1:
                        track.state = "failed"
                        track.reason = (
                            f"quotes only {closest} ticks from the mid; need more than "
                            f"{2 * self.settings.step_ticks + 1} (widen the spread or lower step_ticks)"
                        )
                        logger.warning("probe {}: {}", track.name, track.reason)
                        continue
                    track.state = "running"
                    logger.info(
                        "probe {}: quotes sit {} below and {} above the mid (ticks)",
                        track.name, track.bid_offset, track.ask_offset,
                    )
            if not pending:
                break
            if trio.current_time() >= deadline:
                for track in pending:
                    track.state = "failed"
                    track.reason = "no steady two-sided quote within the calibration timeout"
                    logger.warning("probe {}: {}", track.name, track.reason)
                break
            await trio.sleep(0.02)

    async def _drive(self, tracks: list[MarketTrack]) -> None:
        """Move each market's mid at rate_hz, the markets evenly staggered within a period."""
        period = 1.0 / self.settings.rate_hz
        now = trio.current_time()
        due = {t.name: now + i * period / len(tracks) for i, t in enumerate(tracks)}
        by_name = {t.name: t for t in tracks}
        self.started_at = self.clock()
        self._cpu_at_start = process_cpu_s()
        while True:
            name = min(due, key=due.__getitem__)
            await trio.sleep_until(due[name])
            self.step(by_name[name])
            now = trio.current_time()
            # Fixed rate; after a stall skip the missed moves instead of bursting them out.
            due[name] = max(due[name] + period, now)

    def step(self, track: MarketTrack) -> ProbeFrame:
        """Move one market's mid to its next grid position and publish the book at once."""
        engine, runner = self.engine, self.runner
        assert engine is not None and runner is not None
        mid = track.advance()
        _move_mid(engine, track.name, mid)
        subs = [s for s in runner.subscriptions() if s.kind == "orderbook" and s.market == track.name]
        before = {id(s): s.seq for s in subs}
        pushed_at = self.clock()
        runner.flush_books()
        seqs = tuple(s.seq for s in subs if s.seq != before[id(s)] and not s.closed)
        return self.note_frame(track, mid, pushed_at, seqs)

    def note_frame(self, track: MarketTrack, mid_ticks: int, pushed_at: float, seqs: tuple[int, ...]) -> ProbeFrame:
        """Remember a published move; `seqs` are its frames' seq on each book connection."""
        frame = ProbeFrame(
            market=track.name, number=track.frames_sent, mid_ticks=mid_ticks, pushed_at=pushed_at, seqs=seqs
        )
        track.frames_sent += 1
        track.frames.append(frame)
        for seq in seqs:
            self._unwritten[(track.name, seq)] = frame
        # Bounded even if connections close with frames still queued.
        while len(self._unwritten) > 4096:
            del self._unwritten[next(iter(self._unwritten))]
        return frame

    # -- taps -------------------------------------------------------------------------------
    def on_frame_written(self, market: str, seq: int | None, now: float) -> None:
        if seq is None:
            return
        frame = self._unwritten.pop((market, seq), None)
        if frame is None or frame.written_at is not None:
            return
        frame.written_at = now
        self.tracks[market].frames_written += 1

    def on_order(self, body: bytes, now: float) -> Sample | None:
        """An order request arrived at `now`; record a sample if it answers a probe frame."""
        try:
            data = orjson.loads(body)
            market = data["market"]
            side = Side(data["side"])
            price = Decimal(str(data["price"]))
            external_id = str(data.get("id", ""))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidOperation):
            self.malformed_orders += 1  # the handler answers it properly; the probe just skips it
            return None
        track = self.tracks.get(market)
        if track is None or track.state != "running":
            return None
        track.orders += 1
        try:
            price_ticks = track.spec.price_to_ticks(price, Rounding.DOWN)
        except (ValueError, ArithmeticError):
            track.unmatched += 1
            return None
        frame = self.match(track, side, price_ticks, now)
        if frame is None:
            track.unmatched += 1
            return None
        if side in frame.answered:
            track.repeats += 1  # e.g. a retry after a rejection: not a fresh reaction
            return None
        frame.answered.add(side)
        track.matched += 1
        assert frame.written_at is not None
        sample = Sample(
            market=market,
            side=side,
            frame=frame.number,
            seqs=frame.seqs,
            mid_ticks=frame.mid_ticks,
            price_ticks=price_ticks,
            pushed_at=frame.pushed_at,
            written_at=frame.written_at,
            received_at=now,
            external_id=external_id,
        )
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(sample)
        else:
            self.dropped_samples += 1
        return sample

    def match(self, track: MarketTrack, side: Side, price_ticks: int, now: float) -> ProbeFrame | None:
        """The newest frame written before `now` whose mid the order's price reflects."""
        implied = track.implied_mid(side, price_ticks)
        if implied is None:
            return None
        tolerance = self.settings.tolerance_ticks
        for frame in reversed(track.frames):
            if frame.written_at is None or frame.written_at > now:
                continue
            if abs(frame.mid_ticks - implied) <= tolerance:
                return frame
        return None

    def report(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "settings": attrs.asdict(self.settings),
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "cpu_s": self.cpu_s,
            "markets": {name: t.statistics() for name, t in self.tracks.items()},
            "malformed_orders": self.malformed_orders,
            "dropped_samples": self.dropped_samples,
            "samples": [s.to_json() for s in self.samples],
        }


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
        """The first stdout line of `python -m extmm.sim.probe` (paper credentials on purpose)."""
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
    from extmm.sim.server import build_app, serve_app

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


# -- command line ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m extmm.sim.probe",
        description="Simulator in latency-probe mode (used by `python -m extmm bench latency`). "
        "Prints one JSON line with the URLs and paper credentials, then serves until SIGTERM/SIGINT.",
    )
    parser.add_argument("--markets", type=int, default=4, help="probe markets P1-USD… (default 4)")
    parser.add_argument("--rate", type=float, default=50.0, help="mid moves per second per market (default 50)")
    parser.add_argument("--step-ticks", type=int, default=6, help="grid spacing in ticks (default 6)")
    parser.add_argument("--levels", type=int, default=50, help="a cycle rises 2·levels steps and back (default 50)")
    parser.add_argument("--settle", type=float, default=0.3, help="seconds of steady quotes to calibrate (default 0.3)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-verify", action="store_true", help="accept orders without checking signatures")
    parser.add_argument("--profile", default=None, metavar="FILE", help="cProfile the simulator into FILE")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    try:
        settings = ProbeSettings(
            rate_hz=args.rate, step_ticks=args.step_ticks, levels=args.levels, settle_s=args.settle
        )
        probe_market_names(args.markets)
    except ValueError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 2
    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    options = dict(
        markets=args.markets,
        settings=settings,
        host=args.host,
        port=args.port,
        seed=args.seed,
        verify_signatures=not args.no_verify,
        api_key=secrets.token_hex(16),
        private_key=secrets.randbelow(STARK_EC_ORDER - 1) + 1,
    )
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        trio.run(partial(_serve_until_signal, **options))
    except KeyboardInterrupt:
        pass
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    return 0


async def _serve_until_signal(**options: Any) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            handle: ProbeHandle = await nursery.start(partial(serve_probe_simulator, **options))
            settle_heap()  # as the bot does: full collections skip what start-up built
            print(json.dumps(handle.announcement()), flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    sys.exit(main())
