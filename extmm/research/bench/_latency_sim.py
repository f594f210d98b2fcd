"""`bench latency`, the simulator's side: the probe simulator in its own process, and the cores.

`start_probe_sim` runs `python -m extmm sim probe` and reads its one-line JSON hello;
`cpu_plan` gives the bot and the simulator a core each when the machine has two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from typing import Any

import attrs
import httpx
import trio

from extmm.research.bench._latency_bot import LatencyOptions
from extmm.venue.signing import Credentials


class BenchError(Exception):
    """The benchmark could not run (simulator did not start, bot not ready, probe failed)."""


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


async def wait_calibrated(client: httpx.AsyncClient, timeout_s: float) -> dict[str, Any]:
    with trio.move_on_after(timeout_s):
        while True:
            report: dict[str, Any] = (await client.get("/latency", params={"samples": "0"})).json()
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
