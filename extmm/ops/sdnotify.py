"""systemd's notify protocol (sd_notify) without dependencies, plus a trio watchdog task.

Datagrams of `KEY=value` lines go to the Unix socket named by `NOTIFY_SOCKET` (a path,
or `@name` for the abstract namespace); everything is a silent no-op when it is unset,
so the bot runs the same outside systemd. Sends never block: a full socket drops the
message. `watchdog_loop` pings `WATCHDOG=1` at half of `WATCHDOG_USEC` only while the
caller says the process is healthy and the event loop is keeping time.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping

import attrs
import trio
from loguru import logger

NOTIFY_SOCKET_VAR = "NOTIFY_SOCKET"
WATCHDOG_USEC_VAR = "WATCHDOG_USEC"
WATCHDOG_PID_VAR = "WATCHDOG_PID"
DEFAULT_MAX_LAG_S = 1.0
DEFAULT_STATUS_EVERY_S = 5.0  # STATUS refresh when there is no watchdog to pace the loop

_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")


def socket_address(raw: str | None) -> str | None:
    """The `sendto` address for a `NOTIFY_SOCKET` value; None if unset or unsupported."""
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None  # e.g. vsock:... (VMs); not used on our hosts


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """systemd's watchdog timeout in seconds from `WATCHDOG_USEC`, if it is meant for us."""
    env = os.environ if environ is None else environ
    raw = env.get(WATCHDOG_USEC_VAR)
    pid = env.get(WATCHDOG_PID_VAR)
    if not raw or (pid and pid.strip() != str(os.getpid())):
        return None
    try:
        usec = int(raw)
    except ValueError:
        logger.warning("ignoring {}={!r}: not an integer", WATCHDOG_USEC_VAR, raw)
        return None
    return usec / 1_000_000 if usec > 0 else None


def format_message(fields: Mapping[str, object]) -> bytes:
    """`KEY=value` lines; values are flattened to one line (a newline would end the field)."""
    lines = []
    for key, value in fields.items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"not an sd_notify field name: {key!r}")
        text = " ".join(str(value).splitlines())
        lines.append(f"{key}={text}")
    return "\n".join(lines).encode()


class Notifier:
    """One non-blocking datagram socket to systemd; disabled when `address` is None."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self.sent = 0
        self.dropped = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        raw = env.get(NOTIFY_SOCKET_VAR)
        address = socket_address(raw)
        if raw and address is None:
            logger.warning(
                "ignoring {}={!r}: only Unix socket paths and @abstract names work", NOTIFY_SOCKET_VAR, raw
            )
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        """Send one message, e.g. `notify(READY=1, STATUS="quoting 2 markets")`.

        True when the datagram went out; False when disabled or the send failed (full
        socket, systemd gone): the caller carries on, systemd acts on missing pings.
        """
        if self.address is None or not fields:
            return False
        message = format_message(fields)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
        except OSError as exc:  # BlockingIOError included: never wait for systemd
            self.dropped += 1
            logger.debug("sd_notify send failed: {}", exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(READY=1) if status is None else self.notify(READY=1, STATUS=status)

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(STOPPING=1) if status is None else self.notify(STOPPING=1, STATUS=status)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def notify(**fields: object) -> bool:
    """Send to `$NOTIFY_SOCKET` as it is now (read at each call); no-op when unset."""
    notifier = Notifier.from_env()
    try:
        return notifier.notify(**fields)
    finally:
        notifier.close()


@attrs.define
class WatchdogStatus:
    """Live counters of a running `watchdog_loop` (its `task_status.started` value)."""

    ping_every_s: float | None  # None: no watchdog requested, STATUS updates only
    pings: int = 0
    skipped_unhealthy: int = 0
    skipped_lagging: int = 0
    last_lag_s: float = 0.0
    max_lag_seen_s: float = 0.0


def _safe_call(fn: Callable[[], object], what: str) -> object | None:
    try:
        return fn()
    except Exception as exc:  # a broken probe must not stop the loop; it reads as unhealthy
        logger.opt(exception=exc).error("watchdog {} raised", what)
        return None


async def watchdog_loop(
    is_healthy: Callable[[], bool],
    *,
    status: Callable[[], str] | None = None,
    notifier: Notifier | None = None,
    ping_every_s: float | None = None,
    max_lag_s: float = DEFAULT_MAX_LAG_S,
    environ: Mapping[str, str] | None = None,
    task_status: trio.TaskStatus[WatchdogStatus] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Ping `WATCHDOG=1` every `ping_every_s` (default: half of `WATCHDOG_USEC`) while
    `is_healthy()` is true and the loop woke up at most `max_lag_s` late; send `STATUS=`
    whenever `status()` changes. Runs until cancelled; with no `NOTIFY_SOCKET` it only
    reports started and sleeps.

    Lag is how late `trio.sleep_until` returned: a loop blocked by slow synchronous code
    wakes late, and then we let systemd's timer run instead of vouching for it.
    """
    notifier = notifier if notifier is not None else Notifier.from_env(environ)
    if ping_every_s is None:
        timeout = watchdog_interval(environ)
        ping_every_s = timeout / 2 if timeout is not None else None
    state = WatchdogStatus(ping_every_s=ping_every_s)
    if not notifier.enabled or (ping_every_s is None and status is None):
        task_status.started(state)
        await trio.sleep_forever()
    tick = ping_every_s if ping_every_s is not None else DEFAULT_STATUS_EVERY_S
    last_status: object | None = None
    task_status.started(state)
    deadline = trio.current_time()
    while True:
        if status is not None:
            text = _safe_call(status, "status()")
            if text is not None and text != last_status and notifier.status(str(text)):
                last_status = text
        deadline += tick
        await trio.sleep_until(deadline)
        lag = trio.current_time() - deadline
        state.last_lag_s = lag
        state.max_lag_seen_s = max(state.max_lag_seen_s, lag)
        if lag > tick:  # far behind: start the schedule afresh rather than ping in a burst
            deadline = trio.current_time()
        if ping_every_s is None:
            continue
        if lag > max_lag_s:
            state.skipped_lagging += 1
            logger.warning("watchdog ping skipped: event loop {:.3f}s late", lag)
        elif not _safe_call(is_healthy, "is_healthy()"):
            state.skipped_unhealthy += 1
            logger.warning("watchdog ping skipped: not healthy")
        elif notifier.watchdog():
            state.pings += 1
