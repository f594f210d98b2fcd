"""A stream connection's view of the simulator: its topic, its `seq`, its bounded frame queue.

Transport-neutral: the WebSocket endpoints (`extmm.sim.ws_api`), the in-process port
(`extmm.sim.inproc`) and the replay driver read the same ready JSON frames. A full queue
closes the subscription (close code 1008): a slow client is disconnected, never buffered
without bound.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import trio
from loguru import logger

StreamKind = Literal["orderbook", "trades", "funding", "mark", "index", "account"]

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # the client could not keep up: its queue overflowed
CLOSE_RESTART = 1012  # fault injection: "service restart"


@attrs.frozen
class OutFrame:
    """One outgoing text frame, not to be sent before `due` (trio time; latency faults)."""

    text: str
    due: float


class Subscription:
    """One stream connection's view: its topic, its `seq`, its bounded frame queue."""

    def __init__(
        self,
        kind: StreamKind,
        *,
        market: str | None = None,
        account_id: int | None = None,
        depth_one: bool = False,
        capacity: int = 256,
    ) -> None:
        self.kind = kind
        self.market = market
        self.account_id = account_id
        self.depth_one = depth_one
        self._send, self.frames = trio.open_memory_channel[OutFrame](capacity)
        # The consumer runs inside this scope, so a drop interrupts even a blocked send.
        self.cancel_scope = trio.CancelScope()
        self._closed = trio.Event()
        self.seq = 0
        self.close_code: int | None = None
        self.close_reason = ""
        # Book streams, per market: snapshot owed, next periodic snapshot, last frame time.
        self.snapshot_owed: set[str] = set()
        self.next_snapshot_at: dict[str, float] = {}
        self.last_frame_at: dict[str, float] = {}
        self.last_top: dict[str, Any] = {}

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def describe(self) -> str:
        what = self.market or (f"account {self.account_id}" if self.account_id is not None else "all")
        return f"{self.kind}/{what}"

    def push(self, frame: OutFrame) -> bool:
        """Queue a frame; a full queue closes the subscription (slow consumer)."""
        if self.closed:
            return False
        try:
            self._send.send_nowait(frame)
        except trio.WouldBlock:
            logger.warning("stream {}: client too slow, send queue full; disconnecting", self.describe())
            self.close(CLOSE_POLICY, "send queue overflow: client too slow")
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close(CLOSE_NORMAL, "consumer gone")
            return False
        return True

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self.closed:
            return
        self.close_code = code
        self.close_reason = reason
        self._send.close()
        self.cancel_scope.cancel()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
