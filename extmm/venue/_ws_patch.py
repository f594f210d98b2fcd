"""Work around trio-websocket 0.12.2 leaking a stray `trio.Cancelled` on close.

If the server pings while our side is closing, the library's reader answers the ping on
a connection that is already closing, fails, and the failure surfaces as a `Cancelled`
that belongs to no cancel scope of ours (python-trio/trio-websocket#184; upstream fix
PR #198, not released as of 0.12.2). The venue pings every 15 s and the simulator right
after the handshake, so a Feed that reconnects after a sequence gap can hit it. The fix
is the upstream one: never answer a ping once the connection is no longer OPEN.
Remove that part when a trio-websocket release contains the fix.

Second, the same hook notes when the server last pinged (`last_server_ping_at(conn)`,
trio time): on the venue a quiet stream's only sign of life is the WebSocket ping the
server sends every 15 s (SPEC §5.1, §12), and trio-websocket offers no other way to see it.
"""

from __future__ import annotations

from typing import Any

import trio
import trio_websocket._impl as ws_impl
from wsproto.connection import ConnectionState

_PATCHED = "_extmm_ping_patch"
_LAST_PING = "_extmm_last_server_ping_at"


def last_server_ping_at(connection: Any) -> float | None:
    """When (trio time) this connection last received a ping from the server, if ever."""
    return getattr(connection, _LAST_PING, None)


def apply() -> None:
    connection = ws_impl.WebSocketConnection
    if getattr(connection, _PATCHED, False):
        return
    original = connection._handle_ping_event  # noqa: SLF001 - the patched private hook

    async def handle_ping_when_open(self: Any, event: Any) -> None:
        setattr(self, _LAST_PING, trio.current_time())
        if self._wsproto.state is not ConnectionState.OPEN:  # noqa: SLF001
            return
        await original(self, event)

    connection._handle_ping_event = handle_ping_when_open  # type: ignore[method-assign]  # noqa: SLF001
    setattr(connection, _PATCHED, True)
