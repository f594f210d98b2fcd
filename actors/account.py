"""Account: the private account stream of one market; source of truth for inventory.

Opens the account stream (snapshots of orders, balance and positions first, then
ORDER/TRADE/POSITION/BALANCE updates), forwards order updates and fills to the
Executor, keeps the PnL ledger (spread, inventory, fees, funding) marked at the book's
mid, publishes `Inventory` to the Quoter and Risk on change and periodically, and
reconciles the position over REST, counting every drift it corrects.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from decimal import Decimal

import trio
from loguru import logger

from actors.channels import offer
from actors.messages import AccountIn, ExecIn, FillEvent, Inventory, OrderUpdate, QuoterIn, RiskIn, TopOfBook
from extmm.domain.pnl import MarketLedger
from extmm.domain.units import MarketSpec, Rounding
from extmm.journal.actor import Journal
from extmm.journal.hooks import MarketJournal
from extmm.ops.telemetry import AccountStats, Telemetry
from extmm.venue.errors import RECOVERABLE_STREAM_ERRORS as RECOVERABLE
from extmm.venue.errors import VenueError
from extmm.venue.port import ExchangePort
from extmm.venue.types import (
    BalanceInfo,
    BalanceUpdate,
    OrderInfo,
    OrdersUpdate,
    PositionInfo,
    PositionsUpdate,
    TradeInfo,
    TradesUpdate,
    track_open_orders,
)


class _AccountView:
    """The Account actor's own mutable view of the account (never shared outside the actor)."""

    def __init__(self, spec: MarketSpec) -> None:
        self.spec = spec
        self.position_lots = 0
        self.balance: BalanceInfo | None = None
        self.open_orders: dict[str, OrderInfo] = {}
        self.ledger: MarketLedger | None = None
        self.mid: Decimal | None = None
        self.peak_pnl = Decimal(0)
        self.fills = 0
        self.drift_corrections = 0
        self.seen_trades: set[int] = set()
        self.seen_trade_order: deque[int] = deque()
        self.seen_funding: set[tuple[int, str]] = set()
        self.changed = trio.Event()
        self.stream_up = False  # the account stream delivered its snapshots and is connected

    def position_from(self, positions: tuple[PositionInfo, ...] | list[PositionInfo]) -> int:
        lots = 0
        for p in positions:
            if p.market == self.spec.name:
                lots += self.spec.qty_to_lots(p.signed_size, Rounding.DOWN if p.signed_size > 0 else Rounding.UP)
        return lots

    def remember_trade(self, trade_id: int) -> bool:
        """False if the trade was already seen (the stream may repeat after a reconnect)."""
        if trade_id in self.seen_trades:
            return False
        self.seen_trades.add(trade_id)
        self.seen_trade_order.append(trade_id)
        if len(self.seen_trade_order) > 10_000:
            self.seen_trades.discard(self.seen_trade_order.popleft())
        return True

    def inventory(self) -> Inventory:
        bids = sum(1 for o in self.open_orders.values() if o.side.value == "BUY")
        pnl = self.ledger.total if self.ledger is not None else Decimal(0)
        self.peak_pnl = max(self.peak_pnl, pnl)
        return Inventory(
            position_lots=self.position_lots,
            balance_usd=float(self.balance.balance) if self.balance is not None else None,
            equity_usd=float(self.balance.equity) if self.balance is not None else None,
            open_bids=bids,
            open_asks=len(self.open_orders) - bids,
            drawdown_usd=float(self.peak_pnl - pnl),
            at=trio.current_time(),
            live=self.stream_up,
        )


async def account_actor(
    *,
    port: ExchangePort,
    spec: MarketSpec,
    inbox: trio.MemoryReceiveChannel[AccountIn],
    to_quoter: trio.MemorySendChannel[QuoterIn],
    to_risk: trio.MemorySendChannel[RiskIn],
    to_executor: trio.MemorySendChannel[ExecIn],
    telemetry: Telemetry,
    reconnect_delay: Callable[[int], float],
    reconcile_every_s: float = 5.0,
    publish_every_s: float = 1.0,
    funding_every_s: float = 60.0,
    snapshot_timeout_s: float = 30.0,
    journal: Journal | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    market = spec.name
    state = _AccountView(spec)
    journaled = MarketJournal(journal or Journal.disabled(), market)
    ready = trio.Event()

    async def publish() -> None:
        inv = state.inventory()
        offer(to_quoter, inv)
        offer(to_risk, inv)
        snap = state.ledger.snapshot() if state.ledger is not None else None
        journaled.mark(state.ledger)
        position = spec.lots_to_qty(state.position_lots)
        telemetry.publish(
            AccountStats(
                market=market,
                position=position,
                position_usd=float(position * state.mid) if state.mid is not None else 0.0,
                pnl={
                    "spread": snap.spread if snap else Decimal(0),
                    "inventory": snap.inventory if snap else Decimal(0),
                    "fees": snap.fees if snap else Decimal(0),
                    "funding": snap.funding if snap else Decimal(0),
                    "net": snap.total if snap else Decimal(0),
                },
                fills=state.fills,
                balance=state.balance.balance if state.balance else None,
                equity=state.balance.equity if state.balance else None,
                drift_corrections=state.drift_corrections,
                at=trio.current_time(),
                ledger=state.ledger,
            )
        )

    def on_orders(orders: tuple[OrderInfo, ...], is_snapshot: bool) -> list[OrderInfo]:
        mine = [o for o in orders if o.market == market]
        track_open_orders(state.open_orders, mine, snapshot=is_snapshot)
        return mine

    def on_trade(t: TradeInfo) -> bool:
        if t.market != market or not state.remember_trade(t.id):
            return False
        state.fills += 1
        state.position_lots += t.side.sign * spec.qty_to_lots(t.qty, Rounding.DOWN)
        if state.ledger is None:
            state.ledger = MarketLedger(market=market)
        state.ledger = state.ledger.with_fill(t.side, t.price, t.qty, fee=t.fee, mid=state.mid or t.price)
        journaled.fill(t, state.mid or t.price)
        return True

    async def stream_loop() -> None:
        failures = 0
        while True:
            try:
                async with port.account_stream() as stream:
                    got: set[str] = set()
                    while True:
                        update = await stream.receive()
                        # The account stream carries every market's updates: only this
                        # market's (and the balance) change what Quoter and Risk see.
                        relevant = False
                        match update:
                            case OrdersUpdate(orders=orders, is_snapshot=snap):
                                mine = on_orders(orders, snap)
                                for o in mine:
                                    offer(to_executor, OrderUpdate(order=o))
                                relevant = snap or bool(mine)
                                got.add("orders")
                            case TradesUpdate(trades=trades, is_snapshot=snap):
                                for t in trades:
                                    # Snapshot trades are history: remember, don't count them.
                                    if snap:
                                        state.remember_trade(t.id)
                                    elif on_trade(t):
                                        offer(to_executor, FillEvent(trade=t))
                                        relevant = True
                            case PositionsUpdate(positions=positions, is_snapshot=snap):
                                held = [p for p in positions if p.market == market]
                                if snap or held:
                                    state.position_lots = state.position_from(held)
                                    relevant = True
                                got.add("positions")
                            case BalanceUpdate(balance=balance):
                                state.balance = balance
                                relevant = True
                                got.add("balance")
                        if not state.stream_up and {"orders", "positions"} <= got:
                            # Snapshots in: this connection is good, the backoff starts over.
                            failures = 0
                            state.stream_up = True
                            ready.set()
                            relevant = True
                        if relevant:
                            state.changed.set()
            except RECOVERABLE as exc:
                failures += 1
                state.stream_up = False
                state.changed.set()  # tell Quoter and Risk at once: inventory is not live
                delay = reconnect_delay(failures)
                logger.warning("{}: account stream failed ({}); reconnect #{} in {:.2f}s", market, exc, failures, delay)
                await trio.sleep(delay)

    async def mid_loop() -> None:
        # Most tops leave the touch where it was (sizes change behind it). Marking a ledger
        # that is already marked at this mid changes nothing once it has been done twice in
        # a row (the second pass only settles the Decimal form of `inventory`, x + 0), so a
        # ledger in that state is not marked again: same values, same form, same journal.
        touch: tuple[int, int] | None = None  # the (bid, ask) ticks `mid` was computed from
        mid = Decimal(0)
        marked: MarketLedger | None = None  # the ledger the last top produced
        settled: MarketLedger | None = None  # ... when marking it again at `mid` is a no-op
        async for top in inbox:
            # Conflate: only the newest top matters.
            while True:
                try:
                    top = inbox.receive_nowait()
                except trio.WouldBlock:
                    break
            if not isinstance(top, TopOfBook) or not top.valid or top.bid_ticks is None or top.ask_ticks is None:
                continue
            same_touch = touch == (top.bid_ticks, top.ask_ticks)
            if not same_touch:
                touch = (top.bid_ticks, top.ask_ticks)
                mid = (spec.ticks_to_price(top.bid_ticks) + spec.ticks_to_price(top.ask_ticks)) / 2
            state.mid = mid
            if not (same_touch and state.ledger is not None and state.ledger is settled):
                if state.ledger is None:
                    state.ledger = MarketLedger.opening(market, position=spec.lots_to_qty(state.position_lots),
                                                        mark=mid) if state.position_lots else MarketLedger(market=market)
                    journaled.mark(state.ledger.with_mark(mid), kind="open")
                previous = state.ledger
                state.ledger = previous.with_mark(mid)
                settled = state.ledger if same_touch and previous is marked else None
                marked = state.ledger
            journaled.mid(mid)

    async def reconcile_loop() -> None:
        suspect: tuple[int, int] | None = None
        while True:
            await trio.sleep(reconcile_every_s)
            try:
                positions = await port.get_positions(market)
                balance = await port.get_balance()
            except VenueError as exc:
                logger.warning("{}: position reconciliation failed: {}", market, exc)
                continue
            venue_lots = state.position_from(positions)
            if venue_lots == state.position_lots:
                suspect = None
            elif suspect != (venue_lots, state.position_lots):
                # REST and the stream race by a few milliseconds on a busy market: correct
                # only a difference that is still there, unchanged, one period later.
                suspect = (venue_lots, state.position_lots)
            else:
                state.drift_corrections += 1
                logger.warning("{}: position drift corrected: ours {} lots, venue {} lots",
                               market, state.position_lots, venue_lots)
                state.position_lots = venue_lots
                state.changed.set()
                suspect = None
            if balance is not None:
                state.balance = balance

    async def funding_loop() -> None:
        while True:
            try:
                payments = await port.get_funding_history(market)
            except VenueError as exc:
                logger.debug("{}: funding history failed: {}", market, exc)
                payments = []
            for p in sorted(payments, key=lambda p: p.paid_ms):
                key = (p.paid_ms, p.market)
                if p.market != market or key in state.seen_funding:
                    continue
                state.seen_funding.add(key)
                if state.ledger is None:
                    state.ledger = MarketLedger(market=market)
                state.ledger = state.ledger.with_funding(p.funding_fee)
                journaled.funding(p)
            await trio.sleep(funding_every_s)

    async def publish_loop() -> None:
        while True:
            with trio.move_on_after(publish_every_s):
                await state.changed.wait()
            state.changed = trio.Event()
            await publish()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream_loop)
        nursery.start_soon(mid_loop)
        with trio.fail_after(snapshot_timeout_s):
            await ready.wait()
        # Funding already paid before this start is history, not this session's PnL.
        try:
            for p in await port.get_funding_history(market):
                state.seen_funding.add((p.paid_ms, p.market))
        except VenueError as exc:
            logger.debug("{}: funding history unavailable at start: {}", market, exc)
        await publish()
        nursery.start_soon(reconcile_loop)
        nursery.start_soon(funding_loop)
        nursery.start_soon(publish_loop)
        task_status.started()
