"""The per-market supervisor: one market's six actors and the channels between them.

Strategy ONE_FOR_ONE, because every actor rebuilds its own state from its sources when
it restarts — the Book asks the Feed for a fresh snapshot, the Account re-reads the
account snapshot, the Executor reconciles with the venue's open orders before quoting,
the Quoter and Risk wait for the next book top and inventory — so a crash of one actor
never needs to disturb its neighbours. The channels belong to `MarketWiring`, which
outlives actor incarnations: a restarted actor reattaches to the same channel ends.
Children start in dependency order (Account, Executor, Risk, Quoter, Book, Feed), so a
producer always finds its consumer running; the Feed is last and ready only after the
first snapshot.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import trio

from actors.account import account_actor
from actors.book import book_actor
from actors.executor import ExecutorParams, executor_actor
from actors.feed import feed_actor
from actors.messages import AccountIn, ExecIn, FeedControl, FeedOut, QuoterIn, RiskIn, TradingMode
from actors.quoter import quoter_actor
from actors.risk import risk_actor
from extmm.config import BotConfig, MarketConfig
from extmm.domain.backoff import Backoff
from extmm.domain.risk import ExposureBoard
from extmm.domain.units import MarketSpec
from extmm.journal.actor import Journal
from extmm.ops.telemetry import Telemetry
from extmm.venue.port import ExchangePort
from extmm.venue.signing import ExternalIdFactory
from supervisors.spec import ChildSpec, StartFn, Strategy, SupervisorSpec

ACTORS = ("account", "executor", "risk", "quoter", "book", "feed")


def _pair(size: int) -> tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]:
    return trio.open_memory_channel(size)


@attrs.define
class MarketWiring:
    """All channels of one market, created once per market supervisor."""

    feed_out: tuple[trio.MemorySendChannel[FeedOut], trio.MemoryReceiveChannel[FeedOut]]
    feed_control: tuple[trio.MemorySendChannel[FeedControl], trio.MemoryReceiveChannel[FeedControl]]
    quoter_in: tuple[trio.MemorySendChannel[QuoterIn], trio.MemoryReceiveChannel[QuoterIn]]
    risk_in: tuple[trio.MemorySendChannel[RiskIn], trio.MemoryReceiveChannel[RiskIn]]
    exec_in: tuple[trio.MemorySendChannel[ExecIn], trio.MemoryReceiveChannel[ExecIn]]
    account_in: tuple[trio.MemorySendChannel[AccountIn], trio.MemoryReceiveChannel[AccountIn]]

    @classmethod
    def create(cls) -> MarketWiring:
        return cls(
            feed_out=_pair(256),
            feed_control=_pair(1),
            quoter_in=_pair(64),
            risk_in=_pair(64),
            exec_in=_pair(256),
            account_in=_pair(16),
        )

    def set_trading_mode(self, mode: TradingMode) -> bool:
        """Tell this market's Risk to quote or not (root/breaker); never blocks."""
        try:
            self.risk_in[0].send_nowait(mode)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True


# How every stream consumer backs off between reconnects (Feed, Account, the shared
# account stream).
STREAM_RECONNECT = Backoff(initial=0.5, factor=2.0, cap=15.0, jitter=0.2)


@attrs.frozen(kw_only=True)
class MarketContext:
    """What the actors of one market need from the root."""

    bot: BotConfig
    market: MarketConfig
    spec: MarketSpec
    port: ExchangePort
    maker_fee_rate: float
    taker_fee_rate: float
    ids: ExternalIdFactory
    epoch_ms: Callable[[], int]
    telemetry: Telemetry
    reconnect: Backoff = STREAM_RECONNECT
    restart_backoff: Backoff = Backoff(initial=0.5, factor=2.0, cap=30.0, jitter=0.2)
    intensity: int = 5
    period: float = 30.0
    rng: random.Random = attrs.field(factory=random.Random, eq=False)
    # Read at every (re)start of Risk: one restarted while the breaker is open must not
    # resume quoting.
    trading_active: Callable[[], bool] = lambda: True
    # Counts this market's stream reconnects by topic (summary, metrics).
    on_reconnect: Callable[[str], None] = lambda topic: None
    journal: Journal | None = None  # the trading journal's non-blocking sink
    # Every market's |net USD| for risk.max_total_net_position_usd (shared by the root).
    exposure: ExposureBoard | None = None


def reconnect_delay(policy: Backoff, rng: random.Random) -> Callable[[int], float]:
    """Seconds to wait before reconnect attempt n (1-based) under `policy`."""
    return lambda attempt: policy.delay(max(attempt - 1, 0), rng)


def market_supervisor_spec(ctx: MarketContext, wiring: MarketWiring) -> SupervisorSpec:
    bot, market, spec = ctx.bot, ctx.market, ctx.spec
    reconnect = reconnect_delay(ctx.reconnect, ctx.rng)
    w = wiring
    params = ExecutorParams(
        stp=bot.stp,
        post_only=market.post_only,
        replace_threshold_bps=market.replace_threshold_bps,
        coalesce_s=bot.replace_coalesce_ms / 1000.0,
        order_expiry_s=float(bot.order_expiry_s),
        maker_fee_rate=Decimal(str(ctx.maker_fee_rate)),
        taker_fee_rate=Decimal(str(ctx.taker_fee_rate)),
        prefix=bot.external_id_prefix,
        stale_target_s=max(bot.risk.stale_book_ms / 1000.0, 1.0),
        stale_book_s=bot.risk.stale_book_ms / 1000.0,
        max_open_orders=bot.risk.max_open_orders,
        levels=market.levels,
    )
    starts: dict[str, StartFn] = {
        "account": functools.partial(
            account_actor,
            port=ctx.port,
            spec=spec,
            inbox=w.account_in[1],
            to_quoter=w.quoter_in[0],
            to_risk=w.risk_in[0],
            to_executor=w.exec_in[0],
            telemetry=ctx.telemetry,
            reconnect_delay=reconnect,
            journal=ctx.journal,
        ),
        "executor": functools.partial(
            executor_actor,
            port=ctx.port,
            spec=spec,
            params=params,
            ids=ctx.ids,
            inbox=w.exec_in[1],
            epoch_ms=ctx.epoch_ms,
            telemetry=ctx.telemetry,
            journal=ctx.journal,
        ),
        "risk": lambda task_status=trio.TASK_STATUS_IGNORED: risk_actor(
            spec=spec,
            limits=bot.risk,
            min_order_size=market.min_order_size,
            inbox=w.risk_in[1],
            out=w.exec_in[0],
            initially_active=ctx.trading_active(),
            exposure=ctx.exposure,
            telemetry=ctx.telemetry,
            task_status=task_status,
        ),
        "quoter": functools.partial(
            quoter_actor,
            spec=spec,
            market=market,
            inbox=w.quoter_in[1],
            out=w.risk_in[0],
            quote_loop_s=bot.quote_loop_ms / 1000.0,
            # Downstream book ages stay well inside the stale-book limit.
            resend_after_s=bot.risk.stale_book_ms / 4000.0,
            maker_fee_rate=ctx.maker_fee_rate,
            telemetry=ctx.telemetry,
        ),
        "book": functools.partial(
            book_actor,
            spec=spec,
            inbox=w.feed_out[1],
            to_quoter=w.quoter_in[0],
            to_account=w.account_in[0],
            feed_control=w.feed_control[0],
            telemetry=ctx.telemetry,
        ),
        "feed": functools.partial(
            feed_actor,
            port=ctx.port,
            market=spec.name,
            out=w.feed_out[0],
            control=w.feed_control[1],
            reconnect_delay=reconnect,
            trades_stream=market.model.recalibrate,  # prints feed the Quoter's online calibration
            on_reconnect=ctx.on_reconnect,
        ),
    }
    return SupervisorSpec(
        id=spec.name,
        children=[ChildSpec(id=name, start=starts[name], shutdown_timeout=5.0) for name in ACTORS],
        strategy=Strategy.ONE_FOR_ONE,
        intensity=ctx.intensity,
        period=ctx.period,
        backoff=ctx.restart_backoff,
    )
