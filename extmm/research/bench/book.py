"""`bench book`: order-book frames per second through our Book, optionally against the SDK's.

Input: a stream-v1 order-book recording, one envelope per line (scripts/gen_book_stream.py).
Both paths decode each line's JSON inside the timed loop, apply the frame and read the best
bid and ask levels (price and size) after it: ours `Book.best_bid()`/`best_ask()`, the SDK's
`best_bid()`/`best_ask()` entries, so both read the same information. Ours
decodes with orjson when installed (`--json json`: the standard library). The SDK's is
`WrappedStreamResponseModel[OrderbookUpdateModel]` parsing (what its stream connection
does) into `x10.tools.orderbook.OrderBook`, driven without a network.
Each path runs `--repeat` times on a fresh book, the two paths taking turns, and the fastest
run counts, as timeit does: other load on the machine only ever slows a run down.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import warnings
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from extmm.argtypes import bundled_market, existing_file_str, positive_int
from extmm.domain.book import Book, MalformedBookFrame
from extmm.domain.units import MarketSpec
from extmm.markets import bundled_spec


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("book", help="order-book apply rate (frames/s)", description=__doc__)
    parser.add_argument("--input", required=True, type=existing_file_str, help="JSON-lines file of stream-v1 order book envelopes")
    parser.add_argument("--market", default="BTC-USD", type=bundled_market, help="bundled market whose tick/lot grid to use")
    parser.add_argument("--sdk", action="store_true", help="also measure the official SDK's path and compare")
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=3,
        help="runs of each path, fresh book each time; the fastest counts (default 3)",
    )
    parser.add_argument(
        "--json",
        choices=("auto", "json", "orjson"),
        default="auto",
        help="JSON decoder of our path (auto: orjson when installed, else the standard library)",
    )
    parser.set_defaults(handler=run)


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line for line in (raw.strip() for raw in f) if line]


def _decoder(name: str) -> tuple[str, Callable[[str], Any]]:
    if name in ("auto", "orjson"):
        try:
            import orjson
        except ImportError:
            if name == "orjson":
                raise
        else:
            return "orjson", orjson.loads
    return "json", json.loads


def run_book(
    lines: list[str], spec: MarketSpec, loads: Callable[[str], Any] = json.loads
) -> tuple[float, Decimal | None, Decimal | None, int]:
    """Our path. Returns (seconds, best bid, best ask, frames not applied)."""
    book = Book(spec)
    apply = book.apply
    not_applied = 0
    bid = ask = None
    gc.collect()
    start = time.perf_counter()
    for line in lines:
        envelope = loads(line)
        try:
            if apply(envelope["data"], envelope.get("seq")) is not None:
                not_applied += 1
        except MalformedBookFrame:
            not_applied += 1
        # The best levels, price and size, as the SDK path reads them.
        bid = book.best_bid()
        ask = book.best_ask()
    seconds = time.perf_counter() - start
    return (
        seconds,
        spec.ticks_to_price(bid[0]) if bid is not None else None,
        spec.ticks_to_price(ask[0]) if ask is not None else None,
        not_applied,
    )


def _drive(coroutine: Any) -> None:
    """Run an SDK coroutine that never suspends (no callbacks set) to completion, synchronously."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("the SDK order book suspended; it cannot be driven synchronously")


def run_sdk(lines: list[str], market: str) -> tuple[float, Decimal | None, Decimal | None]:
    """The SDK's own path, as `OrderBook.start_orderbook` runs it per received message."""
    with warnings.catch_warnings():
        # x10.tools.orderbook imports its websockets client, which warns about itself.
        warnings.simplefilter("ignore", DeprecationWarning)
        from x10.config import MAINNET_CONFIG
        from x10.models.http import StreamDataType, WrappedStreamResponseModel
        from x10.models.orderbook import OrderbookUpdateModel
        from x10.tools.orderbook import OrderBook

    model = WrappedStreamResponseModel[OrderbookUpdateModel]
    validate = model.model_validate_json
    # Constructing it opens nothing; only start_orderbook() would connect.
    book = OrderBook(MAINNET_CONFIG, market)
    snapshot, delta = StreamDataType.SNAPSHOT, StreamDataType.DELTA
    bid = ask = None
    gc.collect()
    start = time.perf_counter()
    for line in lines:
        event = validate(line)
        if event.type == snapshot:
            if event.data:
                _drive(book.init_orderbook(event.data))
        elif event.type == delta:
            if event.data:
                _drive(book.update_orderbook(event.data))
        bid = book.best_bid()
        ask = book.best_ask()
    seconds = time.perf_counter() - start
    return seconds, bid.price if bid else None, ask.price if ask else None


def _fmt(price: Decimal | None, spec: MarketSpec) -> str | None:
    # The SDK keeps whatever string form the venue sent ("84050.000000"); print on our grid.
    return None if price is None else str(price.quantize(spec.tick_size))


def run(args: argparse.Namespace) -> int:
    spec = bundled_spec(args.market)
    lines = _read_lines(args.input)
    frames = len(lines)
    repeat = max(args.repeat, 1)
    decoder, loads = _decoder(args.json)
    # With --sdk the two paths take turns, so a change in the load of a shared machine
    # during the benchmark weighs on both alike.
    runs: list[tuple[float, Decimal | None, Decimal | None, int]] = []
    sdk_runs: list[tuple[float, Decimal | None, Decimal | None]] = []
    for _ in range(repeat):
        runs.append(run_book(lines, spec, loads))
        if args.sdk:
            sdk_runs.append(run_sdk(lines, args.market))
    seconds = min(r[0] for r in runs)
    _, best_bid, best_ask, not_applied = runs[-1]
    if not_applied:
        print(f"warning: {not_applied} frame(s) not applied (gap or malformed)", file=sys.stderr)
    result: dict[str, Any] = {
        "frames": frames,
        "seconds": round(seconds, 4),
        "frames_per_s": round(frames / seconds, 1) if seconds > 0 else None,
        "best_bid": _fmt(best_bid, spec),
        "best_ask": _fmt(best_ask, spec),
        "json": decoder,
    }
    if args.sdk:
        sdk_seconds = min(r[0] for r in sdk_runs)
        _, sdk_bid, sdk_ask = sdk_runs[-1]
        sdk_rate = frames / sdk_seconds if sdk_seconds > 0 else None
        result["sdk_frames_per_s"] = round(sdk_rate, 1) if sdk_rate else None
        result["sdk_best_bid"] = _fmt(sdk_bid, spec)
        result["sdk_best_ask"] = _fmt(sdk_ask, spec)
        result["ratio"] = round(frames / seconds / sdk_rate, 2) if sdk_rate and seconds > 0 else None
        if sdk_bid != best_bid or sdk_ask != best_ask:
            print(json.dumps(result))
            print(
                f"error: final best bid/ask differ: ours {best_bid}/{best_ask}, SDK {sdk_bid}/{sdk_ask}",
                file=sys.stderr,
            )
            return 1
    print(json.dumps(result))
    return 0
