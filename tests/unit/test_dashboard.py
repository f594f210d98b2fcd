"""The operator view model (`extmm.ops.status`) and the Rich dashboard built from it:
fields filled from telemetry, layout at 80 columns, colours, the live and non-TTY loops."""

from __future__ import annotations

import io
import threading
from decimal import Decimal

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment

from extmm.ops import dashboard
from extmm.ops.dashboard import prerender, run_dashboard
from extmm.ops.dashboard_render import render, summary_line
from extmm.ops.status import (
    ActorStatus,
    AppStatus,
    MarketStatus,
    PnlSplit,
    QuoteSide,
    example_status,
    spread_bps,
)
from extmm.ops.telemetry import AccountStats, BookStats, ExecStats, LiveOrderView, QuoteStats, TelemetryView

# -- view model --------------------------------------------------------------------------


def _book(market: str, *, updated_at: float, valid: bool = True) -> BookStats:
    return BookStats(
        market=market,
        bid=Decimal("2000.0"),
        ask=Decimal("2000.4"),
        bid_qty=Decimal("3.5"),
        ask_qty=Decimal("1.25"),
        mid=2000.2,
        sigma=0.0004,
        valid=valid,
        updated_at=updated_at,
        frames=10,
        gaps=2,
        reconnects=1,
        malformed=4,
    )


def test_from_telemetry_fills_every_market_field() -> None:
    view = TelemetryView()
    view.update(_book("ETH-USD", updated_at=100.0))
    view.update(
        QuoteStats(
            market="ETH-USD",
            bid=Decimal("1999.1"),
            bid_qty=Decimal("0.02"),
            ask=None,
            ask_qty=None,
            model="glft",
            reasons=("max position: ask only",),
            at=100.5,
        )
    )
    orders = (
        LiveOrderView(side="BUY", price=Decimal("1998.0"), qty=Decimal("0.03"), external_id="a"),
        LiveOrderView(side="BUY", price=Decimal("1999.0"), qty=Decimal("0.02"), external_id="b"),
        LiveOrderView(side="SELL", price=Decimal("2002.0"), qty=Decimal("0.02"), external_id="c"),
        LiveOrderView(side="SELL", price=Decimal("2001.5"), qty=Decimal("0.01"), external_id="d"),
    )
    view.update(
        ExecStats(
            market="ETH-USD",
            open_orders=orders,
            orders_sent=50,
            replaces=30,
            cancels=7,
            rejects=3,
            reject_reasons=(("post_only", 3),),
            orphans_cancelled=0,
            latency_p50_ms=12.0,
            latency_p99_ms=80.0,
            at=100.0,
        )
    )
    pnl = {
        "spread": Decimal("1.5"),
        "inventory": Decimal("-0.5"),
        "fees": Decimal("-0.25"),
        "funding": Decimal("0"),
    }
    view.update(
        AccountStats(
            market="ETH-USD",
            position=Decimal("-0.04"),
            position_usd=-80.0,
            pnl=pnl,  # no "net": it is the sum of the parts
            fills=9,
            balance=None,
            equity=None,
            drift_corrections=0,
            at=100.0,
        )
    )
    m = MarketStatus.from_telemetry(
        "ETH-USD",
        view,
        state="ACTIVE",
        actors=[("feed", "running", 2), ActorStatus(name="book", state="running")],
        now=101.25,
        quotes_published=77,
    )
    assert (m.bid, m.ask, m.bid_qty, m.ask_qty) == (
        Decimal("2000.0"),
        Decimal("2000.4"),
        Decimal("3.5"),
        Decimal("1.25"),
    )
    assert m.spread_bps == pytest.approx(float(Decimal("0.4") / Decimal("2000.2") * 10_000))
    assert m.book_age_s == pytest.approx(1.25)
    assert not m.book_stale
    assert (m.book_gaps, m.feed_reconnects, m.malformed_frames) == (2, 1, 4)
    assert m.quote_bid == QuoteSide(price=Decimal("1999.1"), size=Decimal("0.02"))
    assert m.quote_ask is None
    assert m.quote_reasons == ("max position: ask only",) and m.model == "glft"
    # best resting order per side: highest buy, lowest sell
    assert m.live_bid == QuoteSide(price=Decimal("1999.0"), size=Decimal("0.02"))
    assert m.live_ask == QuoteSide(price=Decimal("2001.5"), size=Decimal("0.01"))
    assert (m.open_orders, m.orders_sent, m.replaces, m.cancels, m.rejects) == (4, 50, 30, 7, 3)
    assert (m.latency_p50_ms, m.latency_p99_ms) == (12.0, 80.0)
    assert m.position == Decimal("-0.04") and m.position_usd == -80.0 and m.fills == 9
    assert m.pnl.net == Decimal("0.75") == sum(v for k, v in m.pnl.items() if k != "net")
    assert m.actors == (
        ActorStatus(name="feed", state="running", restarts=2),
        ActorStatus(name="book", state="running"),
    )
    assert m.restarts == 2 and m.quotes_published == 77


def test_from_telemetry_without_reports_keeps_defaults_and_flags_stale_book() -> None:
    m = MarketStatus.from_telemetry("BTC-USD", TelemetryView(), state="STARTING", now=5.0)
    assert m.bid is None and m.book_age_s is None and m.book_stale
    assert m.pnl == PnlSplit() and m.open_orders == 0 and m.actors == ()

    view = TelemetryView()
    view.update(_book("BTC-USD", updated_at=10.0))
    assert (
        MarketStatus.from_telemetry("BTC-USD", view, state="ACTIVE", now=12.0, stale_after_s=3.0).book_stale
        is False
    )
    assert (
        MarketStatus.from_telemetry("BTC-USD", view, state="ACTIVE", now=13.5, stale_after_s=3.0).book_stale
        is True
    )
    view.update(_book("BTC-USD", updated_at=13.0, valid=False))
    assert MarketStatus.from_telemetry("BTC-USD", view, state="ACTIVE", now=13.5).book_stale is True


def test_spread_bps_needs_both_sides() -> None:
    assert spread_bps(Decimal("99"), Decimal("101")) == pytest.approx(200.0)
    assert spread_bps(None, Decimal("101")) is None


def test_app_status_keeps_only_the_newest_warnings() -> None:
    status = AppStatus(network="paper", uptime_s=1.0, warnings=[f"w{i}" for i in range(9)])
    assert status.warnings == ("w4", "w5", "w6", "w7", "w8")


# -- rendering ---------------------------------------------------------------------------


def _text(status: AppStatus | None, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), force_terminal=True)
    console.print(render(status))
    return console.export_text()


@pytest.mark.parametrize("width", [60, 80, 100, 132])
def test_no_line_is_wider_than_the_terminal(width: int) -> None:
    lines = _text(example_status(), width).splitlines()
    assert lines
    assert max(cell_len(line) for line in lines) <= width


def test_render_at_80_columns_shows_the_key_content() -> None:
    status = example_status()
    text = _text(status, 80)
    btc, eth = status.markets
    for needle in (
        "paper",
        "BTC-USD",
        "ETH-USD",
        "HALTED",
        "ACTIVE",
        status.breaker_state,
        f"{status.dms_remaining_s:.0f}s left",
        f"{status.rate_tokens:.0f}/{status.rate_capacity:.0f}",
        "spread",
        "inventory",
        "fees",
        "funding",
        "net",
        f"{btc.pnl.net:+,.2f}",
        f"{eth.pnl.inventory:+,.2f}",
        f"{btc.bid:,}",
        f"{btc.quote_ask.price:,}",
        "STALE",
        "executor",
        "failed",
    ):
        assert needle in text, needle
    for warning in status.warnings:
        assert warning[:60] in text  # long ones end in an ellipsis at 80 columns


def test_render_without_status_says_it_is_waiting() -> None:
    assert "waiting" in _text(None, 80)


def _segments(status: AppStatus, text: str) -> list[Segment]:
    console = Console(width=100, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    return [s for s in console.render(render(status)) if s.text.strip() == text]


def test_colours_flag_open_breaker_halted_market_and_stale_book() -> None:
    status = attrs.evolve(example_status(), breaker_state="OPEN")
    (breaker,) = _segments(status, "OPEN")
    assert breaker.style is not None and breaker.style.bgcolor is not None
    assert breaker.style.bgcolor.name == "red"
    (halted,) = _segments(status, "HALTED")
    assert halted.style is not None and halted.style.bgcolor is not None
    assert halted.style.bgcolor.name == "red"
    stale = [s for s in _segments(status, "14.2s STALE")]
    assert stale and all(s.style is not None and s.style.color.name == "yellow" for s in stale)
    closed = attrs.evolve(status, breaker_state="CLOSED")
    (ok,) = _segments(closed, "CLOSED")
    assert ok.style is not None and ok.style.color.name == "green" and ok.style.bgcolor is None


def test_summary_line_is_one_line_with_every_market() -> None:
    status = example_status()
    line = summary_line(status)
    assert "\n" not in line
    for m in status.markets:
        assert f"{m.name} {m.state}" in line
    assert f"breaker {status.breaker_state}" in line and f"net {status.net_pnl:+,.2f}" in line


# -- live loop ---------------------------------------------------------------------------


async def test_live_dashboard_redraws_at_the_refresh_rate(autojump_clock: trio.testing.MockClock) -> None:
    status = example_status()
    calls: list[float] = []

    def get_status() -> AppStatus:
        calls.append(trio.current_time())
        return status

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True)
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_dashboard(get_status, refresh_per_s=4, console=console, render_in_thread=False)
        )
        await trio.sleep(1.9)
        nursery.cancel_scope.cancel()
    # ... and one last frame when cancelled (1.9 s), so the panel ends on the final state.
    assert [t - t0 for t in calls] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 1.9])
    assert "BTC-USD" in out.getvalue() and "ETH-USD" in out.getvalue()


async def test_live_dashboard_lays_out_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True)
    status = example_status()
    status_threads: list[threading.Thread] = []
    layout_threads: list[threading.Thread] = []
    laid_out = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def get_status() -> AppStatus:
        trio.current_time()  # only works in the trio thread
        status_threads.append(threading.current_thread())
        return status

    def recording_prerender(snapshot: AppStatus | None, target: Console) -> object:
        layout_threads.append(threading.current_thread())
        token.run_sync_soon(laid_out.set)
        return prerender(snapshot, target)

    monkeypatch.setattr(dashboard, "prerender", recording_prerender)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_dashboard(get_status, refresh_per_s=20, console=console))
        await laid_out.wait()
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert status_threads and set(status_threads) == {threading.current_thread()}
    # Every live frame is laid out in a worker; the one last frame drawn on cancellation
    # (shutdown) is laid out in the trio thread, since a cancelled task cannot await.
    assert layout_threads[:-1] and threading.current_thread() not in layout_threads[:-1]
    assert layout_threads[-1] is threading.current_thread()
    assert "HALTED" in out.getvalue()


async def test_render_failures_are_shown_not_raised(autojump_clock: trio.testing.MockClock) -> None:
    def broken() -> AppStatus:
        raise RuntimeError("status builder bug")

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_dashboard(broken, console=console, render_in_thread=False))
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert "rendering failed" in out.getvalue()


async def test_without_a_terminal_prints_a_summary_line_periodically(
    autojump_clock: trio.testing.MockClock,
) -> None:
    status = example_status()
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_dashboard(lambda: status, console=console, summary_every_s=10.0))
        await trio.sleep(25.0)
        nursery.cancel_scope.cancel()
    assert out.getvalue().splitlines() == [summary_line(status)] * 3


async def test_without_a_terminal_and_no_summary_prints_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False)
    with trio.move_on_after(60.0):
        await run_dashboard(example_status, console=console, summary_every_s=0)
    assert out.getvalue() == ""


_decimals = st.decimals(min_value=Decimal("0.00001"), max_value=Decimal("9999999"), places=5, allow_nan=False)
_opt_decimals = st.none() | _decimals
_floats = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)
_counts = st.integers(min_value=0, max_value=10**9)


@st.composite
def _markets(draw: st.DrawFn) -> MarketStatus:
    actors = draw(
        st.lists(
            st.builds(
                ActorStatus,
                name=st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20),
                state=st.sampled_from(["running", "restarting", "failed", "stopped", "waiting for snapshot"]),
                restarts=_counts,
            ),
            max_size=9,
        )
    )
    pnl = PnlSplit(
        **{k: draw(st.decimals(min_value=-(10**7), max_value=10**7, places=2)) for k in ("spread", "net")}
    )
    return MarketStatus(
        name=draw(st.sampled_from(["BTC-USD", "ETH-USD", "1000PEPE-USD", "A-VERY-LONG-MARKET-NAME-USD"])),
        state=draw(st.sampled_from(["STARTING", "ACTIVE", "REDUCING", "OFF", "HALTED", "SOMETHING_NEW"])),
        bid=draw(_opt_decimals),
        ask=draw(_opt_decimals),
        bid_qty=draw(_opt_decimals),
        ask_qty=draw(_opt_decimals),
        mid=draw(st.none() | _floats),
        spread_bps=draw(st.none() | _floats),
        book_age_s=draw(st.none() | st.floats(min_value=0, max_value=1e7)),
        book_stale=draw(st.booleans()),
        sigma=draw(st.none() | _floats),
        quote_bid=draw(st.none() | st.builds(QuoteSide, price=_decimals, size=_decimals)),
        live_ask=draw(st.none() | st.builds(QuoteSide, price=_decimals, size=_decimals)),
        quote_reasons=tuple(draw(st.lists(st.text(max_size=120), max_size=3))),
        model=draw(st.none() | st.sampled_from(["seed", "glft", "avellaneda_stoikov"])),
        position=draw(st.decimals(min_value=-(10**6), max_value=10**6, places=5)),
        position_usd=draw(_floats),
        pnl=pnl,
        open_orders=draw(_counts),
        fills=draw(_counts),
        orders_sent=draw(_counts),
        rejects=draw(_counts),
        actors=tuple(actors),
        latency_p50_ms=draw(st.none() | st.floats(min_value=0, max_value=1e6)),
    )


@settings(max_examples=40, deadline=None)
@given(
    markets=st.lists(_markets(), max_size=3),
    warnings=st.lists(st.text(max_size=300), max_size=7),
    breaker=st.sampled_from(["CLOSED", "HALF_OPEN", "OPEN", "WEIRD"]),
    dms=st.none() | st.floats(min_value=-100, max_value=1e6),
    tokens=st.floats(min_value=-1e4, max_value=1e6),
    reason=st.none() | st.text(max_size=200),
)
def test_any_status_renders_within_80_columns(
    markets: list[MarketStatus],
    warnings: list[str],
    breaker: str,
    dms: float | None,
    tokens: float,
    reason: str | None,
) -> None:
    status = AppStatus(
        network="mainnet",
        uptime_s=123_456.0,
        breaker_state=breaker,
        breaker_last_reason=reason,
        dms_countdown_s=120.0,
        dms_remaining_s=dms,
        rate_tokens=tokens,
        rate_capacity=1000.0,
        warnings=warnings,
        markets=tuple(markets),
    )
    lines = _text(status, 80).splitlines()
    assert max(cell_len(line) for line in lines) <= 80
    assert "\n" not in summary_line(status)
