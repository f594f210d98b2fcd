"""Channel helpers shared by the actors."""

from __future__ import annotations

from typing import TypeVar

import trio

T = TypeVar("T")


def offer(channel: trio.MemorySendChannel[T], msg: T) -> bool:
    """Send without waiting; False when the consumer is behind (full) or gone.

    For messages a consumer only needs the newest of (book tops, inventory) or that its
    periodic reconciliation recovers (order updates): a stalled or restarting neighbour
    must not stall the sender and, through it, the venue streams.
    """
    try:
        channel.send_nowait(msg)
    except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
        return False
    return True
