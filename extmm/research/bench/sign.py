"""`python -m extmm bench sign [--orders N]`: complete signed order bodies per second.

Each order goes through `OrderSigner` exactly as `NetworkVenue.place_order` does it —
SDK model, Stark hash and signature, JSON bytes — with the SDK's public test key pair
and the bundled BTC-USD market, so nothing secret or networked is involved.
"""

from __future__ import annotations

import argparse
import json
import time
from decimal import Decimal

from extmm.argtypes import positive_int
from extmm.domain.units import Side
from extmm.markets import bundled_markets
from extmm.venue.endpoints import SN_MAIN
from extmm.venue.signing import Credentials, ExternalIdFactory, NonceSource, OrderSigner
from extmm.venue.types import OrderRequest

# The x10 SDK's own public test account (its tests and SPEC §8 vectors); never funded.
SDK_TEST_CREDENTIALS = Credentials(
    api_key="bench-not-a-key",
    vault=10002,
    stark_private_key="0x7a7ff6fd3cab02ccdcd4a572563f5976f8976899b03a39773795a3c486d4986",
    stark_public_key="0x61c5e7e8339b7d56f197f54ea91b776776690e3232313de0f2ecbd0ef76f466",
)
EXPIRY_MS = 1790427600000  # fixed: the benchmark must not depend on the wall clock


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("sign", help="signed order bodies per second through OrderSigner")
    parser.add_argument("--orders", type=positive_int, default=2000, help="orders to sign (default 2000)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    count = max(1, int(args.orders))
    signer = OrderSigner(SDK_TEST_CREDENTIALS, SN_MAIN, nonces=NonceSource(start=1))
    market = bundled_markets()["BTC-USD"]
    signer.add_market(market)
    ids = ExternalIdFactory("bench", run_id="000000")
    orders = [
        OrderRequest(
            market="BTC-USD",
            side=Side.BUY if i % 2 == 0 else Side.SELL,
            qty=Decimal("0.00100") + Decimal(i % 7) * Decimal("0.00001"),
            price=Decimal(84000 + (i % 50) * (1 if i % 2 else -1)),
            external_id=ids.next("BTC-USD", Side.BUY if i % 2 == 0 else Side.SELL),
            expiry_ms=EXPIRY_MS,
            max_fee_rate=Decimal("0"),
        )
        for i in range(count)
    ]
    signer.sign_json(orders[0])  # warm caches (SDK model, pydantic validators)
    started = time.perf_counter()
    total_bytes = 0
    for order in orders:
        total_bytes += len(signer.sign_json(order))
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "bench": "sign",
                "orders": count,
                "seconds": round(elapsed, 4),
                "orders_per_s": round(count / elapsed, 1),
                "us_per_order": round(elapsed / count * 1e6, 1),
                "avg_body_bytes": round(total_bytes / count, 1),
            }
        )
    )
    return 0
