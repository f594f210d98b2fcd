"""Placing an order without ever losing track of it: settling an ambiguous place.

A place that failed with a timeout, a 5xx or a garbled ack may or may not have reached the
venue's engine. `settle_ambiguous_place` looks the externalId up, backing off, and either
returns the order the venue has or re-raises the error carrying `placed`; `placement_known`
reads that verdict for the caller (the Executor). Used by `NetworkVenue.place_order`.
"""

from __future__ import annotations

import random
from urllib.parse import quote

import trio
from loguru import logger

from extmm.venue.errors import (
    MalformedResponse,
    NetworkError,
    OrderRejected,
    TransientServerError,
    VenueError,
)
from extmm.venue.parse import parse_list, parse_order
from extmm.venue.rest import RestClient, RetryPolicy
from extmm.venue.types import OrderInfo, OrderRequest, PlacedOrder

# How an ambiguous place (timeout, 5xx, garbled ack) is settled: look the externalId up
# a few times, backing off; only an absence seen this long after the failure counts as
# "not placed" (the venue acknowledges before its engine has the order, SPEC §4.8).
PLACE_LOOKUP = RetryPolicy(attempts=4, base_s=0.5, cap_s=4.0)
PLACE_ABSENT_AFTER_S = 1.0


def placement_known(error: BaseException) -> bool | None:
    """After `place_order` raised: False = the order is known not to exist, None = unknown.

    Definite refusals (OrderRejected, RateLimited, AuthError) never placed anything and
    also read as False; ambiguous failures carry the verdict of the externalId lookup.
    """
    verdict: bool | None = getattr(error, "placed", None)
    if verdict is not None:
        return verdict
    if isinstance(error, NetworkError | TransientServerError | MalformedResponse):
        return None
    return False


async def orders_by_external_id(rest: RestClient, external_id: str, *, retry: bool) -> list[OrderInfo]:
    """`GET /user/orders/external/{externalId}`: our orders with that externalId; [] on 404."""
    path = f"/user/orders/external/{quote(external_id, safe='')}"
    try:
        data = await rest.get(path, operation="get_orders_by_external_id", private=True, retry=retry)
    except OrderRejected as exc:
        if exc.http_status == 404:
            return []
        raise
    return [
        o for o in parse_list(data, parse_order, "orders by externalId") if o.external_id == external_id
    ]


async def settle_ambiguous_place(
    rest: RestClient, order: OrderRequest, error: VenueError, *, lookup: RetryPolicy, rng: random.Random
) -> PlacedOrder:
    """After a place failed ambiguously: the placed order if a lookup by externalId finds it,
    else re-raise `error` carrying `placed` (False: absent long enough after the failure;
    None: still unknown). See `placement_known`."""
    failed_at = trio.current_time()
    logger.warning(
        "place {}: outcome unknown ({}); looking it up by externalId", order.external_id, error
    )
    absent_confirmed = False
    for attempt in range(lookup.attempts):
        await trio.sleep(lookup.delay(attempt, rng))
        try:
            found = await orders_by_external_id(rest, order.external_id, retry=False)
        except VenueError as exc:
            logger.info("place {}: lookup failed ({})", order.external_id, exc)
            continue
        if found:
            logger.info("place {}: the venue has it (id {})", order.external_id, found[0].id)
            return PlacedOrder(id=found[0].id, external_id=order.external_id)
        if trio.current_time() - failed_at >= PLACE_ABSENT_AFTER_S:
            absent_confirmed = True
    error.placed = False if absent_confirmed else None
    logger.warning(
        "place {}: {}",
        order.external_id,
        "not placed" if absent_confirmed else "still unknown after lookups",
    )
    raise error
