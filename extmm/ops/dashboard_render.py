"""The operator's panel, rendered: pure functions from an `AppStatus` to Rich renderables.

`render` is the full panel (header with network, breaker, dead man's switch, rate budget and
uptime; one panel per market; recent warnings); `render_compact` the layout for a small
terminal; `summary_line` one plain line for logs and systemd. Readable down to 80 columns:
stat groups flow onto more lines, and the book table and market stats stack instead of
sitting side by side. The live loop that draws them is `extmm.ops.dashboard`.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from extmm.ops.secrets import redact_known
from extmm.ops.status import AppStatus, MarketStatus, QuoteSide

NONE = "-"
_STATE_STYLE = {
    "ACTIVE": "bold green",
    "STARTING": "yellow",
    "REDUCING": "bold yellow",
    "OFF": "dim",
    "HALTED": "bold white on red",
}
_BREAKER_STYLE = {"CLOSED": "green", "HALF_OPEN": "bold yellow", "OPEN": "bold white on red"}
_ACTOR_OK = ("running", "ready", "up", "ok")
_ACTOR_BAD = ("failed", "crashed", "halted", "dead", "escalated")


# -- small formatters --------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s"


def _price(value: Decimal | None) -> str:
    return NONE if value is None else f"{value:,}"


def _qty(value: Decimal | None) -> str:
    return NONE if value is None else f"{value:f}"


def _ms(value: float | None) -> str:
    return NONE if value is None else f"{value:.0f}ms"


def _usd(value: Decimal | float, *, plain: bool = False) -> Text:
    text = f"{value:+,.2f}"
    if plain or value == 0:
        return Text(text)
    return Text(text, style="green" if value > 0 else "red")


def _kv(key: str, value: str | Text, style: str = "") -> Text:
    """One unbreakable `key value` cell for a `_Flow` line."""
    out = Text()
    out.append(f"{key} ", style="dim")
    out.append(value if isinstance(value, Text) else Text(value, style=style))
    return out


def _state_text(state: str) -> Text:
    return Text(state, style=_STATE_STYLE.get(state, "bold"))


def _actor_style(state: str) -> str:
    lowered = state.lower()
    if lowered in _ACTOR_OK:
        return "green"
    if lowered in _ACTOR_BAD:
        return "bold red"
    return "yellow"


class _Flow:
    """Short cells laid out left to right, starting a new line when the next would not
    fit; a cell is never split. Far cheaper than `rich.columns.Columns`, which matters
    because the panel is redrawn several times a second in the trio thread."""

    def __init__(self, cells: Iterable[Text], *, gap: int = 3) -> None:
        self.cells = list(cells)
        self.gap = gap

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        line = Text()
        for cell in self.cells:
            if line and line.cell_len + self.gap + cell.cell_len > width:
                yield line
                line = Text()
            if line:
                line.append(" " * self.gap)
            line.append_text(cell)
        if line:
            yield line

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        lengths = [cell.cell_len for cell in self.cells] or [0]
        return Measurement(max(lengths), sum(lengths) + self.gap * (len(lengths) - 1))


class _Beside:
    """Two renderables side by side when the width allows, otherwise one above the other."""

    def __init__(self, left: RenderableType, right: RenderableType, *, gap: int = 4) -> None:
        self.left = left
        self.right = right
        self.gap = gap

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        left = Measurement.get(console, options, self.left).maximum
        right = Measurement.get(console, options, self.right).maximum
        if left + self.gap + right <= options.max_width:
            grid = Table.grid(padding=(0, self.gap))
            grid.add_column(width=left)
            grid.add_column(width=right)
            grid.add_row(self.left, self.right)
            yield grid
        else:
            yield self.left
            yield self.right


# -- sections ----------------------------------------------------------------------------


def _header(status: AppStatus) -> Panel:
    breaker = Text(status.breaker_state, style=_BREAKER_STYLE.get(status.breaker_state, "bold"))
    if status.breaker_trips:
        trips = "trip" if status.breaker_trips == 1 else "trips"
        breaker.append(f" ({status.breaker_trips} {trips})", style="dim")
    if status.dms_remaining_s is None:
        dms = Text("disarmed", style="yellow" if status.dms_countdown_s and status.ready else "dim")
    else:
        left = status.dms_remaining_s
        countdown = status.dms_countdown_s
        style = "red" if left <= 0 else "yellow" if countdown and left < countdown / 3 else "green"
        dms = Text(f"{left:.0f}s left", style=style)
        if countdown:
            dms.append(f" of {countdown:.0f}s", style="dim")
    rate = Text(f"{status.rate_tokens:.0f}/{status.rate_capacity:.0f}")
    if status.rate_capacity > 0:
        share = status.rate_tokens / status.rate_capacity
        rate.stylize("red" if share < 0.05 else "yellow" if share < 0.2 else "green")
    rest = Text(f"p50 {_ms(status.rest_latency_p50_ms)} p99 {_ms(status.rest_latency_p99_ms)}")
    requests = Text(f"{status.rest_requests:,} req, ")
    requests.append(f"{status.rest_429s} x429", style="bold red" if status.rest_429s else "")
    if status.rest_errors:
        requests.append(f", {status.rest_errors} err", style="yellow")
    cells = [
        _kv("uptime", _duration(status.uptime_s)),
        _kv("breaker", breaker),
        _kv("DMS", dms),
        _kv("rate", rate),
        _kv("REST", rest),
        _kv("calls", requests),
        _kv("net PnL", _usd(status.net_pnl)),
    ]
    if status.lifetime_net is not None:
        cells.append(_kv("lifetime PnL", _usd(status.lifetime_net)))
    if status.equity is not None:
        cells.append(_kv("equity", f"{status.equity:,.2f}"))
    journal = status.journal
    if journal is not None and (journal.degraded or journal.dropped):
        cells.append(_kv("journal", Text(f"{journal.degraded or 'ok'}, {journal.dropped} dropped, "
                                         f"{journal.pending} waiting", style="bold red")))
    body: list[RenderableType] = [_Flow(cells)]
    if status.breaker_last_reason:
        body.append(
            Text(
                f"last trip: {redact_known(status.breaker_last_reason)}",
                style="dim",
                no_wrap=True,
                overflow="ellipsis",
            )
        )
    title = Text.assemble(("extmm", "bold"), " · ", (status.network, "bold cyan"), " · ")
    title.append("ready" if status.ready else "starting", style="green" if status.ready else "yellow")
    title.append(" · ")
    title.append(
        "healthy" if status.healthy else "UNHEALTHY", style="green" if status.healthy else "bold red"
    )
    border = "red" if status.breaker_state == "OPEN" or not status.healthy else "blue"
    return Panel(Group(*body), title=title, title_align="left", border_style=border, box=box.ROUNDED)


def _quote_row(label: str, bid: QuoteSide | None, ask: QuoteSide | None, style: str = "") -> tuple[Text, ...]:
    return (
        Text(label, style="dim"),
        Text(_qty(bid.size) if bid else NONE, style=style),
        Text(_price(bid.price) if bid else NONE, style=style or "green"),
        Text(_price(ask.price) if ask else NONE, style=style or "red"),
        Text(_qty(ask.size) if ask else NONE, style=style),
    )


def _book_table(m: MarketStatus) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), show_edge=False)
    table.add_column("")
    table.add_column("bid size", justify="right")
    table.add_column("bid", justify="right")
    table.add_column("ask", justify="left")
    table.add_column("ask size", justify="left")
    book_bid = QuoteSide(price=m.bid, size=m.bid_qty or Decimal(0)) if m.bid is not None else None
    book_ask = QuoteSide(price=m.ask, size=m.ask_qty or Decimal(0)) if m.ask is not None else None
    table.add_row(*_quote_row("book", book_bid, book_ask, style="yellow" if m.book_stale else ""))
    table.add_row(*_quote_row("quote", m.quote_bid, m.quote_ask))
    table.add_row(*_quote_row("live", m.live_bid, m.live_ask))
    return table


def _market_stats(m: MarketStatus) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim")
    grid.add_column()
    spread = NONE if m.spread_bps is None else f"{m.spread_bps:.2f} bps"
    grid.add_row("spread", spread)
    grid.add_row("mid", NONE if m.mid is None else f"{m.mid:,.2f}")
    grid.add_row("σ", NONE if m.sigma is None else f"{m.sigma:.3g}")
    age = Text(_duration(m.book_age_s))
    if m.book_stale:
        age.append(" STALE")
        age.stylize("bold yellow")
    grid.add_row("book age", age)
    position = Text(_qty(m.position), style="bold" if m.position else "")
    sign = "-" if m.position_usd < 0 else "+" if m.position_usd > 0 else ""
    position.append(f" ({sign}${abs(m.position_usd):,.0f})", style="dim")
    grid.add_row("inventory", position)
    return grid


def _pnl_table(m: MarketStatus) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1))
    for name, _ in m.pnl.items():
        table.add_column(name, justify="right", style="bold" if name == "net" else "")
    table.add_row(*(_usd(value) for _, value in m.pnl.items()))
    return table


def _actors_table(m: MarketStatus) -> Table | Text:
    if not m.actors:
        return Text("actors: none reported", style="dim")
    table = Table(box=None, pad_edge=False, padding=(0, 1), show_header=True, header_style="dim")
    table.add_column("actor", style="dim", no_wrap=True)
    for actor in m.actors:
        table.add_column(actor.name, no_wrap=False)
    table.add_row("state", *(Text(a.state, style=_actor_style(a.state)) for a in m.actors))
    table.add_row(
        "restarts",
        *(Text(str(a.restarts), style="bold yellow" if a.restarts else "dim") for a in m.actors),
    )
    return table


def _orders_line(m: MarketStatus) -> _Flow:
    rejects = Text(str(m.rejects), style="bold red" if m.rejects else "")
    cells = [
        _kv("open", str(m.open_orders)),
        _kv("fills", f"{m.fills:,}"),
        _kv("sent", f"{m.orders_sent:,}"),
        _kv("replaced", f"{m.replaces:,}"),
        _kv("cancelled", f"{m.cancels:,}"),
        _kv("rejected", rejects),
        _kv("order latency", f"p50 {_ms(m.latency_p50_ms)} p99 {_ms(m.latency_p99_ms)}"),
    ]
    return _Flow(cells)


def _market_panel(m: MarketStatus) -> Panel:
    title = Text.assemble((m.name, "bold"), " ")
    title.append_text(_state_text(m.state))
    if m.book_stale and m.state != "HALTED":
        title.append(" · stale book", style="bold yellow")
    if m.model:
        title.append(f" · {m.model}", style="dim")
    if m.recalibrated:
        title.append(f" · {m.recalibrated}", style="dim")
    body: list[RenderableType] = [
        _Beside(_book_table(m), _market_stats(m)),
        _pnl_table(m),
        _orders_line(m),
    ]
    if m.quote_reasons:
        reasons = Text(
            "quoter: " + "; ".join(m.quote_reasons), style="dim", no_wrap=True, overflow="ellipsis"
        )
        body.append(reasons)
    body.append(_actors_table(m))
    if m.state == "HALTED":
        border = "red"
    elif m.book_stale or m.state in ("REDUCING", "STARTING"):
        border = "yellow"
    elif m.state == "OFF":
        border = "dim"
    else:
        border = "green"
    return Panel(Group(*body), title=title, title_align="left", border_style=border, box=box.ROUNDED)


def _footer(status: AppStatus) -> Panel:
    if status.warnings:
        # Already masked by the log sink; masked again because these may come from elsewhere.
        lines = [
            Text(redact_known(line), style="yellow", no_wrap=True, overflow="ellipsis")
            for line in status.warnings
        ]
    else:
        lines = [Text("no warnings", style="dim")]
    return Panel(Group(*lines), title="warnings", title_align="left", border_style="dim", box=box.ROUNDED)


def render(status: AppStatus | None) -> RenderableType:
    """The whole panel for one status snapshot (pure; safe to call from tests)."""
    if status is None:
        return Panel(Text("waiting for the first status…", style="dim"), title="extmm", title_align="left")
    return Group(_header(status), *(_market_panel(m) for m in status.markets), _footer(status))


def render_compact(status: AppStatus | None, *, warnings: int = 3) -> RenderableType:
    """The panel for a small terminal (80x24 holds four markets): the header's figures on
    two lines, one table row per market, the last few warnings. Every figure has its label
    and unit."""
    if status is None:
        return Text("extmm: waiting for the first status…", style="dim")
    title = Text.assemble(("extmm", "bold"), " ", (status.network, "bold cyan"), " ")
    title.append("ready" if status.ready else "starting", style="green" if status.ready else "yellow")
    title.append(" ")
    title.append("healthy" if status.healthy else "UNHEALTHY", style="green" if status.healthy else "bold red")
    if status.dms_remaining_s is None:
        dms = "disarmed"
    else:
        dms = f"{status.dms_remaining_s:.0f}s left of {status.dms_countdown_s:.0f}s"
    cells = [
        title,
        _kv("up", _duration(status.uptime_s)),
        _kv("breaker", Text(status.breaker_state, style=_BREAKER_STYLE.get(status.breaker_state, "bold"))),
        _kv("DMS", dms),
        _kv("rate budget", f"{status.rate_tokens:.0f}/{status.rate_capacity:.0f} req"),
        _kv("REST p99", _ms(status.rest_latency_p99_ms)),
        _kv("429s", f"{status.rest_429s}"),
        _kv("net PnL", Text.assemble(_usd(status.net_pnl), " USD")),
    ]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True, expand=False,
                  show_edge=False)
    # Two-line headers: the label, then its unit.
    for header in ("market\n", "state\n", "mid\nUSD", "spread\nbps", "position\ncontracts",
                   "net PnL\nUSD", "open\norders", "fills\n", "book\nage s"):
        table.add_column(header, justify="left" if header.startswith(("market", "state")) else "right",
                         no_wrap=True)
    for m in status.markets:
        age = NONE if m.book_age_s is None else f"{m.book_age_s:.1f}"
        table.add_row(
            m.name,
            _state_text(m.state),
            NONE if m.mid is None else f"{m.mid:,.2f}",
            NONE if m.spread_bps is None else f"{m.spread_bps:.2f}",
            _qty(m.position),
            _usd(m.pnl.net),
            str(m.open_orders),
            str(m.fills),
            Text(f"{age}!" if m.book_stale else age, style="bold red" if m.book_stale else ""),
        )
    lines = [
        Text(redact_known(line), style="yellow", no_wrap=True, overflow="ellipsis")
        for line in status.warnings[-warnings:]
    ] if warnings else []
    return Group(_Flow(cells), table, *lines)


def fits(renderable: RenderableType, console: Console, width: int, height: int) -> bool:
    options = console.options.update(width=width)
    return len(console.render_lines(renderable, options, pad=False)) <= height


def summary_line(status: AppStatus) -> str:
    """One plain line for logs, non-terminal output or systemd's STATUS=."""
    parts = [
        f"{status.network} up {_duration(status.uptime_s)}",
        f"breaker {status.breaker_state}",
        "DMS " + ("disarmed" if status.dms_remaining_s is None else f"{status.dms_remaining_s:.0f}s"),
        f"rate {status.rate_tokens:.0f}/{status.rate_capacity:.0f}",
    ]
    for m in status.markets:
        parts.append(
            f"{m.name} {m.state} pos {_qty(m.position)} net {m.pnl.net:+,.2f} open {m.open_orders} fills {m.fills}"
        )
    parts.append(f"net {status.net_pnl:+,.2f}")
    return " | ".join(parts)
