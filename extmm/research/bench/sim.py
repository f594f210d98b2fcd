"""`python -m extmm bench sim [--seconds S] [--no-verify]`: simulator order actions per second.

A test account quotes post-only bids and asks 2–5 bps around the BTC-USD mid the way
the Executor does — mostly replaces (`cancelId`), some cancel-by-externalId or by-id
followed by a fresh order — against the in-process engine with its synthetic flow
running (σ = 0 so pre-signed prices stay valid; takers still fill the quotes). Each
cycle's bodies are signed with the SDK's `create_order_object` before the cycle and
only the engine calls are timed, so signing cost is excluded while the engine's Stark
signature verification (on by default, as in the simulator) is included. Without
`--no-verify` a second, unsigned pass of the same length reports the no-verify rate.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from decimal import Decimal
from typing import Any

from extmm.argtypes import positive_float
from extmm.domain.units import Side
from extmm.markets import bundled_markets
from extmm.sim.engine import EngineConfig, SimEngine
from extmm.sim.flow import FlowParams
from extmm.sim.model import OrderStateEvent, TradeEvent
from extmm.sim.signing import OrderSigner

START_MS = 1_790_000_000_000  # fixed: the benchmark must not depend on the wall clock
CYCLE_MS = 100  # virtual time between quote updates
MARKET = "BTC-USD"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sim", help="simulator engine order actions (place/replace/cancel) per second"
    )
    parser.add_argument(
        "--seconds", type=positive_float, default=3.0, help="timed engine seconds per pass (default 3)"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="only the pass without signature verification"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    seconds = max(0.01, float(args.seconds))
    if args.no_verify:
        result = run_pass(seconds=seconds, verify=False, seed=args.seed)
    else:
        result = run_pass(seconds=seconds, verify=True, seed=args.seed)
        result["actions_per_s_no_verify"] = run_pass(seconds=seconds, verify=False, seed=args.seed)[
            "actions_per_s"
        ]
    print(json.dumps({"bench": "sim", **result}))
    return 0


class _Quoter:
    """Plans one cycle of quote actions for both sides and builds their bodies."""

    def __init__(
        self, engine: SimEngine, account_id: int, signer: OrderSigner | None, rng: random.Random
    ) -> None:
        self.engine = engine
        self.account_id = account_id
        self.signer = signer
        self.rng = rng
        self.spec = engine.market_spec(MARKET)
        self.live: dict[Side, tuple[str, int] | None] = {Side.BUY: None, Side.SELL: None}
        self.ids = itertools.count(1)
        self.nonces = itertools.count(1)
        self.qty = self.spec.lots_to_qty(
            max(self.spec.float_to_lots(50 / engine.mid(MARKET)), self.spec.min_order_lots)
        )

    def body(self, side: Side, now_ms: int, cancel_id: str | None) -> dict[str, Any]:
        mid = self.engine.mid(MARKET)
        offset = self.rng.uniform(2e-4, 5e-4)
        price = self.spec.ticks_to_price(self.spec.float_to_ticks(mid * (1 - side.sign * offset), side))
        external_id = f"bench-{side.value[0].lower()}-{next(self.ids):07d}"
        fields: dict[str, Any] = dict(
            external_id=external_id,
            side=side.value,
            qty=self.qty,
            price=price,
            expiry_ms=now_ms + 3_600_000,
            nonce=next(self.nonces),
            fee=Decimal(0),
            post_only=True,
            cancel_id=cancel_id,
        )
        if self.signer is not None:
            return self.signer.sign(**fields)
        return _unsigned_body(**fields)

    def plan(self, now_ms: int) -> list[tuple[str, Any]]:
        """Actions for both sides: ("place", body) | ("cancel_ext", ext) | ("cancel_id", id)."""
        actions: list[tuple[str, Any]] = []
        for side in (Side.BUY, Side.SELL):
            live = self.live[side]
            roll = self.rng.random()
            if live is None:
                actions.append(("place", self.body(side, now_ms, None)))
            elif roll < 0.8:
                actions.append(("place", self.body(side, now_ms, live[0])))
            elif roll < 0.9:
                actions.append(("cancel_ext", live[0]))
                actions.append(("place", self.body(side, now_ms, None)))
            else:
                actions.append(("cancel_id", live[1]))
                actions.append(("place", self.body(side, now_ms, None)))
        return actions


def _unsigned_body(
    *,
    external_id: str,
    side: str,
    qty: Decimal,
    price: Decimal,
    expiry_ms: int,
    nonce: int,
    fee: Decimal,
    post_only: bool,
    cancel_id: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": external_id,
        "market": MARKET,
        "type": "LIMIT",
        "side": side,
        "qty": str(qty),
        "price": str(price),
        "reduceOnly": False,
        "postOnly": post_only,
        "timeInForce": "GTT",
        "expiryEpochMillis": expiry_ms,
        "fee": str(fee),
        "nonce": str(nonce),
        "selfTradeProtectionLevel": "ACCOUNT",
        "settlement": {"signature": {"r": "0x1", "s": "0x1"}, "starkKey": "0x1", "collateralPosition": "1"},
    }
    if cancel_id is not None:
        body["cancelId"] = cancel_id
    return body


def run_pass(*, seconds: float, verify: bool, seed: int) -> dict[str, Any]:
    """Quote until `seconds` of engine time were spent; return the counts and the rate."""
    market = bundled_markets()[MARKET]
    params = FlowParams.for_market(market, sigma=0.0)
    engine = SimEngine(
        EngineConfig(seed=seed, verify_signatures=verify, flow_params={MARKET: params}),
        start_ms=START_MS,
        markets=[market],
    )
    info = engine.create_account(balance=Decimal(1_000_000))
    signer = None
    if verify:
        from extmm.sim.signing import KeyPair

        assert info.private_key is not None
        key_pair = KeyPair(private_key=info.private_key, public_key=info.public_key)
        signer = OrderSigner(key_pair=key_pair, vault=info.vault, market=market, domain=engine.domain)
    quoter = _Quoter(engine, info.id, signer, random.Random(seed))
    counts = dict(places=0, replaces=0, cancels=0, accepted=0, rejected=0, refused=0, fills=0)
    elapsed = 0.0
    now = START_MS
    clock = time.perf_counter
    while elapsed < seconds:
        now += CYCLE_MS
        actions = quoter.plan(now)  # bodies built (and signed) outside the timed region
        for kind, payload in actions:
            started = clock()
            try:
                if kind == "place":
                    engine.place_order(info.id, payload, now)
                elif kind == "cancel_ext":
                    engine.cancel_order_by_external_id(info.id, payload, now)
                else:
                    engine.cancel_order(info.id, payload, now)
            except Exception:  # a REST-level refusal is still an action the venue served
                counts["refused"] += 1
            elapsed += clock() - started
            if kind == "place":
                counts["replaces" if "cancelId" in payload else "places"] += 1
            else:
                counts["cancels"] += 1
        for event in engine.drain_events():
            if isinstance(event, TradeEvent):
                counts["fills"] += 1
            elif isinstance(event, OrderStateEvent):
                order = event.order
                side = order.side
                if order.status in ("NEW", "PARTIALLY_FILLED"):
                    quoter.live[side] = (order.external_id, order.id)
                    counts["accepted"] += 1
                else:
                    if order.status == "REJECTED":
                        counts["rejected"] += 1
                    live = quoter.live[side]
                    if live is not None and live[0] == order.external_id:
                        quoter.live[side] = None
    actions_total = counts["places"] + counts["replaces"] + counts["cancels"]
    return {
        "verify_signatures": verify,
        "actions": actions_total,
        "seconds": round(elapsed, 4),
        "actions_per_s": round(actions_total / elapsed, 1),
        "us_per_action": round(elapsed / actions_total * 1e6, 1),
        "virtual_s": (now - START_MS) / 1000,
        **counts,
    }
