"""Matching: an accepted order against the book, its fills, and how an order ends.

`Matcher.submit` matches an order price-time against the opposite side, rests what is
left (GTT) or ends it (IOC / MARKET: NO_LIQUIDITY; post-only that would cross:
POST_ONLY_FAILED; self-trade protection: SELF_TRADE_PROTECTION), and reports in the
order the engine's module docstring gives (`extmm.sim.engine`). `Matcher.close` ends an
order for every other reason (cancel, replace, expiry, the dead man's switch, engine
rejections) and reports it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from fractions import Fraction

from extmm.domain.units import Side
from extmm.sim.account import fee_amount, to_decimal
from extmm.sim.model import (
    CANCELLED,
    CROWD_ACCOUNT_ID,
    FILLED,
    NEW,
    PARTIALLY_FILLED,
    REJECTED,
    Fill,
    OrderStateEvent,
    PositionEvent,
    PublicTrade,
    PublicTradesEvent,
    SimOrder,
    TradeEvent,
)
from extmm.sim.world import SimMarket, World


def stp_blocks(taker: SimOrder, maker: SimOrder) -> bool:
    """Whether self-trade protection at the taker's level forbids this match."""
    if taker.stp == "ACCOUNT":
        return maker.account_id == taker.account_id
    if taker.stp == "CLIENT":
        return maker.client_id == taker.client_id
    return False


class Matcher:
    """Matches, fills and ends orders in a `World`; see the module docstring."""

    def __init__(self, world: World) -> None:
        self.world = world

    def submit(self, m: SimMarket, order: SimOrder) -> SimOrder | None:
        """Match an accepted order, then rest it or end it. Returns it if it rests."""
        world = self.world
        is_buy = order.side is Side.BUY
        opposite = m.book.asks if is_buy else m.book.bids
        best = opposite.best()
        crosses = best is not None and (best <= order.price_ticks if is_buy else best >= order.price_ticks)
        if order.post_only and crosses:
            self.close(order, REJECTED, "POST_ONLY_FAILED")
            return None
        touched: dict[int, None] = {}
        taker_fills: list[Fill] = []
        prints: list[PublicTrade] = []
        if crosses:
            self._match(m, order, touched, taker_fills, prints)
        rests = False
        if order.status == NEW:  # not ended by self-trade protection
            if order.remaining_lots == 0:
                order.status = FILLED
            elif order.time_in_force == "IOC" or order.type == "MARKET":
                self._end_unreported(order, CANCELLED, "NO_LIQUIDITY")
            else:
                rests = True
        if rests:
            m.book.add(order)
            if order.filled_lots:
                order.status = PARTIALLY_FILLED
            if order.account_id != CROWD_ACCOUNT_ID:
                account = world.accounts[order.account_id]
                account.track_open(order)
                if order.expiry_ms is not None:
                    heapq.heappush(world.expiries, (order.expiry_ms, order.id, order))
        elif order.account_id != CROWD_ACCOUNT_ID:
            world.accounts[order.account_id].closed_orders.append(order)
        if order.account_id != CROWD_ACCOUNT_ID:
            world.events.append(
                OrderStateEvent(account_id=order.account_id, order=world.order_state(order), ts=world.now)
            )
            for fill in taker_fills:
                world.events.append(TradeEvent(account_id=fill.account_id, trade=fill, ts=world.now))
        for account_id in touched:
            account = world.accounts[account_id]
            world.events.append(
                PositionEvent(
                    account_id=account_id, position=world.position_state(account, m.name), ts=world.now
                )
            )
            world.emit_balance(account)
        if prints:
            m.public_trades.extend(prints)
            while len(m.public_trades) > world.config.public_trades_kept:
                m.public_trades.popleft()
            world.events.append(PublicTradesEvent(market=m.name, trades=tuple(prints), ts=world.now))
        return order if rests else None

    def _match(
        self,
        m: SimMarket,
        taker: SimOrder,
        touched: dict[int, None],
        taker_fills: list[Fill],
        prints: list[PublicTrade],
    ) -> None:
        is_buy = taker.side is Side.BUY
        opposite = m.book.asks if is_buy else m.book.bids
        limit = taker.price_ticks
        while taker.remaining_lots > 0:
            best = opposite.best()
            if best is None or (best > limit if is_buy else best < limit):
                return
            level = opposite.levels[best]
            while taker.remaining_lots > 0 and level.orders:
                maker = level.first()
                if stp_blocks(taker, maker):
                    self._end_unreported(taker, CANCELLED, "SELF_TRADE_PROTECTION")
                    return
                lots = min(taker.remaining_lots, maker.remaining_lots)
                self._fill(m, taker, maker, lots, best, touched, taker_fills, prints)

    def _fill(
        self,
        m: SimMarket,
        taker: SimOrder,
        maker: SimOrder,
        lots: int,
        ticks: int,
        touched: dict[int, None],
        taker_fills: list[Fill],
        prints: list[PublicTrade],
    ) -> None:
        world = self.world
        now = world.now
        units = ticks * lots
        for order in (maker, taker):
            order.filled_lots += lots
            order.filled_units += units
            order.updated_ms = now
        maker_account = world.accounts.get(maker.account_id) if maker.account_id != CROWD_ACCOUNT_ID else None
        if maker_account is not None:
            world.maker_fill_buffer.append(maker)
        if maker_account is not None:
            maker_account.untrack_lots(maker, lots)
        m.book.reduce(maker, lots)
        trade_id = next(world.trade_ids)
        spec = m.spec
        price = spec.ticks_to_price(ticks)
        qty = spec.lots_to_qty(lots)
        for order, is_taker in ((maker, False), (taker, True)):
            if order.account_id == CROWD_ACCOUNT_ID:
                continue
            notional = Fraction(units) * m.terms.tick * m.terms.lot
            value = price * qty
            account = world.accounts[order.account_id]
            maker_rate, taker_rate = world.fee_rates(account, m.name)
            fee = fee_amount(Fraction(taker_rate if is_taker else maker_rate), notional)
            order.payed_fee += fee
            account.apply_fill(
                m.terms,
                side_sign=order.side.sign,
                lots=lots,
                ticks=ticks,
                fee=fee,
                now_ms=now,
                new_id=next(world.position_ids),
            )
            fill = Fill(
                id=trade_id,
                account_id=account.info.id,
                market=m.name,
                order_id=order.id,
                external_order_id=order.external_id,
                side=order.side,
                price=price,
                qty=qty,
                value=value,
                fee=to_decimal(fee),
                is_taker=is_taker,
                trade_type="TRADE",
                created_ms=now,
            )
            account.trades.append(fill)
            touched[account.info.id] = None
            if is_taker:
                taker_fills.append(fill)
            else:
                maker.status = FILLED if maker.remaining_lots == 0 else PARTIALLY_FILLED
                if maker.remaining_lots == 0:
                    account.close_order(maker)
                world.events.append(
                    OrderStateEvent(account_id=account.info.id, order=world.order_state(maker), ts=now)
                )
                world.events.append(TradeEvent(account_id=account.info.id, trade=fill, ts=now))
        if maker.account_id == CROWD_ACCOUNT_ID:
            maker.status = FILLED if maker.remaining_lots == 0 else PARTIALLY_FILLED
            if maker.remaining_lots == 0 and m.flow is not None:
                m.flow.on_crowd_gone(maker)
        prints.append(
            PublicTrade(
                id=trade_id, market=m.name, side=taker.side, trade_type="TRADE", ts=now, price=price, qty=qty
            )
        )
        if m.first_ticks is None:
            m.first_ticks = ticks
        m.last_ticks = ticks
        m.low_ticks = ticks if m.low_ticks is None else min(m.low_ticks, ticks)
        m.high_ticks = ticks if m.high_ticks is None else max(m.high_ticks, ticks)
        m.volume_units += units
        m.volume_lots += lots

    def _end_unreported(self, order: SimOrder, status: str, reason: str | None) -> None:
        """End a taker that is not on the book yet; `submit` reports it."""
        order.cancelled_lots += order.remaining_lots
        order.status = status
        order.status_reason = reason
        order.updated_ms = self.world.now

    def close(self, order: SimOrder, status: str, reason: str | None) -> None:
        """End an order (on the book or not yet matched) and report it."""
        world = self.world
        remaining = order.remaining_lots
        if order.resting:
            world.markets[order.market].book.remove(order)
        account = world.accounts.get(order.account_id)
        if account is not None and order.id in account.open_orders:
            account.untrack_lots(order, remaining)
            order.cancelled_lots += remaining
            order.status, order.status_reason, order.updated_ms = status, reason, world.now
            account.close_order(order)
        else:
            order.cancelled_lots += remaining
            order.status, order.status_reason, order.updated_ms = status, reason, world.now
            if account is not None:
                account.closed_orders.append(order)
        if account is not None:
            world.events.append(
                OrderStateEvent(account_id=account.info.id, order=world.order_state(order), ts=world.now)
            )

    def classify_maker_fills(self, reason: Callable[[SimOrder], str]) -> None:
        """Count our makers filled since the last call by `reason(maker)` (`World.maker_fills`)."""
        world = self.world
        for maker in world.maker_fill_buffer:
            world.maker_fills[reason(maker)] += 1
        world.maker_fill_buffer.clear()
