"""Account-wide net position limit and the reducing mode (#16)."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest

from extmm.config import RiskConfig, parse_config
from extmm.domain.quoting import QuoteIntent
from extmm.domain.risk import ExposureBoard, RiskReason, RiskSnapshot, clamp_intent
from extmm.domain.units import MarketSpec
from extmm.ops.telemetry import RiskStats
from extmm.research.backtest.options import BacktestOptions
from extmm.research.backtest.run import backtest
from supervisors.root import RootSupervisor

SPEC = MarketSpec(name="BTC-USD", tick_size=Decimal(1), lot_size=Decimal("0.0001"), min_order_size=Decimal("0.0001"))


def test_unknown_markets_count_at_their_limit_not_zero():
    board = ExposureBoard(["BTC-USD", "ETH-USD", "SOL-USD"], unknown_usd=200.0)
    assert board.others("BTC-USD") == 400.0
    board.report("ETH-USD", -50.0)
    assert board.others("BTC-USD") == 250.0
    board.report("ETH-USD", None)  # position unknown again
    assert board.others("BTC-USD") == 400.0


def _clamp(position: int, others: float | None, total: float | None = 300.0):
    intent = QuoteIntent(market="BTC-USD", bid_ticks=99_990, bid_lots=20, ask_ticks=100_010, ask_lots=20)
    limits = RiskConfig(max_net_position_usd=200.0, max_total_net_position_usd=total, min_balance_usd=0.0)
    return clamp_intent(intent, spec=SPEC, limits=limits, snapshot=RiskSnapshot(
        mid=100_000.0, position_lots=position, balance_usd=1e6, book_age_ms=0.0, other_markets_usd=others))


def test_account_wide_limit_takes_the_room_left_by_the_other_markets():
    # Others hold 250 of 300: this market may hold 50 USD (5 lots at 100 000).
    d = _clamp(0, 250.0)
    # 5 lots: 49.995 USD at the bid (and 50.00 at the mid) fit; at the ask they would be 50.005.
    assert (d.intent.bid_lots, d.intent.ask_lots) == (5, 4)
    assert RiskReason.TOTAL_LIMIT in d.reasons and RiskReason.REDUCING not in d.reasons
    # Over the account-wide limit: only the reducing side quotes, and no further than flat + room.
    d = _clamp(10, 295.0)
    assert d.intent.bid_lots == 0 and d.intent.ask_lots > 0
    assert RiskReason.REDUCING in d.reasons
    # Not configured: the per-market limit alone.
    assert _clamp(10, 1e9, total=None).intent.bid_lots == 10


def test_reducing_mode_is_the_markets_state_on_the_panel():
    cfg = parse_config({"markets": [{"name": "BTC-USD"}]})
    root = RootSupervisor(cfg=cfg, port=None, network="paper", epoch_ms=lambda: 0)  # type: ignore[arg-type]
    root.ready = True  # quoting: the trading state's default
    assert root.quoting
    assert root.market_state("BTC-USD") == "ACTIVE"
    root.view.update(RiskStats(market="BTC-USD", reducing=True, reasons=("reducing", "position_limit"), at=0.0))
    assert root.market_state("BTC-USD") == "REDUCING"


def _totals(samples) -> list[float]:
    """Σ |position USD| over markets, per sampling instant (the last sample of each market)."""
    by_t: dict[float, dict[str, float]] = {}
    for s in samples:
        by_t.setdefault(round(s.t, 3), {})[s.market] = abs(s.position_usd)
    return [sum(v.values()) for v in by_t.values()]


@pytest.mark.slow
def test_backtest_two_markets_stay_within_the_account_wide_limit():
    cfg = parse_config({
        "risk": {"max_net_position_usd": 200, "max_total_net_position_usd": 120},
        "markets": [
            {"name": "BTC-USD", "base_spread": 0.0002, "alpha": 0.2, "quote_notional_cap_usd": 50},
            {"name": "ETH-USD", "base_spread": 0.0002, "alpha": 0.2, "quote_notional_cap_usd": 50},
        ],
    })
    result = backtest(cfg, BacktestOptions(hours=0.1, seed=2, order_latency_ms=20.0, flow="toxic"))
    assert result.summary.fills > 20
    # At the mids (which move after a fill) a little over is possible, and across markets a
    # fill in one reaches the other's Risk with its next quote (one book frame + latency);
    # far over is not.
    assert max(_totals(result.samples)) <= 120 * 1.1
    unlimited = backtest(attrs.evolve(cfg, risk=attrs.evolve(cfg.risk, max_total_net_position_usd=None)),
                         BacktestOptions(hours=0.1, seed=2, order_latency_ms=20.0, flow="toxic"))
    assert max(_totals(unlimited.samples)) > 120  # the limit was what held it
