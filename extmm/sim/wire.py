"""Engine objects rendered as the venue's JSON (field names and encodings as SPEC.md).

Numbers are strings, ids integers, timestamps epoch ms. The simulator server and the
in-process port both use these, so the bot's parsers see one format whichever way it
talks to the simulator. Envelopes (`{"status":"OK","data":…}`, stream frames with
`seq`) belong to the server; only the REST envelopes are here, being trivial.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from extmm.sim.model import (
    AccountInfo,
    BalanceState,
    BookDelta,
    BookSnapshot,
    FeeSchedule,
    Fill,
    FundingPaymentRecord,
    FundingRatePoint,
    MarketStats,
    OrderState,
    PositionState,
    PublicTrade,
    SimReject,
)
from extmm.sim.signing import StarknetDomain
from extmm.venue.types import PlacedOrder


def _s(value: Decimal) -> str:
    return str(value)


# -- REST envelopes (SPEC §2.2) --------------------------------------------------------------


def ok(data: Any = None, *, pagination: Mapping[str, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "OK"}
    if data is not None:
        body["data"] = data
    if pagination is not None:
        body["pagination"] = dict(pagination)
    return body


def error(code: int, message: str) -> dict[str, Any]:
    return {"status": "ERROR", "error": {"code": code, "message": message}}


def reject_body(exc: SimReject) -> dict[str, Any]:
    return error(exc.code, exc.message)


# -- private REST and account stream (SPEC §4) ---------------------------------------------------


def placed_order(ack: PlacedOrder) -> dict[str, Any]:
    """`POST /user/order` data: `{"id": int, "externalId": str}`."""
    return {"id": ack.id, "externalId": ack.external_id}


def order(o: OrderState) -> dict[str, Any]:
    """An order object (SPEC §4.4); optional fields are left out when empty."""
    out: dict[str, Any] = {
        "id": o.id,
        "accountId": o.account_id,
        "externalId": o.external_id,
        "market": o.market,
        "type": o.type,
        "side": o.side.value,
        "status": o.status,
    }
    if o.status_reason is not None:
        out["statusReason"] = o.status_reason
    out["price"] = _s(o.price)
    if o.average_price is not None:
        out["averagePrice"] = _s(o.average_price)
    out.update(
        {
            "qty": _s(o.qty),
            "filledQty": _s(o.filled_qty),
            "cancelledQty": _s(o.cancelled_qty),
            "reduceOnly": o.reduce_only,
            "postOnly": o.post_only,
            "payedFee": _s(o.payed_fee),
            "createdTime": o.created_ms,
            "updatedTime": o.updated_ms,
        }
    )
    if o.expiry_ms is not None:
        out["expiryTime"] = o.expiry_ms
    out["timeInForce"] = o.time_in_force
    return out


def trade(t: Fill, *, stream: bool = False) -> dict[str, Any]:
    """An account trade (SPEC §4.5); `externalOrderId` only on the stream, as DOC26 says."""
    out: dict[str, Any] = {
        "id": t.id,
        "accountId": t.account_id,
        "market": t.market,
        "orderId": t.order_id,
    }
    if stream:
        out["externalOrderId"] = t.external_order_id
    out.update(
        {
            "side": t.side.value,
            "price": _s(t.price),
            "qty": _s(t.qty),
            "value": _s(t.value),
            "fee": _s(t.fee),
            "isTaker": t.is_taker,
            "tradeType": t.trade_type,
            "createdTime": t.created_ms,
        }
    )
    return out


def position(p: PositionState) -> dict[str, Any]:
    """A position (SPEC §4.3), with the SDK's `createdAt`/`updatedAt` names."""
    return {
        "id": p.id,
        "accountId": p.account_id,
        "market": p.market,
        "status": p.status,
        "side": p.side,
        "leverage": _s(p.leverage),
        "size": _s(p.size),
        "value": _s(p.value),
        "openPrice": _s(p.open_price),
        "markPrice": _s(p.mark_price),
        "unrealisedPnl": _s(p.unrealised_pnl),
        "realisedPnl": _s(p.realised_pnl),
        "createdAt": p.created_ms,
        "updatedAt": p.updated_ms,
    }


def balance(b: BalanceState) -> dict[str, Any]:
    """The balance object (SPEC §4.2), with the real frame's `status`, `exposure`, `leverage`."""
    return {
        "collateralName": b.collateral_name,
        "balance": _s(b.balance),
        "status": "ACTIVE",
        "equity": _s(b.equity),
        "availableForTrade": _s(b.available_for_trade),
        "availableForWithdrawal": _s(b.available_for_withdrawal),
        "unrealisedPnl": _s(b.unrealised_pnl),
        "initialMargin": _s(b.initial_margin),
        "marginRatio": _s(b.margin_ratio),
        "updatedTime": b.updated_ms,
        "exposure": _s(b.exposure),
        "leverage": _s(b.leverage),
    }


def fee(f: FeeSchedule) -> dict[str, Any]:
    """`GET /user/fees` row (SPEC §4.6)."""
    return {
        "market": f.market,
        "makerFeeRate": _s(f.maker),
        "takerFeeRate": _s(f.taker),
        "builderFeeRate": _s(f.builder),
    }


def funding_payment(f: FundingPaymentRecord) -> dict[str, Any]:
    """`GET /user/funding/history` row; `fundingFee` > 0 is paid, < 0 received."""
    return {
        "id": f.id,
        "accountId": f.account_id,
        "market": f.market,
        "positionId": f.position_id,
        "side": f.side,
        "size": _s(f.size),
        "value": _s(f.value),
        "markPrice": _s(f.mark_price),
        "fundingFee": _s(f.funding_fee),
        "fundingRate": _s(f.funding_rate),
        "paidTime": f.paid_ms,
    }


def leverage(market: str, value: Decimal) -> dict[str, Any]:
    return {"market": market, "leverage": _s(value)}


def account_info(info: AccountInfo, *, status: str = "ACTIVE") -> dict[str, Any]:
    """`GET /user/account/info` data (SPEC §4.1) from an `AccountInfo`."""
    return {
        "accountId": info.id,
        "description": info.description,
        "accountIndex": 0,
        "status": status,
        "l2Key": hex(info.public_key),
        "l2Vault": info.vault,
    }


def account_stream_data(kind: str, items: Any, *, is_snapshot: bool = False) -> dict[str, Any]:
    """`data` of an account-stream frame: kind ORDER/TRADE/POSITION takes a list, BALANCE one object."""
    key = {"ORDER": "orders", "TRADE": "trades", "POSITION": "positions", "BALANCE": "balance"}[kind]
    return {"isSnapshot": is_snapshot, key: items}


# -- public REST and streams (SPEC §3, §5) ---------------------------------------------------------


def market_stats(s: MarketStats) -> dict[str, Any]:
    return {
        "dailyVolume": _s(s.daily_volume),
        "dailyVolumeBase": _s(s.daily_volume_base),
        "dailyPriceChange": _s(s.daily_price_change),
        "dailyPriceChangePercentage": _s(s.daily_price_change_percentage),
        "dailyLow": _s(s.daily_low),
        "dailyHigh": _s(s.daily_high),
        "lastPrice": _s(s.last_price),
        "askPrice": _s(s.ask_price),
        "bidPrice": _s(s.bid_price),
        "markPrice": _s(s.mark_price),
        "indexPrice": _s(s.index_price),
        "fundingRate": _s(s.funding_rate),
        "nextFundingRate": s.next_funding_ms,
        "openInterest": _s(s.open_interest),
        "openInterestBase": _s(s.open_interest_base),
        "deleverageLevels": {"shortPositions": [], "longPositions": []},
    }


def market(raw: Mapping[str, Any], stats: MarketStats) -> dict[str, Any]:
    """A market object (SPEC §3.1) with live `marketStats`; the SDK's required fields ensured."""
    out = copy.deepcopy(dict(raw))
    out.setdefault("type", "PERPETUAL")
    out.setdefault("isRfq", False)
    out.setdefault("isOffHours", False)
    out.setdefault("tradingHours", "CONTINUOUS")
    out["marketStats"] = market_stats(stats)
    return out


def starknet_domain(domain: StarknetDomain) -> dict[str, Any]:
    """`GET /info/starknet` data; `revision` is a number there (SPEC §1.2)."""
    return {
        "name": domain.name,
        "version": domain.version,
        "chainId": domain.chain_id,
        "revision": int(domain.revision),
    }


def public_trade(t: PublicTrade) -> dict[str, Any]:
    """A print (SPEC §5.4): `{i, m, S, tT, T, p, q}`."""
    return {
        "i": t.id,
        "m": t.market,
        "S": t.side.value,
        "tT": t.trade_type,
        "T": t.ts,
        "p": _s(t.price),
        "q": _s(t.qty),
    }


def public_trades(trades: Iterable[PublicTrade]) -> list[dict[str, Any]]:
    return [public_trade(t) for t in trades]


def funding_rate(point: FundingRatePoint) -> dict[str, Any]:
    """Funding (SPEC §3.5, §5.5): `{m, T, f}`."""
    return {"m": point.market, "T": point.ts, "f": _s(point.rate)}


def mark_price(market_name: str, price: Decimal) -> dict[str, Any]:
    """Mark / index frame data (SPEC §5.7); captured mark frames carry `ts: 0`."""
    return {"m": market_name, "p": _s(price), "ts": 0}


class UnitText(dict[int, str]):
    """The canonical decimal text of integer ticks or lots of one market, memoised.

    A book stream renders the same few hundred prices and sizes over and over; `text[n]`
    is exactly `str(to_decimal(n))` (e.g. `spec.ticks_to_price`), computed once. A dict
    lookup is the fast path; `__missing__` fills it."""

    def __init__(self, to_decimal: Callable[[int], Decimal], *, limit: int = 65_536) -> None:
        super().__init__()
        self._to_decimal = to_decimal
        self._limit = limit  # a drifting price never grows the cache without bound

    def __missing__(self, units: int) -> str:
        if len(self) >= self._limit:
            self.clear()
        text = self[units] = str(self._to_decimal(units))
        return text


def book_snapshot(snapshot: BookSnapshot, *, depth: str = "f") -> dict[str, Any]:
    """Book SNAPSHOT data (SPEC §5.3): absolute `q` only, best first; `depth` "f" or "1"."""
    return book_snapshot_levels(
        snapshot.market,
        [(level.price, level.qty) for level in snapshot.bids],
        [(level.price, level.qty) for level in snapshot.asks],
        _s,
        _s,
        depth=depth,
    )


def book_snapshot_levels(
    market: str,
    bids: Iterable[tuple[Any, Any]],
    asks: Iterable[tuple[Any, Any]],
    price_text: Callable[[Any], str],
    qty_text: Callable[[Any], str],
    *,
    depth: str = "f",
) -> dict[str, Any]:
    """`book_snapshot` from `(price, qty)` levels in any units, with their text functions."""
    return {
        "t": "SNAPSHOT",
        "m": market,
        "b": [{"p": price_text(p), "q": qty_text(q)} for p, q in bids],
        "a": [{"p": price_text(p), "q": qty_text(q)} for p, q in asks],
        "d": depth,
    }


def book_delta(delta: BookDelta) -> dict[str, Any]:
    """Book DELTA data (SPEC §5.3): signed change `q`, absolute size after it `c`."""
    return book_delta_levels(
        delta.market,
        [(c.price, c.delta, c.qty) for c in delta.bids],
        [(c.price, c.delta, c.qty) for c in delta.asks],
        _s,
        _s,
    )


def book_delta_levels(
    market: str,
    bids: Iterable[tuple[Any, Any, Any]],
    asks: Iterable[tuple[Any, Any, Any]],
    price_text: Callable[[Any], str],
    qty_text: Callable[[Any], str],
) -> dict[str, Any]:
    """`book_delta` from `(price, change, size)` levels in any units, with their text functions."""
    return {
        "t": "DELTA",
        "m": market,
        "b": [{"q": qty_text(d), "p": price_text(p), "c": qty_text(q)} for p, d, q in bids],
        "a": [{"q": qty_text(d), "p": price_text(p), "c": qty_text(q)} for p, d, q in asks],
        "d": "f",
    }


def empty_book_delta(market_name: str) -> dict[str, Any]:
    """A legal empty delta (a heartbeat; SPEC §5.3)."""
    return {"t": "DELTA", "m": market_name, "b": [], "a": [], "d": "f"}


def orderbook_rest(snapshot: BookSnapshot) -> dict[str, Any]:
    """`GET /info/markets/{m}/orderbook` data (SPEC §3.3)."""
    return {
        "market": snapshot.market,
        "bid": [{"qty": _s(level.qty), "price": _s(level.price)} for level in snapshot.bids],
        "ask": [{"qty": _s(level.qty), "price": _s(level.price)} for level in snapshot.asks],
    }
