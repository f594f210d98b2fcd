"""`python -m extmm bench latency [--markets N] [--rate HZ] [--duration S]`: tick-to-wire latency.

The simulator runs in a separate process in probe mode (`python -m extmm sim probe`): it moves each
probe market's mid at HZ and times, on its own clock, from writing the book frame that moves
our quote to receiving the order request that follows it. The whole bot (root supervisor,
every actor, `NetworkVenue`) runs in this process over real sockets. The floor is the
p50 of signing and serialising the same orders alone, measured here after the run.
Prints one JSON line `{"p50_ms", "p99_ms", "max_ms", "floor_ms", "samples"}`; one line of
detail goes to stderr: where the time went (simulator → bot stream, the actors, signing and
HTTP up to the socket, socket → simulator), CPU load of both processes and of the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import httpx
import trio

from extmm.argtypes import log_level, non_negative_int, output_file_str, positive_float, positive_int
from extmm.config import BotConfig, parse_config
from extmm.domain.stats import nearest_rank
from extmm.ops.gctune import settle_heap
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


@attrs.frozen(kw_only=True)
class LatencyResult:
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    floor_ms: float | None
    samples: int
    detail: dict[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "floor_ms": self.floor_ms,
            "samples": self.samples,
        }


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "latency",
        help="tick-to-wire latency of the whole bot against the simulator in another process",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--markets", type=positive_int, default=4, help="probe markets (default 4)")
    parser.add_argument("--rate", type=positive_float, default=50.0, metavar="UPDATES_PER_S",
                        help="book moves per second per market (default 50)")
    parser.add_argument("--duration", type=positive_float, default=20.0, metavar="S",
                        help="measured seconds, after startup and calibration (default 20)")
    parser.add_argument("--quote-loop-ms", type=positive_int, default=100, help="quoter re-judge period (default 100)")
    parser.add_argument("--base-spread", type=positive_float, default=0.0005,
                        help="quoted half-spread, fraction of mid (default 0.0005)")
    parser.add_argument("--rate-limit-per-min", type=positive_int, default=1_000_000,
                        help="the bot's REST budget (default 1,000,000: out of the way)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not give the bot and the simulator a core each (they then compete for both)")
    parser.add_argument("--no-verify", action="store_true",
                        help="the simulator skips Stark signature checks (less load on its process)")
    parser.add_argument("--profile", type=output_file_str, default=None, metavar="FILE",
                        help="cProfile the bot during the measured window into FILE; top functions to stderr")
    parser.add_argument("--sim-profile", type=output_file_str, default=None, metavar="FILE", help="cProfile the simulator into FILE")
    parser.add_argument("--log-level", type=log_level, default="WARNING", help="bot log level on stderr (default WARNING)")
    parser.add_argument("--journal-compare", type=non_negative_int, default=0, metavar="ROUNDS",
                        help="measure without and with the trading journal, alternating, ROUNDS times each "
                        "(in one run, so both see the same machine); prints both and their ratio")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.markets < 1 or not args.rate > 0 or not args.duration > 0:
        print("bench latency: need --markets ≥ 1, --rate > 0, --duration > 0", file=sys.stderr)
        return 2
    opts = LatencyOptions(
        markets=args.markets,
        rate_hz=args.rate,
        duration_s=args.duration,
        quote_loop_ms=args.quote_loop_ms,
        base_spread=args.base_spread,
        rate_limit_per_min=args.rate_limit_per_min,
        verify_signatures=not args.no_verify,
        pin_cpus=not args.no_pin,
        profile_path=args.profile,
        sim_profile_path=args.sim_profile,
        log_level=args.log_level,
    )
    from extmm.ops.logs import configure_logging
    from supervisors.root import StartupError

    configure_logging(level=opts.log_level)
    if args.journal_compare > 0:
        return compare_journal(opts, args.journal_compare)
    problems: list[BaseException] = []
    try:
        result = trio.run(measure, opts)
    except* (BenchError, StartupError) as group:
        problems.extend(_leaves(group))
    if problems:
        for exc in problems:
            print(f"bench latency: {exc}", file=sys.stderr)
        return 1
    print("bench latency detail: " + json.dumps(result.detail), file=sys.stderr)
    print(json.dumps(result.to_json()), flush=True)
    if result.samples == 0:
        print("bench latency: no order answered a probe frame (see the detail above)", file=sys.stderr)
        return 1
    return 0


def compare_journal(opts: LatencyOptions, rounds: int) -> int:
    """Without / with the journal, alternating, so drifting machine load hits both alike."""
    import tempfile

    runs: dict[str, list[LatencyResult]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory(prefix="extmm-bench-journal-") as tmp:
        for i in range(rounds):
            for label in ("without", "with"):
                path = f"{tmp}/journal-{i}.db" if label == "with" else None
                problems: list[BaseException] = []
                try:
                    result = trio.run(measure, attrs.evolve(opts, journal_path=path))
                except* Exception as group:
                    problems.extend(_leaves(group))
                if problems:
                    for exc in problems:
                        print(f"bench latency: {exc}", file=sys.stderr)
                    return 1
                print(f"bench latency ({label} journal, round {i + 1}): " + json.dumps(result.to_json())
                      + " load " + str(result.detail.get("machine_load_1min"))
                      + (" journal " + json.dumps(result.detail.get("journal")) if path else ""), file=sys.stderr)
                runs[label].append(result)

    def pooled(results: list[LatencyResult], key: str) -> float | None:
        values = [getattr(r, key) for r in results if getattr(r, key) is not None]
        return round(sum(values) / len(values), 3) if values else None

    out: dict[str, Any] = {}
    for label, results in runs.items():
        out[label] = {k: pooled(results, k) for k in ("p50_ms", "p99_ms", "max_ms")}
        out[label]["samples"] = sum(r.samples for r in results)
    for q in ("p50_ms", "p99_ms"):
        a, b = out["without"][q], out["with"][q]
        out[f"ratio_{q.removesuffix('_ms')}"] = round(b / a, 3) if a and b else None
    out["journal"] = [r.detail.get("journal") for r in runs["with"]]
    print(json.dumps(out), flush=True)
    return 0


class BenchError(Exception):
    """The benchmark could not run (simulator did not start, bot not ready, probe failed)."""


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


# -- statistics --------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 1]) of `values` in any order; None when empty."""
    return nearest_rank(sorted(values), q)


def summary_ms(values_s: Sequence[float]) -> dict[str, float | int | None]:
    ordered = sorted(values_s)

    def ms(q: float) -> float | None:
        v = nearest_rank(ordered, q)
        return None if v is None else round(v * 1000, 3)

    return {"p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": ms(1.0), "n": len(values_s)}


# -- the bot's side ----------------------------------------------------------------------------------


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


# -- the run -----------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ProbeSim:
    rest_url: str
    stream_url: str
    probe_url: str
    markets: tuple[str, ...]
    credentials: Credentials


async def _read_line(stream: trio.abc.ReceiveStream, limit: int = 65536) -> bytes:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > limit:
            break
    return bytes(buffer).split(b"\n", 1)[0]


async def start_probe_sim(
    nursery: trio.Nursery, opts: LatencyOptions, simulator_cpus: set[int] | None = None
) -> ProbeSim:
    """Start `python -m extmm sim probe` in its own process (ended when `nursery` is cancelled)."""
    cmd = [
        sys.executable, "-m", "extmm", "sim", "probe",
        "--markets", str(opts.markets),
        "--rate", repr(opts.rate_hz),
        "--step-ticks", str(opts.step_ticks),
        "--log-level", opts.log_level,
    ]
    if not opts.verify_signatures:
        cmd.append("--no-verify")
    if opts.sim_profile_path:
        cmd += ["--profile", opts.sim_profile_path]
    preexec = None if simulator_cpus is None else partial(os.sched_setaffinity, 0, simulator_cpus)
    process: trio.Process = await nursery.start(
        partial(trio.run_process, cmd, stdout=subprocess.PIPE, check=False, preexec_fn=preexec)
    )
    assert process.stdout is not None
    line = b""
    with trio.move_on_after(opts.startup_timeout_s):
        line = await _read_line(process.stdout)
    try:
        hello = json.loads(line)
        account = hello["account"]
        return ProbeSim(
            rest_url=hello["rest"],
            stream_url=hello["stream"],
            probe_url=hello["probe"],
            markets=tuple(hello["markets"]),
            credentials=Credentials(
                api_key=account["api_key"],
                vault=account["vault"],
                stark_private_key=account["stark_private_key"],
                stark_public_key=account["stark_public_key"],
            ),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"the probe simulator did not announce itself ({type(exc).__name__})") from None


async def _wait_calibrated(client: httpx.AsyncClient, timeout_s: float) -> dict[str, Any]:
    with trio.move_on_after(timeout_s):
        while True:
            report = (await client.get("/latency", params={"samples": "0"})).json()
            if report["state"] != "calibrating":
                return report
            await trio.sleep(0.1)
    raise BenchError(f"the probe did not finish calibrating within {timeout_s}s")


def cpu_plan(opts: LatencyOptions) -> dict[str, set[int]] | None:
    """Which cores the bot and the simulator get, or None (no pinning: asked not to, fewer
    than two usable cores, or no sched_setaffinity on this OS).

    The simulator stands in for a venue that, in production, runs on other machines; on one
    2-core box its CPU use (signature checks, HTTP, streams) would otherwise preempt the
    bot at random. Pinning the bot to its own core is also how it is best deployed
    (systemd `CPUAffinity=`, see README)."""
    if not opts.pin_cpus or not hasattr(os, "sched_setaffinity"):
        return None
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return None
    return {"bot": {usable[0]}, "simulator": set(usable[1:])}


async def measure(opts: LatencyOptions) -> LatencyResult:
    pinned = cpu_plan(opts)
    before = os.sched_getaffinity(0) if pinned is not None else None
    try:
        if pinned is not None:
            os.sched_setaffinity(0, pinned["bot"])
        async with trio.open_nursery() as nursery:
            sim = await start_probe_sim(nursery, opts, None if pinned is None else pinned["simulator"])
            try:
                result = await _measure_against(sim, opts)
            finally:
                nursery.cancel_scope.cancel()  # SIGTERM to the simulator (run_process)
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
    result.detail["cpus"] = None if pinned is None else {k: sorted(v) for k, v in pinned.items()}
    return result


async def _measure_against(sim: ProbeSim, opts: LatencyOptions) -> LatencyResult:
    from extmm.ops.secrets import register_secret
    from extmm.runtime.app import wall_clock_ms
    from extmm.venue.rest import ChannelObserver
    from supervisors.root import RootSupervisor

    register_secret(sim.credentials.api_key)
    register_secret(sim.credentials.stark_private_key)
    cfg = bench_config(sim.markets, opts)
    stamps = BotStamps()
    outcomes_send, outcomes_recv = trio.open_memory_channel[Any](1024)
    profiler = None
    async with StampedVenue(
        sim.rest_url,
        sim.stream_url,
        sim.credentials,
        observer=ChannelObserver(outcomes_send),
        rate_limit_per_min=opts.rate_limit_per_min,
        lane_on_write=stamps.request_written,
        stamps=stamps,
    ) as venue:
        journal = None
        if opts.journal_path is not None:
            from extmm.journal.session import SessionMeta, open_session

            journal = open_session(opts.journal_path, SessionMeta(
                kind="bench", network="custom", account=f"vault {sim.credentials.vault}", version="bench",
                config_digest="bench", markets=tuple(sim.markets)), clock=time.time)
        root = RootSupervisor(
            cfg=cfg, port=venue, network="custom", epoch_ms=wall_clock_ms, request_outcomes=outcomes_recv,
            journal=journal,
        )
        stop = trio.Event()
        report: dict[str, Any] | None = None
        failed: dict[str, str] = {}
        bot_cpu_s = 0.0
        gc_pauses = GcPauses()
        async with trio.open_nursery() as nursery, httpx.AsyncClient(
            base_url=sim.probe_url, timeout=30.0
        ) as probe:
            with trio.move_on_after(opts.startup_timeout_s) as startup:
                await nursery.start(partial(root.run, stop=stop))
            if startup.cancelled_caught:
                raise BenchError(f"the bot was not ready within {opts.startup_timeout_s}s")
            settle_heap()  # as `python -m extmm` does once the bot is ready
            try:
                await probe.post("/start")
                calibration = await _wait_calibrated(probe, opts.startup_timeout_s)
                failed = {n: m["reason"] for n, m in calibration["markets"].items() if m["state"] == "failed"}
                if calibration["state"] == "running":
                    if opts.profile_path:
                        import cProfile

                        profiler = cProfile.Profile()
                        profiler.enable()
                    cpu_before = time.process_time()
                    with GcPauses() as gc_pauses:
                        await trio.sleep(opts.duration_s)
                    bot_cpu_s = time.process_time() - cpu_before
                    if profiler is not None:
                        profiler.disable()
                    await probe.post("/stop")
                    report = (await probe.get("/latency")).json()
            finally:
                stop.set()  # the bot shuts down cleanly: cancels its orders, disarms the DMS
        if report is None:
            raise BenchError(f"probe calibration failed: {failed}")
        domain = await venue.get_signing_domain()
        market_infos = await venue.get_markets(list(sim.markets))
    if journal is not None:
        journal.release()
    floor = signing_floor(list(stamps.requests), sim.credentials, domain, market_infos)
    if profiler is not None and opts.profile_path:
        _dump_profile(profiler, opts.profile_path)
    result = _result(report, stamps, floor, opts, failed, bot_cpu_s, gc_pauses.durations)
    if journal is not None:
        st = journal.statistics()
        result.detail["journal"] = {"written": st.written, "dropped": st.dropped, "commits": st.commits,
                                    "write_errors": st.write_errors}
    return result


def _dump_profile(profiler: Any, path: str) -> None:
    import io
    import pstats

    profiler.dump_stats(path)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    print(out.getvalue(), file=sys.stderr)


def _result(
    report: dict[str, Any],
    stamps: BotStamps,
    floor: list[float],
    opts: LatencyOptions,
    failed: dict[str, str],
    bot_cpu_s: float,
    gc_pauses: Sequence[float] = (),
) -> LatencyResult:
    samples = report["samples"]
    latencies = [s["received_at"] - s["written_at"] for s in samples]
    wire_in: list[float] = []
    pipeline: list[float] = []
    wire_out: list[float] = []
    to_socket: list[float] = []
    socket_to_sim: list[float] = []
    sim_queue = [s["written_at"] - s["pushed_at"] for s in samples]
    for s in samples:
        arrived = next(
            (stamps.frames[(s["market"], q)] for q in s["seqs"] if (s["market"], q) in stamps.frames), None
        )
        entered = stamps.orders.get(s["external_id"])
        if arrived is None or entered is None:
            continue
        wire_in.append(arrived - s["written_at"])
        pipeline.append(entered - arrived)
        wire_out.append(s["received_at"] - entered)
        written = stamps.written.get(s["external_id"])
        if written is not None:
            to_socket.append(written - entered)
            socket_to_sim.append(s["received_at"] - written)
    overall = summary_ms(latencies)
    floor_summary = summary_ms(floor)
    detail = {
        "markets": opts.markets,
        "rate_hz": opts.rate_hz,
        "duration_s": opts.duration_s,
        "verify_signatures": opts.verify_signatures,
        # other work on the machine skews every figure: the 1-minute load average at the end
        "machine_load_1min": round(os.getloadavg()[0], 2),
        # CPU seconds per measured second: 1.0 is one core saturated
        "bot_cpu_load": round(bot_cpu_s / opts.duration_s, 3),
        "sim_cpu_load": round((report.get("cpu_s") or 0.0) / opts.duration_s, 3),
        "floor": floor_summary,
        # frame written by the simulator → frame handed to the Feed (network, WebSocket, JSON)
        "sim_to_bot_stream": summary_ms(wire_in),
        # Feed → Book → Quoter → Risk → Executor → place_order entered
        "bot_pipeline": summary_ms(pipeline),
        # place_order entered → request at the simulator (sign, serialise, rate limiter, httpx, HTTP)
        "place_to_sim": summary_ms(wire_out),
        # ... of which: place_order entered → the request starts to go out (sign, httpx; also
        # the other side's signing when both sides move at once)
        "place_to_socket": summary_ms(to_socket),
        # ... and: request written → complete at the simulator's app (kernel, scheduling of
        # both processes, the simulator's HTTP parsing)
        "socket_to_sim": summary_ms(socket_to_sim),
        # place_order entered → the venue's answer is back (the side waits this long)
        "place_round_trip": summary_ms(list(stamps.round_trips)),
        # frame queued in the simulator → written to the socket (simulator's own delay, not counted)
        "sim_queue": summary_ms(sim_queue),
        # the bot's garbage-collector pauses during the measured window (they stop everything)
        "gc_pauses": summary_ms(gc_pauses),
        "probe": {k: v for k, v in report.items() if k != "samples"},
        "failed_markets": failed,
    }
    return LatencyResult(
        p50_ms=overall["p50_ms"],
        p99_ms=overall["p99_ms"],
        max_ms=overall["max_ms"],
        floor_ms=floor_summary["p50_ms"],
        samples=len(latencies),
        detail=detail,
    )
