"""PNG charts of a backtest: mid with our quotes and fills, inventory, cumulative PnL by component.

Needs matplotlib (the optional `backtest` extra); `write_plots` raises `PlotsUnavailable`
without it so the command can still print its summary and write the fills CSV.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from extmm.research.backtest.metrics import PNL_KEYS, MarketSample
from extmm.research.backtest.observe import ObservedFill


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _pyplot() -> Any:  # matplotlib.pyplot, an optional dependency
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotsUnavailable(
            "plots need matplotlib: pip install 'extmm[backtest]' (or matplotlib)"
        ) from exc
    return plt


def _by_market(samples: Sequence[MarketSample], markets: Sequence[str]) -> dict[str, list[MarketSample]]:
    out: dict[str, list[MarketSample]] = {m: [] for m in markets}
    for s in samples:
        out.setdefault(s.market, []).append(s)
    return out


def plot_quotes(
    samples: Sequence[MarketSample],
    fills: Sequence[ObservedFill],
    markets: Sequence[str],
    path: Path,
    *,
    t0: float,
) -> Path:
    plt = _pyplot()
    by_market = _by_market(samples, markets)
    fig, axes = plt.subplots(len(markets), 1, figsize=(12, 3.6 * len(markets)), squeeze=False, sharex=True)
    for ax, market in zip(axes[:, 0], markets, strict=True):
        rows = by_market.get(market, [])
        minutes = [s.t / 60.0 for s in rows]
        ax.plot(minutes, [s.mid for s in rows], color="0.25", lw=0.8, label="mid")
        ax.step(
            minutes,
            [s.bid for s in rows],
            where="post",
            color="tab:green",
            lw=0.7,
            alpha=0.8,
            label="our bid",
        )
        ax.step(
            minutes, [s.ask for s in rows], where="post", color="tab:red", lw=0.7, alpha=0.8, label="our ask"
        )
        for side, marker, color in (("BUY", "^", "darkgreen"), ("SELL", "v", "darkred")):
            mine = [f for f in fills if f.market == market and f.side == side]
            ax.scatter(
                [(f.at - t0) / 60.0 for f in mine],
                [float(f.price) for f in mine],
                marker=marker,
                s=14,
                color=color,
                zorder=3,
                label=f"{side.lower()} fills ({len(mine)})",
            )
        ax.set_title(f"{market}: mid, our quotes and fills")
        ax.set_ylabel("price (USD)")
        ax.legend(loc="upper left", fontsize=7, ncol=5)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("virtual time (minutes)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_inventory(
    samples: Sequence[MarketSample], markets: Sequence[str], path: Path, *, limit_usd: float
) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(12, 3.6))
    for market, rows in _by_market(samples, markets).items():
        ax.step(
            [s.t / 60.0 for s in rows], [s.position_usd for s in rows], where="post", lw=0.9, label=market
        )
    for y in (limit_usd, -limit_usd):
        ax.axhline(y, color="tab:red", ls="--", lw=0.8)
    ax.set_title(f"inventory per market (USD at the mid); limit ±{limit_usd:g}")
    ax.set_xlabel("virtual time (minutes)")
    ax.set_ylabel("position (USD)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pnl(samples: Sequence[MarketSample], path: Path) -> Path:
    plt = _pyplot()
    totals: dict[float, dict[str, float]] = {}
    for s in samples:
        row = totals.setdefault(s.t, dict.fromkeys(PNL_KEYS, 0.0))
        for k in PNL_KEYS:
            row[k] += s.pnl.get(k, 0.0)
    times = sorted(totals)
    fig, ax = plt.subplots(figsize=(12, 4))
    for key in PNL_KEYS:
        ax.plot(
            [t / 60.0 for t in times],
            [totals[t][key] for t in times],
            lw=1.6 if key == "net" else 0.9,
            color="black" if key == "net" else None,
            label=key,
        )
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_title("cumulative PnL by component, all markets")
    ax.set_xlabel("virtual time (minutes)")
    ax.set_ylabel("USD")
    ax.legend(loc="upper left", fontsize=8, ncol=5)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(
    out_dir: Path,
    samples: Sequence[MarketSample],
    fills: Sequence[ObservedFill],
    markets: Sequence[str],
    *,
    t0: float,
    limit_usd: float,
) -> list[Path]:
    """quotes.png, inventory.png and pnl.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        plot_quotes(samples, fills, markets, out_dir / "quotes.png", t0=t0),
        plot_inventory(samples, markets, out_dir / "inventory.png", limit_usd=limit_usd),
        plot_pnl(samples, out_dir / "pnl.png"),
    ]
