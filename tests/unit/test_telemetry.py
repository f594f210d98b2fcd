"""Telemetry: the root's reports are register writes into its view (issue 15): the newest
per (market, kind), at once, with no task woken; over a channel (tests) they stay bounded."""

from __future__ import annotations

import trio

from extmm.ops.telemetry import RiskStats, Telemetry, TelemetryView


def _stats(market: str, at: float) -> RiskStats:
    return RiskStats(market=market, reducing=False, reasons=(), at=at)


def test_a_report_is_in_the_view_at_once_and_the_newest_wins() -> None:
    view = TelemetryView()
    telemetry = Telemetry(view)
    telemetry.publish(_stats("BTC-USD", 1.0))
    telemetry.publish(_stats("ETH-USD", 2.0))
    telemetry.publish(_stats("BTC-USD", 3.0))
    assert view.get("BTC-USD", RiskStats).at == 3.0
    assert view.get("ETH-USD", RiskStats).at == 2.0
    assert len(view.latest) == 2 and telemetry.dropped == 0


async def test_reporting_wakes_no_task() -> None:
    steps = 0

    class Count(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            nonlocal steps
            steps += 1

    view = TelemetryView()
    telemetry = Telemetry(view)
    count = Count()
    trio.lowlevel.add_instrument(count)
    for i in range(1000):
        telemetry.publish(_stats("BTC-USD", float(i)))
    await trio.testing.wait_all_tasks_blocked()
    trio.lowlevel.remove_instrument(count)
    assert steps <= 2  # this task's own steps, whatever was published
    assert view.get("BTC-USD", RiskStats).at == 999.0


def test_over_a_full_channel_reports_are_dropped_and_counted() -> None:
    send, receive = trio.open_memory_channel[RiskStats](2)
    telemetry = Telemetry(send)  # type: ignore[arg-type]
    for i in range(5):
        telemetry.publish(_stats("BTC-USD", float(i)))
    assert telemetry.dropped == 3
    assert [receive.receive_nowait().at for _ in range(2)] == [0.0, 1.0]
    Telemetry.disabled().publish(_stats("BTC-USD", 0.0))  # a no-op


def test_the_panel_and_metrics_count_the_quoters_proposals() -> None:
    """`extmm_quotes_published_total` read 0 for ever: nothing passed the count along."""
    from extmm.ops.status import MarketStatus
    from extmm.ops.telemetry import QuoteStats

    view = TelemetryView()
    assert MarketStatus.from_telemetry("BTC-USD", view, state="ACTIVE", now=0.0).quotes_published == 0
    Telemetry(view).publish(QuoteStats(market="BTC-USD", bid=None, bid_qty=None, ask=None, ask_qty=None,
                                       model="simple", reasons=(), at=1.0, published=42))
    assert MarketStatus.from_telemetry("BTC-USD", view, state="ACTIVE", now=2.0).quotes_published == 42

