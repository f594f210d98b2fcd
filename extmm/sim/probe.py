"""Probe mode of the simulator: deterministic book moves that time a bot's tick-to-wire path.

`python -m extmm sim probe` serves synthetic markets (copies of BTC-USD named P1-USD, P2-USD …)
whose crowd book has no noise and no takers. Once started (`POST /probe/start`) it learns
where the bot quotes relative to the mid, then moves each market's mid along a fixed grid
at a fixed rate; it stamps when each moving book frame is written to a stream socket and
when each order request has fully arrived (before parsing or signature checks), and pairs
them by price. `GET /probe/latency` returns the samples (`python -m extmm bench latency`).

This module drives the mids and pairs frames with orders (`LatencyProbe`); the per-market
bookkeeping is `extmm.sim.probe_track`, the taps on the served app and the serving
`extmm.sim.probe_server`, the command line `extmm.commands._sim_probe`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs
import orjson
import trio
from loguru import logger

from extmm.domain.units import Rounding, Side
from extmm.markets import bundled_markets
from extmm.sim.engine import EngineConfig, SimEngine
from extmm.sim.flow import FlowParams
from extmm.sim.probe_track import MarketTrack, ProbeFrame, ProbeSettings, Sample
from extmm.sim.runner import SimRunner

TEMPLATE_MARKET = "BTC-USD"
MAX_SAMPLES = 500_000  # about 40 minutes of 4 markets × 50 updates/s × 2 sides

Clock = Callable[[], float]


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
