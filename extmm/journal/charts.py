"""PNG charts of a report (needs matplotlib, the `backtest` extra): daily net PnL and
cumulative net PnL per market."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_charts(rep: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    markets = sorted({d["market"] for d in rep["days"]})
    days = sorted({d["day"] for d in rep["days"]})
    written = []
    fig, (daily, cumulative) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    width = 0.8 / max(len(markets), 1)
    for i, market in enumerate(markets):
        net = {d["day"]: float(d["net"]) for d in rep["days"] if d["market"] == market}
        values = [net.get(day, 0.0) for day in days]
        daily.bar([x + i * width for x in range(len(days))], values, width=width, label=market)
        total, running = 0.0, []
        for v in values:
            total += v
            running.append(total)
        cumulative.plot(range(len(days)), running, marker="o", label=market)
    daily.set_ylabel("net PnL per day (USD)")
    cumulative.set_ylabel("cumulative net PnL (USD)")
    cumulative.set_xticks(range(len(days)), days, rotation=30, ha="right")
    daily.legend()
    daily.axhline(0, color="grey", linewidth=0.5)
    cumulative.axhline(0, color="grey", linewidth=0.5)
    fig.tight_layout()
    path = out / "pnl.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written
