"""Drives the official x10 SDK (asyncio, aiohttp, websockets) against a running simulator.

Run in its own process by `tests/sim/test_sim_sdk_compat.py`; not a test module itself. It
uses only the SDK's public clients and models (`RestApiClient`, `StreamClient`, the
SDK's `OrderBook` update functions), prints one JSON object per step on stdout, and for
the book check prints `{"step": "book_ready"}` and waits for a line on stdin (the test
freezes the engine meanwhile) before printing the book it rebuilt.

websockets: SDK 2.6.0 calls `websockets.connect(..., extra_headers=...)` and reads
`.closed`, the API of the legacy client that websockets ≥ 14 no longer exposes as
`websockets.connect` (SPEC §10.1). websockets still ships that legacy client, so this
driver points `websockets.connect` at it instead of needing `websockets<14`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import warnings
from decimal import Decimal
from typing import Any

warnings.filterwarnings("ignore", category=DeprecationWarning)

import websockets  # noqa: E402
import websockets.legacy.client  # noqa: E402

websockets.connect = websockets.legacy.client.connect  # type: ignore[assignment]

from x10.clients.rest.rest_api_client import RestApiClient  # noqa: E402
from x10.clients.stream import StreamClient  # noqa: E402
from x10.config import DEFAULTS, TESTNET_CONFIG  # noqa: E402
from x10.core.client_config import ClientConfig, EndpointsConfig  # noqa: E402
from x10.core.stark_account import StarkPerpetualAccount  # noqa: E402
from x10.models.http import StreamDataType  # noqa: E402
from x10.models.order import OrderSide, OrderStatus  # noqa: E402
from x10.tools.orderbook import OrderBook  # noqa: E402

MARKET = "BTC-USD"


def emit(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}, default=str), flush=True)


def sim_config(rest: str, stream: str) -> ClientConfig:
    return ClientConfig(
        defaults=DEFAULTS,
        signing=TESTNET_CONFIG.signing,  # the simulator verifies under SN_SEPOLIA
        endpoints=EndpointsConfig(
            api_base_url=rest,
            api_base_order_management_url=rest,
            stream_url=stream,
            stream_rpc_url=stream.replace("/v1", "/v2/rpc"),
            onboarding_url=rest.removesuffix("/api/v1"),
            vault_asset_name="XVS",
        ),
    )


async def next_order_update(account_stream: Any, wanted: dict[str, str]) -> dict[str, str]:
    """Read ORDER frames until every externalId in `wanted` reached its wanted status."""
    seen: dict[str, str] = {}
    while any(seen.get(ext) != status for ext, status in wanted.items()):
        frame = await asyncio.wait_for(account_stream.recv(), 10)
        if frame.type == StreamDataType.ORDER and frame.data.orders:
            for order in frame.data.orders:
                seen[order.external_id] = str(order.status)
    return seen


async def run(args: argparse.Namespace) -> None:
    config = sim_config(args.rest, args.stream)
    account = StarkPerpetualAccount(
        vault=args.vault, private_key=args.private_key, public_key=args.public_key, api_key=args.api_key
    )
    client = RestApiClient(config, account)
    streams = StreamClient(api_url=config.endpoints.stream_url)
    try:
        markets = (await client.info.get_markets()).data
        emit("markets", names=[m.name for m in markets], btc_tick=markets[0].trading_config.min_price_change)
        stats = (await client.info.get_market_statistics(market_name=MARKET)).data
        balance = (await client.account.get_balance()).data
        emit("balance", balance=balance.balance, equity=balance.equity)
        book = (await client.info.get_orderbook_snapshot(market_name=MARKET)).data
        emit("rest_book", bids=len(book.bid), asks=len(book.ask))
        fees = (await client.account.get_fees(market_names=[MARKET])).data
        emit("fees", maker=fees[0].maker_fee_rate, taker=fees[0].taker_fee_rate)
        info = (await client.account.get_account()).data
        emit("account", vault=info.l2_vault, key=info.l2_key)

        async with streams.subscribe_to_account_updates(args.api_key) as account_stream:
            snapshots = [await asyncio.wait_for(account_stream.recv(), 10) for _ in range(3)]
            emit("account_snapshots", types=[str(s.type) for s in snapshots], seqs=[s.seq for s in snapshots])

            price = (stats.bid_price * Decimal("0.99")).quantize(Decimal(1))
            placed = await client.place_order(
                market_name=MARKET,
                amount_of_synthetic=Decimal("0.001"),
                price=price,
                side=OrderSide.BUY,
                taker_fee=Decimal("0.0005"),
                post_only=True,
                external_id="sdk-1",
            )
            first_id = placed.data.id
            open_orders = (await client.account.get_open_orders(market_names=[MARKET])).data
            emit("placed", id=first_id, open=[(o.id, o.external_id, str(o.status)) for o in open_orders])
            emit("stream_new", seen=await next_order_update(account_stream, {"sdk-1": OrderStatus.NEW}))

            replaced = await client.place_order(
                market_name=MARKET,
                amount_of_synthetic=Decimal("0.001"),
                price=price - 5,
                side=OrderSide.BUY,
                taker_fee=Decimal("0.0005"),
                post_only=True,
                external_id="sdk-2",
                previous_order_id="sdk-1",
            )
            seen = await next_order_update(
                account_stream, {"sdk-1": OrderStatus.CANCELLED, "sdk-2": OrderStatus.NEW}
            )
            open_orders = (await client.account.get_open_orders(market_names=[MARKET])).data
            emit("replaced", seen=seen, open=[o.external_id for o in open_orders])

            await client.orders.cancel_order(order_id=replaced.data.id)
            emit("cancelled", seen=await next_order_update(account_stream, {"sdk-2": OrderStatus.CANCELLED}))

            for ext, offset in (("sdk-3", 10), ("sdk-4", 11), ("sdk-5", 12)):
                await client.place_order(
                    market_name=MARKET,
                    amount_of_synthetic=Decimal("0.001"),
                    price=price - offset,
                    side=OrderSide.BUY,
                    taker_fee=Decimal("0.0005"),
                    post_only=True,
                    external_id=ext,
                )
            await client.orders.cancel_order_by_external_id(order_external_id="sdk-3")
            await client.orders.mass_cancel(markets=[MARKET])
            seen = await next_order_update(
                account_stream,
                {
                    "sdk-3": OrderStatus.CANCELLED,
                    "sdk-4": OrderStatus.CANCELLED,
                    "sdk-5": OrderStatus.CANCELLED,
                },
            )
            open_orders = (await client.account.get_open_orders(market_names=[MARKET])).data
            emit("mass_cancelled", seen=seen, open=[o.external_id for o in open_orders])

        mirror = OrderBook(config, MARKET)  # the SDK's own book; fed by hand, its task never started
        kinds: list[str] = []
        seqs: list[int] = []
        async with streams.subscribe_to_orderbooks(MARKET) as book_stream:
            ready_sent = False
            while True:
                event = await asyncio.wait_for(book_stream.recv(), 10)
                kinds.append(str(event.type))
                seqs.append(event.seq)
                if event.type == StreamDataType.SNAPSHOT:
                    await mirror.init_orderbook(event.data)
                elif event.type == StreamDataType.DELTA:
                    await mirror.update_orderbook(event.data)
                    empty = not event.data.bid and not event.data.ask
                    if ready_sent and empty:
                        break
                if not ready_sent and kinds.count("DELTA") >= 5:
                    emit("book_ready")
                    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
                    ready_sent = True
        emit(
            "book",
            kinds=kinds,
            seqs=seqs,
            bids=[[str(p), str(e.amount)] for p, e in reversed(mirror._bid_prices.items())],
            asks=[[str(p), str(e.amount)] for p, e in mirror._ask_prices.items()],
        )
    finally:
        await client.close()
    emit("done")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("--rest", "--stream", "--api-key", "--private-key", "--public-key"):
        parser.add_argument(name, required=True)
    parser.add_argument("--vault", type=int, required=True)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
