"""The main job: trade the enabled markets of a config on paper, testnet, mainnet or any
compatible endpoint, with the live panel, metrics and systemd notifications.

Paper mode (the default, no credentials needed) starts the embedded Extended simulator on
127.0.0.1 in the same process and trades against it over real sockets, exactly as it
would against the venue. On exit one JSON line summarises the run on stdout.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import trio
from loguru import logger

from extmm.config import BotConfig
from extmm.journal.actor import Journal
from extmm.ops.dashboard import run_dashboard
from extmm.ops.metrics import Metrics, serve_metrics
from extmm.ops.secrets import Secrets, register_secret
from extmm.venue.endpoints import endpoint_for
from extmm.venue.network import NetworkVenue
from extmm.venue.rest import ChannelObserver
from extmm.venue.signing import Credentials
from supervisors.root import RootSupervisor, RunSummary, StartupError


@attrs.frozen(kw_only=True)
class RunOptions:
    network: str  # paper | testnet | mainnet | custom
    rest_url: str | None = None
    stream_url: str | None = None
    duration_s: float | None = None
    dashboard: bool = True
    metrics_port: int | None = 9464
    metrics_host: str = "127.0.0.1"
    seed: int | None = None
    flow: str = "default"  # paper: the embedded simulator's flow preset (extmm.sim.flow.FLOW_PRESETS)
    watchdog: bool = True
    settle_gc: bool = True  # freeze the start-up heap once ready (see extmm.ops.gctune)
    allow_foreign_orders: bool = False  # start although the sub-account has orders not ours
    market_data: tuple[str, str] | None = None  # paper on this venue's live public data (REST, stream)
    journal: str | None = None  # the trading journal's file (None: no journal)


def startup_error_of(exc: BaseException) -> StartupError | None:
    """The StartupError behind `exc` (trio wraps it in exception groups), if that is all it is."""
    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [startup_error_of(e) for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if found and all(f is not None for f in found):
            return found[0]
    return None


def wall_clock_ms() -> int:
    """Epoch milliseconds for order expiries: the only wall-clock read, at the edge."""
    return int(time.time() * 1000)


async def _watch_signals(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logger.warning("received {}; shutting down", signal.Signals(signum).name)
            stop.set()
            return


async def _stop_after(seconds: float, stop: trio.Event) -> None:
    await trio.sleep(seconds)
    logger.info("duration of {}s reached; shutting down", seconds)
    stop.set()


async def run_bot(
    cfg: BotConfig,
    opts: RunOptions,
    secrets: Secrets,
    *,
    warnings: Callable[[], tuple[str, ...]] = lambda: (),
    on_ready: Callable[[RootSupervisor], Any] | None = None,
    stop: trio.Event | None = None,
) -> RunSummary:
    stop = stop if stop is not None else trio.Event()
    result: list[RunSummary] = []
    metrics = Metrics()
    roots: list[RootSupervisor] = []

    def status() -> Any:
        if not roots or not roots[0].ready:
            return None  # /healthz: 503 "no status yet"
        st = roots[0].status()
        metrics.update(st)
        return st

    async with trio.open_nursery() as nursery:
        if opts.metrics_port is not None:
            # Bound before anything is sent: a second instance on the same port stops here.
            try:
                await nursery.start(lambda task_status: serve_metrics(
                    metrics, status, host=opts.metrics_host, port=opts.metrics_port, task_status=task_status))
            except BaseException as exc:  # OSError, possibly inside an exception group
                os_error = _os_error_of(exc)
                if os_error is None:
                    raise
                raise StartupError(
                    f"cannot serve metrics on {opts.metrics_host}:{opts.metrics_port}: "
                    f"{os_error.strerror or os_error} (another instance? pick another --metrics-port, "
                    "or 0 to disable); nothing was sent"
                ) from None
        if opts.network == "paper":
            from extmm.sim.server import serve_simulator

            seed = opts.seed if opts.seed is not None else random.randrange(2**31)
            names = [m.name for m in cfg.enabled_markets]
            if opts.market_data is not None:
                from extmm.runtime.marketdata import MarketDataError, serve_market_data_simulator

                source = opts.market_data
                try:
                    handle = await nursery.start(
                        lambda task_status: serve_market_data_simulator(
                            source=source, markets=names, seed=seed, task_status=task_status
                        )
                    )
                except MarketDataError as exc:
                    raise StartupError(str(exc)) from None
            else:
                handle = await nursery.start(
                    lambda task_status: serve_simulator(markets=names, seed=seed, flow=opts.flow,
                                                        task_status=task_status)
                )
            rest_url, stream_url = handle.rest_url, handle.stream_url
            creds = handle.account.credentials()
            domain = None  # fetched from the simulator's /info/starknet
            logger.info("paper trading against the embedded simulator at {}", rest_url)
        else:
            endpoint = endpoint_for(opts.network if opts.network != "custom" else "custom",
                                    rest_url=opts.rest_url, stream_url=opts.stream_url)
            rest_url, stream_url, domain = endpoint.rest_url, endpoint.stream_url, endpoint.signing_domain
            creds = Credentials.from_secrets(secrets)
        register_secret(creds.api_key)
        register_secret(creds.stark_private_key)
        outcomes_send, outcomes_recv = trio.open_memory_channel[Any](1024)
        async with NetworkVenue(
            rest_url,
            stream_url,
            creds,
            signing_domain=domain,
            observer=ChannelObserver(outcomes_send),
            rate_limit_per_min=cfg.rate_limit_per_min,
        ) as venue:
            journal = await open_run_journal(cfg, opts, creds.vault, venue)
            root = RootSupervisor(
                cfg=cfg,
                port=venue,
                network=opts.network,
                epoch_ms=wall_clock_ms,
                request_outcomes=outcomes_recv,
                warnings=warnings,
                allow_foreign_orders=opts.allow_foreign_orders,
                journal=journal,
                send_alerts=True,
            )
            roots.append(root)

            nursery.start_soon(_watch_signals, stop)
            try:
                async with trio.open_nursery() as inner:

                    async def run_root(task_status: trio.TaskStatus[RootSupervisor] = trio.TASK_STATUS_IGNORED) -> None:
                        result.append(await root.run(stop=stop, task_status=task_status))
                        inner.cancel_scope.cancel()  # the panel, metrics and watchdog end with it

                    await inner.start(run_root)
                    await _after_ready(root, opts, inner, stop, on_ready, status)
            finally:
                journal.release()
        nursery.cancel_scope.cancel()
    if not result:
        raise StartupError("the bot stopped before it was ready")
    return result[0]


async def open_run_journal(cfg: BotConfig, opts: RunOptions, vault: int, venue: Any) -> Journal:
    """The session's journal (or a disabled one); StartupError, one line, when unusable."""
    if opts.journal is None:
        return Journal.disabled()
    from extmm.journal.schema import JournalError
    from extmm.journal.session import SessionMeta, open_session, reconcile_missed_fills

    meta = SessionMeta.for_config(cfg, kind="paper" if opts.network == "paper" else "live",
                                  network=opts.network, account=f"vault {vault}")
    markets = meta.markets
    path = opts.journal
    try:
        journal = await trio.to_thread.run_sync(lambda: open_session(path, meta, clock=time.time))
    except JournalError as exc:
        raise StartupError(str(exc)) from None
    if opts.network != "paper":  # the embedded simulator starts with no history
        await reconcile_missed_fills(journal, venue.get_trades, markets, now_ms=wall_clock_ms())
    logger.info("journal {} (session {}); lifetime PnL before it: {}", path,
                journal.writer.session_id if journal.writer is not None else "?",
                journal.lifetime_net())
    return journal


async def _after_ready(
    root: RootSupervisor,
    opts: RunOptions,
    nursery: trio.Nursery,
    stop: trio.Event,
    on_ready: Callable[[RootSupervisor], Any] | None,
    status: Callable[[], Any],
) -> None:
    from extmm.ops import sdnotify

    if opts.settle_gc:
        from extmm.ops.gctune import settle_heap

        logger.debug("start-up heap frozen: {} objects", settle_heap())
    if opts.duration_s is not None:
        nursery.start_soon(_stop_after, opts.duration_s, stop)
    if opts.dashboard:
        nursery.start_soon(lambda: run_dashboard(status))
    if opts.watchdog:
        sdnotify.notify(READY=1, STATUS=f"extmm {opts.network}: {len(root.markets)} markets ready")
        nursery.start_soon(lambda: sdnotify.watchdog_loop(root.healthy, status=lambda: _status_line(root)))

        async def notify_stopping() -> None:
            await stop.wait()
            sdnotify.notify(STOPPING=1, STATUS="stopping: cancelling all orders")

        nursery.start_soon(notify_stopping)
    if on_ready is not None:
        on_ready(root)


def _os_error_of(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, OverflowError):  # socket.bind on an out-of-range port
        return OSError(str(exc))
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _os_error_of(inner)
            if found is not None:
                return found
    return None


def _status_line(root: RootSupervisor) -> str:
    st = root.status()
    net = sum((m.pnl.net for m in st.markets), Decimal(0))
    return (f"{st.network} breaker={st.breaker_state} markets="
            + ",".join(f"{m.name}:{m.state}" for m in st.markets) + f" pnl={net:.2f}")


def print_summary(summary: RunSummary) -> None:
    # the JSON log keeps it too (extra.summary, a JSON string: the log masks extra values as text)
    logger.bind(summary=json.dumps(summary.to_json())).info("exit summary")
    sys.stdout.write(json.dumps(summary.to_json()) + "\n")
    sys.stdout.flush()
