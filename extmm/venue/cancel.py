"""Cancel and confirm: the one loop that cancels open orders and waits until the venue
lists none of them (the bot's startup, halt, breaker and shutdown, and `cancel-all`).

Selected orders: in `markets` (None: every market) and, unless `everything`, ours — an
externalId with our prefix (`signing.is_ours`). Ours are cancelled by external id (SPEC
§4.10 `externalOrderIds`, at most `MAX_IDS_PER_CANCEL` per request) so an order someone
else placed on the same sub-account is never touched; `everything` sends the account- or
market-wide mass cancel (SPEC §4.10 `cancelAll` / `markets`). The mass cancel is
idempotent, so a lost or half-applied one is simply sent again, at most every `resend_s`.

Unknown is a state, not zero: `remaining` is None unless the venue's own list of open
orders, read after the start (or handed in by the caller, read just before), showed the
state of the selected orders; a failed read after a good one makes it unknown again.

A refused key (401/403) or a refused cancel request (4xx) raises `VenueRefused` when
`refusal_is_final` (an operator's command: the input must be fixed); the bot passes
False and keeps trying until its deadline, reporting what the venue confirmed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import attrs
import trio
from loguru import logger

from extmm.venue.errors import AuthError, OrderRejected, VenueError
from extmm.venue.port import MAX_IDS_PER_CANCEL, ExchangePort
from extmm.venue.signing import is_ours
from extmm.venue.types import OrderInfo

POLL_S = 0.5
RESEND_S = 3.0


class VenueRefused(Exception):
    """The venue refused the API key or the cancel request; the operator must fix the input."""


@attrs.frozen(kw_only=True)
class CancelOutcome:
    before: tuple[OrderInfo, ...] | None  # selected orders open at the start; None: never listed
    remaining: tuple[OrderInfo, ...] | None  # still open at the end; None: UNKNOWN (not confirmed)
    sends: int  # cancel requests sent (accepted or not)
    problems: tuple[str, ...] = ()  # venue failures along the way
    foreign: tuple[OrderInfo, ...] = ()  # open orders not selected, left alone (last list seen)
    seen: tuple[OrderInfo, ...] = ()  # every selected order seen open in any list

    @property
    def confirmed(self) -> bool:
        return self.remaining is not None

    @property
    def confirmed_none(self) -> bool:
        """The venue listed none of the selected orders open at the end."""
        return self.remaining is not None and not self.remaining

    @property
    def left(self) -> int | None:
        """How many selected orders are still open; None = not confirmed."""
        return None if self.remaining is None else len(self.remaining)

    @property
    def cancelled(self) -> tuple[OrderInfo, ...]:
        """Orders open at the start and confirmed gone at the end (a few may have filled)."""
        if self.before is None or self.remaining is None:
            return ()
        left = {o.id for o in self.remaining}
        return tuple(o for o in self.before if o.id not in left)

    @property
    def gone(self) -> int:
        """Selected orders seen open at any point and not open at the end (confirmed only)."""
        if self.remaining is None:
            return 0
        left = {o.id for o in self.remaining}
        return len({o.id for o in self.seen} - left)


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


async def cancel_and_confirm(
    port: ExchangePort,
    *,
    prefix: str,
    timeout_s: float,
    markets: Collection[str] | None = None,
    everything: bool = False,
    poll_s: float = POLL_S,
    resend_s: float = RESEND_S,
    refusal_is_final: bool = True,
    listed: Sequence[OrderInfo] | None = None,
) -> CancelOutcome:
    """Cancel the selected open orders and wait (at most `timeout_s`) until the venue lists
    none of them. `listed`: the account's open orders just read by the caller, used as the
    first list instead of asking again."""
    wanted = None if markets is None else frozenset(markets)
    one_market = next(iter(wanted)) if wanted is not None and len(wanted) == 1 else None

    def selected(order: OrderInfo) -> bool:
        return (wanted is None or order.market in wanted) and (everything or is_ours(order.external_id, prefix))

    problems: list[str] = []
    before: tuple[OrderInfo, ...] | None = None
    remaining: tuple[OrderInfo, ...] | None = None
    foreign: tuple[OrderInfo, ...] = ()
    seen: dict[int, OrderInfo] = {}
    sends = 0
    next_send = trio.current_time()
    given = None if listed is None else tuple(listed)

    def problem(text: str) -> None:
        if text not in problems:
            logger.warning("{}", text)
        problems.append(text)

    def refused(text: str) -> None:
        if refusal_is_final:
            raise VenueRefused(text)
        problem(text)

    async def send(orders: tuple[OrderInfo, ...] | None) -> None:
        nonlocal sends
        if everything:
            sends += 1
            if wanted is None:
                await port.mass_cancel(cancel_all=True)
            else:
                await port.mass_cancel(markets=sorted(wanted))
            return
        ids = [o.external_id for o in orders or () if o.external_id]
        for chunk in _chunks(ids, MAX_IDS_PER_CANCEL):
            sends += 1
            await port.mass_cancel(external_ids=chunk)

    with trio.move_on_after(timeout_s):
        while True:
            fresh: tuple[OrderInfo, ...] | None
            if given is not None:
                fresh, given = given, None
            else:
                try:
                    fresh = tuple(await port.get_open_orders(one_market))
                except AuthError as exc:
                    refused(f"the venue refused the API key ({exc})")
                    fresh = None
                except VenueError as exc:
                    problem(f"listing open orders failed: {exc}")
                    fresh = None
            if fresh is not None:
                remaining = tuple(o for o in fresh if selected(o))
                foreign = tuple(o for o in fresh if not selected(o))
                seen.update((o.id, o) for o in remaining)
                if before is None:
                    before = remaining
                if not remaining:
                    break
            # Ours are cancelled by the external ids just listed; with nothing listed
            # only the explicit whole-account/market cancel can be sent blind.
            if trio.current_time() >= next_send and (everything or fresh is not None):
                next_send = trio.current_time() + resend_s
                try:
                    await send(remaining)
                except AuthError as exc:
                    refused(f"the venue refused the API key ({exc})")
                except OrderRejected as exc:
                    if exc.http_status is not None and 400 <= exc.http_status < 500:
                        refused(f"the venue refused the cancel: {exc}")
                    else:
                        problem(f"cancel failed: {exc}")
                except VenueError as exc:
                    problem(f"cancel failed: {exc}")
            if fresh is None:
                # The last read failed: whatever an earlier read said is no longer known.
                remaining = None
            await trio.sleep(poll_s)
    if remaining is None:
        problems.append("could not confirm with the venue which orders are still open")
    return CancelOutcome(
        before=before,
        remaining=remaining,
        sends=sends,
        problems=tuple(dict.fromkeys(problems)),
        foreign=foreign,
        seen=tuple(seen.values()),
    )


BOT_POLL_S = 0.25


async def cancel_ours(
    port: ExchangePort,
    *,
    prefix: str,
    markets: Collection[str],
    timeout_s: float,
    listed: Sequence[OrderInfo] | None = None,
) -> CancelOutcome:
    """The running bot's cancel and confirm: ours in `markets`, listed every 0.25 s and
    cancelled again every round while some remain; nothing is final before the deadline
    (a refused key or request is a problem reported, and `remaining` says what is known)."""
    return await cancel_and_confirm(
        port,
        prefix=prefix,
        markets=markets,
        timeout_s=timeout_s,
        poll_s=BOT_POLL_S,
        resend_s=0.0,
        refusal_is_final=False,
        listed=listed,
    )
