"""Whole paper sessions: the CLI main job, signals, metrics, the panel, and secrets.

These run real processes and sockets on 127.0.0.1; the in-process sessions run trio time at
three times the wall clock (`fast_clock`), the command's processes real time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import trio
from rich.console import Console

from extmm.config import load_config
from extmm.ops.dashboard_render import render
from extmm.ops.logs import configure_logging
from extmm.ops.metrics import Metrics
from extmm.ops.secrets import clear_registered_secrets, load_secrets
from extmm.runtime.app import RunOptions, run_bot
from extmm.sim.server import serve_simulator

ROOT = Path(__file__).resolve().parents[2]
# A fake but well-formed Stark key pair and API key, only ever known to the simulator.
FAKE_API_KEY = "f4k3ap1k3y0123456789abcdef012345"
FAKE_PRIVATE_KEY = "0x3c1e9550e66958296d11b60f8e8e7a7ad990d07fa65d5f7652c4a6c87d4e3cc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summary_of(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary on stdout: {stdout[-2000:]}"
    return json.loads(lines[-1])


def assert_pnl_identity(summary: dict) -> None:
    pnl = {k: Decimal(v) for k, v in summary["pnl"].items()}
    assert pnl["spread"] + pnl["inventory"] + pnl["fees"] + pnl["funding"] == pnl["net"]


def assert_paper_minute(summary: dict) -> None:
    assert summary["network"] == "paper"
    assert summary["markets"] == ["BTC-USD", "ETH-USD"]
    assert summary["open_orders_at_exit"] == 0
    assert summary["fills"] > 0
    assert summary["orders_sent"] > 0
    assert_pnl_identity(summary)
    assert set(summary["position"]) == {"BTC-USD", "ETH-USD"}
    assert summary["breaker_trips"] == 0


async def test_paper_run_of_60s_fills_and_ends_flat_on_orders(fast_clock):
    """The README's main job (`--duration 60` on paper, the example config, seed 5), as the
    command runs it (`run_bot`), on the embedded simulator's real sockets, in trio time at 3x.
    The command's own process is run by the sigterm test below (exit 0, nothing open), the
    journal sessions, and the slow test that follows."""
    opts = RunOptions(network="paper", seed=5, duration_s=60, dashboard=False, metrics_port=None, watchdog=False,
                      settle_gc=False)
    summary = await run_bot(load_config(ROOT / "config/config.json"), opts, load_secrets(read_env_file=False))
    assert_paper_minute(summary.to_json())


@pytest.mark.slow
def test_paper_process_of_60s_fills_and_ends_flat_on_orders(tmp_path):
    """The README's main job as a process, `python -m extmm --duration 60` on paper, a real
    minute (the same checks run by default, in-process at 3x: the test above)."""
    proc = subprocess.run(
        [sys.executable, "-m", "extmm", "--duration", "60", "--no-dashboard", "--metrics-port", "0", "--seed", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_paper_minute(summary_of(proc.stdout))


def test_sigterm_cancels_everything_and_exits_0_and_metrics_are_served(tmp_path):
    """Also the systemd protocol, against a real Unix datagram NOTIFY_SOCKET."""
    port = free_port()
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    messages: list[str] = []
    listening = threading.Event()
    listening.set()

    def listen() -> None:
        # Like systemd, read as they come: a Unix datagram queue holds only ~10 messages.
        while listening.is_set():
            try:
                messages.append(notify.recv(4096).decode())
            except TimeoutError:
                continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "extmm", "--no-dashboard", "--metrics-port", str(port), "--seed", "9"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)
                if health.json().get("ready"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        assert health is not None and health.json()["ready"], "the bot never became ready"
        time.sleep(5)  # let it quote
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)
        assert health.status_code == 200 and health.json()["healthy"] is True
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0).text
        for name in ("extmm_orders_sent_total", "extmm_breaker_state", "extmm_dms_remaining_seconds",
                     "extmm_inventory_contracts", "extmm_pnl_usd"):
            assert name in metrics, name
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    summary = summary_of(out)
    assert summary["open_orders_at_exit"] == 0
    assert summary["orders_sent"] > 0
    assert "SIGTERM" in err
    time.sleep(0.5)
    listening.clear()
    listener.join(timeout=2)
    notify.close()
    fields = [line for m in messages for line in m.splitlines()]
    assert "READY=1" in fields
    assert "WATCHDOG=1" in fields  # pinged while healthy (every 1 s here)
    assert any(f.startswith("STATUS=") for f in fields)
    assert "STOPPING=1" in fields
    assert fields.index("READY=1") < fields.index("WATCHDOG=1") < fields.index("STOPPING=1")


async def test_secrets_never_reach_logs_panel_metrics_or_exceptions(tmp_path, monkeypatch, fast_clock):
    """A session that really uses a known API key and private key (the simulator's
    account is created with them): neither appears in any log line (stderr or JSON),
    panel render, metric, or exception text. (12 s of trio time at 3x, `fast_clock`.)"""
    clear_registered_secrets()
    log_file = tmp_path / "extmm.jsonl"
    stderr_lines: list[str] = []
    buffer = configure_logging(level="DEBUG", json_file=log_file)
    from loguru import logger

    logger.add(lambda m: stderr_lines.append(str(m)), level="DEBUG", format="{message}")
    panels: list[str] = []
    scrapes: list[str] = []
    errors: list[str] = []
    cfg = load_config(ROOT / "config/config.json")
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(
            lambda task_status: serve_simulator(
                seed=3, api_key=FAKE_API_KEY, private_key=int(FAKE_PRIVATE_KEY, 16), task_status=task_status
            )
        )
        monkeypatch.setenv("EXTENDED_API_KEY", FAKE_API_KEY)
        monkeypatch.setenv("EXTENDED_STARK_PRIVATE_KEY", FAKE_PRIVATE_KEY)
        monkeypatch.setenv("EXTENDED_STARK_PUBLIC_KEY", handle.account.stark_public_key)
        monkeypatch.setenv("EXTENDED_VAULT_ID", str(handle.account.vault))
        secrets = load_secrets(read_env_file=False)
        stop = trio.Event()
        metrics = Metrics()

        async def observe(root) -> None:
            for _ in range(8):
                await trio.sleep(1.5)
                status = root.status()
                console = Console(record=True, width=100, force_terminal=False)
                console.print(render(status))
                panels.append(console.export_text())
                metrics.update(status)
                scrapes.append(metrics.exposition().decode())
            try:
                # An exception whose text carries the key, as a careless library might raise.
                raise RuntimeError(f"request failed with header X-Api-Key: {FAKE_API_KEY}")
            except RuntimeError:
                logger.exception("simulated failure")
            stop.set()

        opts = RunOptions(network="custom", rest_url=handle.rest_url, stream_url=handle.stream_url,
                          dashboard=False, metrics_port=None, watchdog=False, settle_gc=False)
        try:
            summary = await run_bot(cfg, opts, secrets, warnings=buffer.lines,
                                    on_ready=lambda root: nursery.start_soon(observe, root), stop=stop)
        except Exception as exc:  # noqa: BLE001 - the text is what this test inspects
            errors.append(repr(exc))
            raise
        nursery.cancel_scope.cancel()
    assert summary.orders_sent > 0
    assert panels and "BTC-USD" in panels[-1] and "ETH-USD" in panels[-1]
    texts = {
        "stderr": "\n".join(stderr_lines),
        "json log": log_file.read_text(),
        "panel": "\n".join(panels),
        "metrics": "\n".join(scrapes),
        "warnings": "\n".join(buffer.lines()),
        "exceptions": "\n".join(errors),
        "summary": json.dumps(summary.to_json()),
    }
    assert "simulated failure" in texts["json log"]
    private_hex = FAKE_PRIVATE_KEY.removeprefix("0x")
    for where, text in texts.items():
        assert FAKE_API_KEY not in text, f"API key leaked into {where}"
        assert private_hex.lower() not in text.lower(), f"private key leaked into {where}"
        assert str(int(FAKE_PRIVATE_KEY, 16)) not in text, f"private key (decimal) leaked into {where}"


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    clear_registered_secrets()
    os.environ.pop("NOTIFY_SOCKET", None)
