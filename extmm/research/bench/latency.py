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

# The bot's side (config, stamps, signing floor) is in `_latency_bot`, the simulator process in
# `_latency_sim`; this module runs them and turns the stamps into the result. (Not in the
# docstring: that is the command's --help.)

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import attrs
import httpx
import trio

from extmm.argtypes import log_level, non_negative_int, output_file_str, positive_float, positive_int
from extmm.domain.stats import nearest_rank
from extmm.ops.gctune import settle_heap
from extmm.research.bench._latency_bot import (
    BotStamps,
    GcPauses,
    LatencyOptions,
    StampedVenue,
    bench_config,
    signing_floor,
)
from extmm.research.bench._latency_sim import (
    BenchError,
    ProbeSim,
    cpu_plan,
    start_probe_sim,
    wait_calibrated,
)


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


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
                calibration = await wait_calibrated(probe, opts.startup_timeout_s)
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
