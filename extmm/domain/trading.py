"""The bot's trading state as ONE immutable value, changed only through `transition`.

Whether the bot quotes, at what share of its normal size, which markets are halted, and
what the venue's dead man's switch was last told: the root holds one `TradingState` in one
object (`supervisors.trading.TradingControl`) and every change — operator, breaker,
market escalation, heartbeat, shutdown — is a `TradingEvent` applied by `transition`.

Unknown is a state: `SwitchState.expires_at` is set only by `SwitchArmed` (the venue
accepted the countdown) and cleared only by `SwitchDisarmed` (the venue accepted 0); a
failed call is no event, so the state keeps the last thing the venue confirmed.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

# A throttle (HALF_OPEN ramp) smaller than this is not worth telling every market about.
RAMP_STEP = 0.05


@attrs.frozen(kw_only=True)
class SwitchState:
    countdown_s: int  # what the heartbeat arms the switch with (seconds)
    expires_at: float | None = None  # when the last confirmed countdown runs out; None: not armed

    @property
    def armed(self) -> bool:
        return self.expires_at is not None

    def remaining(self, now: float) -> float | None:
        return None if self.expires_at is None else max(self.expires_at - now, 0.0)


@attrs.frozen(kw_only=True)
class TradingState:
    quoting: bool = True
    size_fraction: float = 1.0  # share of the normal quote size, in [0, 1]
    reason: str = "start"  # why the last quoting change happened
    halted: frozenset[str] = frozenset()  # markets stopped after escalating
    switch: SwitchState

    def quotes(self, market: str) -> bool:
        """May `market` quote now?"""
        return self.quoting and market not in self.halted

    @property
    def mode(self) -> tuple[bool, str, float]:
        """What the markets' Risk actors are told: (active, reason, size_fraction)."""
        return self.quoting, self.reason, self.size_fraction


@attrs.frozen
class StopQuoting:
    reason: str


@attrs.frozen
class ResumeQuoting:
    reason: str
    size_fraction: float = 1.0


@attrs.frozen
class Throttle:
    """The breaker's HALF_OPEN ramp: a new size share while quoting (ignored otherwise,
    and when it moved by less than `RAMP_STEP`)."""

    reason: str
    size_fraction: float


@attrs.frozen
class HaltMarket:
    market: str


@attrs.frozen
class ReviveMarket:
    """A halted market's supervisor was started again."""

    market: str


@attrs.frozen
class SetCountdown:
    """The countdown the heartbeat arms with from now on (breaker backstop or normal)."""

    countdown_s: int


@attrs.frozen
class SwitchArmed:
    """The venue accepted `countdown_s` at `at`."""

    at: float
    countdown_s: int


@attrs.frozen
class SwitchDisarmed:
    """The venue accepted 0: no countdown runs."""


QuotingEvent: TypeAlias = StopQuoting | ResumeQuoting | Throttle
TradingEvent: TypeAlias = (
    StopQuoting
    | ResumeQuoting
    | Throttle
    | HaltMarket
    | ReviveMarket
    | SetCountdown
    | SwitchArmed
    | SwitchDisarmed
)


def _fraction(value: float) -> float:
    return min(1.0, max(0.0, value))


def transition(state: TradingState, event: TradingEvent) -> TradingState:
    """The state after `event`. The only way a `TradingState` changes."""
    match event:
        case StopQuoting(reason=reason):
            return attrs.evolve(state, quoting=False, size_fraction=1.0, reason=reason)
        case ResumeQuoting(reason=reason, size_fraction=fraction):
            return attrs.evolve(state, quoting=True, size_fraction=_fraction(fraction), reason=reason)
        case Throttle(reason=reason, size_fraction=fraction):
            fraction = _fraction(fraction)
            if not state.quoting or abs(fraction - state.size_fraction) < RAMP_STEP:
                return state
            return attrs.evolve(state, size_fraction=fraction, reason=reason)
        case HaltMarket(market=market):
            return attrs.evolve(state, halted=state.halted | {market})
        case ReviveMarket(market=market):
            return attrs.evolve(state, halted=state.halted - {market})
        case SetCountdown(countdown_s=countdown):
            return attrs.evolve(state, switch=attrs.evolve(state.switch, countdown_s=countdown))
        case SwitchArmed(at=at, countdown_s=countdown):
            return attrs.evolve(state, switch=SwitchState(countdown_s=countdown, expires_at=at + countdown))
        case SwitchDisarmed():
            return attrs.evolve(state, switch=attrs.evolve(state.switch, expires_at=None))
    raise TypeError(f"not a trading event: {event!r}")
