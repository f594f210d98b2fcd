"""The operator's live terminal panel: a Rich rendering of `AppStatus` (header with
network, breaker, dead man's switch, rate budget and uptime; one panel per market; recent
warnings), redrawn from a trio loop without Rich's refresh thread. The rendering itself
(pure, readable down to 80 columns) is `extmm.ops.dashboard_render`. When stdout is not a terminal
(systemd, docker logs, a pipe) `run_dashboard` prints one `summary_line` every
`summary_every_s` seconds instead, or nothing if that is 0.
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from loguru import logger
from rich.console import Console, RenderableType
from rich.live import Live
from rich.segment import SegmentLines
from rich.text import Text

from extmm.ops.dashboard_render import render, render_compact, summary_line
from extmm.ops.status import AppStatus

StatusGetter = Callable[[], AppStatus | None]


# -- live loop ---------------------------------------------------------------------------


def prerender(status: AppStatus | None, console: Console) -> SegmentLines:
    """The panel laid out to lines at the console's current width. Thread-safe (the status
    is immutable); printing the result is a cheap replay, so the expensive layout can run
    off the trio thread."""
    options = console.options.update(width=console.width)
    lines = console.render_lines(render(status), options, pad=False)
    if len(lines) > console.height:
        # A small terminal (e.g. 80x24): the compact layout, so nothing scrolls away.
        lines = console.render_lines(render_compact(status), options, pad=False)
    return SegmentLines(lines, new_lines=True)


class _SafeRenderer:
    """Turns a failing status builder or renderer into a visible message, logged once."""

    def __init__(self, get_status: StatusGetter) -> None:
        self._get_status = get_status
        self._failures = 0
        self.failed = False

    def status(self) -> AppStatus | None:
        """The current status; None (and `failed` set) if the builder raised."""
        self.failed = False
        try:
            return self._get_status()
        except Exception:
            self.failed = True
            self._report()
            return None

    def frame(self, status: AppStatus | None, console: Console) -> SegmentLines | Text:
        try:
            return prerender(status, console)
        except Exception:
            self._report()
            return self.failed_text()

    def failed_text(self) -> Text:
        return Text(f"dashboard: rendering failed ({self._failures}x), see the log", style="bold red")

    def _report(self) -> None:
        self._failures += 1
        if self._failures == 1:
            logger.opt(exception=True).warning("dashboard: rendering the status failed")


async def run_dashboard(
    get_status: StatusGetter,
    *,
    refresh_per_s: float = 4.0,
    console: Console | None = None,
    summary_every_s: float = 30.0,
    screen: bool = False,
    render_in_thread: bool = True,
) -> None:
    """Redraw the panel `refresh_per_s` times a second until cancelled.

    `get_status` is called in the trio thread (it may use `trio.current_time()`). Rich's
    own refresh thread stays off (`auto_refresh=False`); each frame is laid out in a
    worker thread (10-20 ms of Rich work for two markets; the trio thread only replays
    the finished lines, under 1 ms) unless `render_in_thread` is False. While the panel is live,
    writes to stdout/stderr (our log lines) are printed above it. Without a terminal the
    loop prints `summary_line` every `summary_every_s` seconds, or nothing if that is 0.
    """
    if refresh_per_s <= 0:
        raise ValueError("refresh_per_s must be positive")
    console = console if console is not None else Console()
    safe = _SafeRenderer(get_status)
    if not console.is_terminal:
        if summary_every_s <= 0:
            await trio.sleep_forever()
        while True:
            status = safe.status()
            if status is not None:
                console.print(summary_line(status), markup=False, highlight=False, soft_wrap=True)
            await trio.sleep(summary_every_s)

    interval = 1.0 / refresh_per_s
    with Live(
        Text("extmm: starting the dashboard…", style="dim"),
        console=console,
        auto_refresh=False,
        screen=screen,
        transient=False,
        redirect_stdout=True,
        redirect_stderr=True,
    ) as live:
        while True:
            next_frame_at = trio.current_time() + interval
            # The status is built here, in the trio thread (it may read trio's clock);
            # only the immutable snapshot crosses into the worker thread.
            status = safe.status()
            renderable: RenderableType
            if safe.failed:
                renderable = safe.failed_text()
            elif render_in_thread:
                renderable = await trio.to_thread.run_sync(safe.frame, status, console)
            else:
                renderable = safe.frame(status, console)
            live.update(renderable, refresh=True)
            try:
                await trio.sleep_until(next_frame_at)
            except trio.Cancelled:
                # The last frame shows the state after shutdown, as the summary does.
                live.update(safe.frame(safe.status(), console), refresh=True)
                raise
