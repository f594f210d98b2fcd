"""sd_notify against real Unix datagram sockets, and the watchdog loop under MockClock."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from extmm.ops.sdnotify import (
    Notifier,
    WatchdogStatus,
    format_message,
    notify,
    socket_address,
    watchdog_interval,
    watchdog_loop,
)


@pytest.fixture
def systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd, named by NOTIFY_SOCKET."""
    # Short directory: Unix socket paths are limited to ~108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="sdn", dir="/tmp"))
    path = directory / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


def received(server: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(server.recv(65536).decode())
        except BlockingIOError:
            return out


def test_socket_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@extmm/notify") == "\0extmm/notify"
    assert socket_address("") is None
    assert socket_address(None) is None
    assert socket_address("vsock:2:1234") is None


def test_messages_are_key_value_lines_on_one_line_each() -> None:
    assert format_message({"READY": 1, "STATUS": "two\nlines"}) == b"READY=1\nSTATUS=two lines"
    with pytest.raises(ValueError):
        format_message({"ready": 1})


def test_notify_sends_a_datagram(systemd: socket.socket) -> None:
    assert notify(READY=1, STATUS="quoting BTC-USD") is True
    assert notify(STOPPING=1) is True
    assert received(systemd) == ["READY=1\nSTATUS=quoting BTC-USD", "STOPPING=1"]


def test_notify_is_a_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify(READY=1) is False
    assert not Notifier.from_env().enabled


def test_abstract_namespace_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"extmm-test-{os.getpid()}-{secrets.token_hex(4)}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.setblocking(False)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier.from_env()
        assert notifier.ready("up") and notifier.watchdog() and notifier.status("fine")
        notifier.close()
        assert received(server) == ["READY=1\nSTATUS=up", "WATCHDOG=1", "STATUS=fine"]
    finally:
        server.close()


def test_a_full_socket_drops_instead_of_blocking(systemd: socket.socket) -> None:
    notifier = Notifier.from_env()
    results = [notifier.notify(STATUS="x" * 1000) for _ in range(5000)]  # nobody reads
    notifier.close()
    assert results[0] is True
    assert False in results
    assert notifier.dropped == results.count(False)
    assert notifier.sent == results.count(True) == len(received(systemd))


def test_a_missing_systemd_socket_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    notifier = Notifier.from_env()
    assert notifier.enabled
    assert notifier.watchdog() is False
    assert notifier.dropped == 1


def test_watchdog_interval_from_the_environment() -> None:
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 20.0
    assert watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": me}) == 0.5
    assert (
        watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    )  # for another process
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None


async def test_watchdog_pings_at_half_the_interval_only_while_healthy(
    systemd: socket.socket, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # 2 s: ping every second

    def healthy() -> bool:
        return not 3 <= trio.current_time() < 5

    def status() -> str:
        return "starting" if trio.current_time() < 4 else "quoting 2 markets"

    async with trio.open_nursery() as nursery:
        state = await nursery.start(
            lambda task_status: watchdog_loop(healthy, status=status, task_status=task_status)
        )
        assert isinstance(state, WatchdogStatus) and state.ping_every_s == 1.0
        await trio.sleep(10.5)
        nursery.cancel_scope.cancel()
    # ticks at 1..10; unhealthy at 3 and 4; STATUS sent when it changed (checked each tick)
    assert received(systemd) == [
        "STATUS=starting",
        "WATCHDOG=1",
        "WATCHDOG=1",
        "STATUS=quoting 2 markets",
        *["WATCHDOG=1"] * 6,
    ]
    assert (state.pings, state.skipped_unhealthy, state.skipped_lagging) == (8, 2, 0)


async def test_watchdog_skips_the_ping_when_the_loop_lags(
    systemd: socket.socket, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        state = await nursery.start(
            lambda task_status: watchdog_loop(
                lambda: True, ping_every_s=1.0, max_lag_s=1.0, task_status=task_status
            )
        )
        await trio.sleep(4.5)
        autojump_clock.jump(2.5)  # as if the loop had been blocked: the 5 s tick wakes at 7
        await trio.sleep(3.5)  # now 10.5
        nursery.cancel_scope.cancel()
    # pings at 1, 2, 3, 4; the late tick is skipped and the schedule restarts from 7: 8, 9, 10
    assert (state.pings, state.skipped_lagging, state.max_lag_seen_s) == (7, 1, 2.0)
    assert received(systemd) == ["WATCHDOG=1"] * 7


async def test_a_broken_health_probe_reads_as_unhealthy(
    systemd: socket.socket, autojump_clock: trio.testing.MockClock
) -> None:
    def broken() -> bool:
        raise RuntimeError("probe bug")

    with trio.move_on_after(3.5):
        await watchdog_loop(broken, ping_every_s=1.0)
    assert received(systemd) == []


async def test_watchdog_loop_idles_without_systemd(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    calls: list[float] = []

    def healthy() -> bool:
        calls.append(trio.current_time())
        return True

    async with trio.open_nursery() as nursery:
        state = await nursery.start(lambda task_status: watchdog_loop(healthy, task_status=task_status))
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert calls == [] and state.pings == 0
