"""Risk: clamps the Quoter's intents to the account's limits before the Executor.

USD net-position limit at the current mid, max open orders, minimum balance, stale-book
guard and the drawdown kill switch (`extmm.domain.risk.clamp_intent`). The root's
`TradingMode` (circuit breaker, halt) turns both sides off. A denied side reaches the
Executor as no target, which makes it cancel.
"""

from __future__ import annotations

import math

import trio
from loguru import logger

from actors.channels import send
from actors.messages import Approved, ExecIn, Inventory, Proposal, RiskIn, TradingMode
from extmm.config import RiskConfig
from extmm.domain.execution import SideTarget
from extmm.domain.quoting import QuoteIntent, min_quote_lots
from extmm.domain.risk import ExposureBoard, RiskReason, RiskSnapshot, clamp_intent
from extmm.domain.units import MarketSpec
from extmm.ops.telemetry import RiskStats, Telemetry


async def risk_actor(
    *,
    spec: MarketSpec,
    limits: RiskConfig,
    min_order_size: float,
    inbox: trio.MemoryReceiveChannel[RiskIn],
    out: trio.MemorySendChannel[ExecIn],
    initially_active: bool = True,
    inventory_stale_s: float = 3.0,
    exposure: ExposureBoard | None = None,
    telemetry: Telemetry | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    inventory: Inventory | None = None
    mode = TradingMode(active=initially_active, reason="start")
    min_lots = min_quote_lots(spec, min_order_size)
    last_published: tuple[bool | None, tuple[str, ...], float] = (None, (), -math.inf)
    task_status.started()
    async for msg in inbox:
        match msg:
            case Inventory():
                inventory = msg
                continue
            case TradingMode():
                if msg.active != mode.active:
                    logger.info("{}: trading mode {} ({})", spec.name, "ACTIVE" if msg.active else "OFF", msg.reason)
                mode = msg
                if not mode.active:
                    await send(out, Approved(bid=None, ask=None, reasons=(f"off: {mode.reason}",),
                                            decided_at=trio.current_time()))
                continue
            case Proposal():
                proposal = msg
        now = trio.current_time()
        if not mode.active:
            await send(out, Approved(bid=None, ask=None, reasons=(f"off: {mode.reason}",), decided_at=now))
            continue
        if inventory is None or not inventory.live or now - inventory.at > inventory_stale_s:
            # Without a live, recent account view the position may be stale (the Account
            # publishes every second; silence means it is down or restarting): quote nothing.
            reason = "inventory unknown" if inventory is None else "inventory stale"
            if exposure is not None:
                exposure.report(spec.name, None)
            await send(out, Approved(bid=None, ask=None, reasons=(reason,), decided_at=now))
            continue
        mid = proposal.mid if proposal.mid is not None else math.nan
        others = None
        if exposure is not None:
            exposure.report(spec.name, spec.lots_to_float(inventory.position_lots) * mid)
            if limits.max_total_net_position_usd is not None:
                others = exposure.others(spec.name)
        decision = clamp_intent(
            proposal.intent,
            spec=spec,
            limits=limits,
            snapshot=RiskSnapshot(
                mid=proposal.mid if proposal.mid is not None else math.nan,
                position_lots=inventory.position_lots,
                balance_usd=inventory.balance_usd if inventory.balance_usd is not None else 0.0,
                book_age_ms=(now - proposal.book_updated_at) * 1000.0,
                open_orders=inventory.open_orders,
                live_bid=inventory.open_bids > 0,
                live_ask=inventory.open_asks > 0,
                live_bids=inventory.open_bids,
                live_asks=inventory.open_asks,
                drawdown_usd=inventory.drawdown_usd,
                other_markets_usd=others,
            ),
            min_order_lots=min_lots,
        )
        intent = decision.intent
        reasons = tuple(r.value for r in decision.reasons)
        if telemetry is not None:
            reducing = RiskReason.REDUCING in decision.reasons
            # On change only (or once a second): Risk judges every proposal, ~10 a second.
            if (reducing, reasons) != last_published[:2] or now - last_published[2] >= 1.0:
                telemetry.publish(RiskStats(market=spec.name, reducing=reducing, reasons=reasons, at=now))
                last_published = (reducing, reasons, now)
        if mode.size_fraction < 1.0:
            intent = _scaled(intent, mode.size_fraction, min_lots)
        await send(out,
            Approved(
                bid=SideTarget(ticks=intent.bid_ticks, lots=intent.bid_lots) if intent.has_bid else None,
                ask=SideTarget(ticks=intent.ask_ticks, lots=intent.ask_lots) if intent.has_ask else None,
                reasons=reasons + (intent.note,) if intent.note else reasons,
                decided_at=now,
                kill=decision.kill,
                book_updated_at=proposal.book_updated_at,
                more_bids=_targets(intent.more_bids),
                more_asks=_targets(intent.more_asks),
            )
        )


def _targets(levels: tuple[tuple[int, int], ...]) -> tuple[SideTarget | None, ...]:
    return tuple(SideTarget(ticks=t, lots=lots) if lots else None for t, lots in levels)


def _scaled(intent: QuoteIntent, fraction: float, min_lots: int) -> QuoteIntent:
    """Shrink both sides (never below the minimum size) while the breaker probes."""

    def shrink(lots: int) -> int:
        return max(int(lots * fraction), min_lots) if lots else 0

    return intent.with_ladders(
        tuple((t, shrink(lots)) for t, lots in intent.bid_ladder),
        tuple((t, shrink(lots)) for t, lots in intent.ask_ladder),
    )
