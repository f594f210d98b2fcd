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


async def send(channel: trio.MemorySendChannel[T], msg: T) -> None:
    """`channel.send(msg)` without its extra scheduling round when there is room.

    A successful `send` yields to the scheduler once more after queueing; an actor that
    checkpoints in its own receive every iteration does not need that, and on the book's
    hot path it is one more task step per message. A full channel still blocks (backpressure).
    """
    try:
        channel.send_nowait(msg)
    except trio.WouldBlock:
        await channel.send(msg)
