"""Telemetry: what actors report for the dashboard, metrics and the exit summary.

Actors publish with `Telemetry.publish(...)`, which never blocks trading. The root's
`Telemetry` writes straight into its `TelemetryView`, which keeps the latest value per
(market, kind): a report is a register write, not a message, so it wakes no task (the
panel, the metrics and the summary read the view when they refresh). A `Telemetry` over a
channel (tests) is bounded: a full channel drops the message (counted).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs
import trio


@attrs.frozen(kw_only=True)
class BookStats:
    market: str
    bid: Decimal | None
    ask: Decimal | None
    bid_qty: Decimal | None
    ask_qty: Decimal | None
    mid: float | None
    sigma: float | None
    valid: bool
    updated_at: float
    frames: int
    gaps: int
    reconnects: int
    malformed: int


@attrs.frozen(kw_only=True)
class ModelEstimate:
    """The Quoter's online calibration (`model.recalibrate`): the σ, A, k it quotes with."""

    sigma: float | None  # price units per √s
    sigma_rel: float | None  # relative per √s (what replaces the Book's σ)
    A: float | None  # noqa: N815 - the models' name: fills per second per side at δ = 0
    k: float | None  # per price unit
    covered_s: float  # how much of the rolling window the data covers
    at: float  # trio time of the estimate


@attrs.frozen(kw_only=True)
class QuoteStats:
    market: str
    bid: Decimal | None
    bid_qty: Decimal | None
    ask: Decimal | None
    ask_qty: Decimal | None
    model: str
    reasons: tuple[str, ...]
    at: float
    estimate: ModelEstimate | None = None  # set while the model recalibrates online
    published: int = 0  # quotes this Quoter incarnation has proposed to Risk, this one included


@attrs.frozen(kw_only=True)
class LiveOrderView:
    side: str
    price: Decimal
    qty: Decimal
    external_id: str


@attrs.frozen(kw_only=True)
class ExecStats:
    market: str
    open_orders: tuple[LiveOrderView, ...]
    orders_sent: int
    replaces: int
    cancels: int
    rejects: int
    reject_reasons: tuple[tuple[str, int], ...]
    orphans_cancelled: int
    latency_p50_ms: float
    latency_p99_ms: float
    at: float


@attrs.frozen(kw_only=True)
class AccountStats:
    market: str
    position: Decimal
    position_usd: float
    pnl: dict[str, Decimal]  # spread, inventory, fees, funding, net
    fills: int
    balance: Decimal | None
    equity: Decimal | None
    drift_corrections: int
    at: float
    ledger: Any = None  # the MarketLedger behind `pnl` (the journal's final mark is this one)


@attrs.frozen(kw_only=True)
class RiskStats:
    """Risk's last decision: `reducing` while over a position limit (only reducing orders)."""

    market: str
    reducing: bool
    reasons: tuple[str, ...]
    at: float


TelemetryMsg = BookStats | QuoteStats | ExecStats | AccountStats | RiskStats


class Telemetry:
    """The sending side handed to actors; cheap, never blocks."""

    def __init__(self, send: trio.MemorySendChannel[TelemetryMsg] | TelemetryView | None) -> None:
        self._view = send if isinstance(send, TelemetryView) else None
        self._send = None if isinstance(send, TelemetryView) else send
        self.dropped = 0

    def publish(self, msg: TelemetryMsg) -> None:
        if self._view is not None:
            self._view.update(msg)
            return
        if self._send is None:
            return
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    @classmethod
    def disabled(cls) -> Telemetry:
        return cls(None)


@attrs.define
class TelemetryView:
    """Latest telemetry per market and kind, for the dashboard, metrics and summary."""

    latest: dict[tuple[str, type], Any] = attrs.Factory(dict)

    def update(self, msg: TelemetryMsg) -> None:
        self.latest[(msg.market, type(msg))] = msg

    def get(self, market: str, kind: type) -> Any:
        return self.latest.get((market, kind))
