"""Capped exponential backoff with jitter: the one retry formula of the bot.

Supervisor restarts, stream reconnects, REST read retries, the externalId lookups after an
ambiguous place, the recorder and the Executor's pause after a rejected order all wait
`Backoff.delay`; only their parameters differ. `Backoff` is the policy (data);
`BackoffState` counts attempts for one child or one connection. The n-th consecutive
retry (n = 0, 1, ...) waits `min(cap, initial * factor**n) * (1 - jitter * u)` with `u`
uniform in [0, 1) from an injectable `random.Random`, so the cap is a hard upper bound
and `jitter=0` (or a seeded generator) makes delays exact. Attempts start again from 0
once the thing has been healthy for `reset_after` seconds before it failed.
"""

from __future__ import annotations

import random

import attrs


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be ≥ 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Backoff:
    initial: float = attrs.field(
        default=0.5, converter=float, validator=_non_negative
    )  # seconds before the first retry
    factor: float = attrs.field(default=2.0, converter=float)
    cap: float = attrs.field(
        default=30.0, converter=float, validator=_non_negative
    )  # no delay is ever longer
    jitter: float = attrs.field(default=0.2, converter=float)  # up to this fraction is taken off each delay
    reset_after: float = attrs.field(
        default=60.0, converter=float, validator=_non_negative
    )  # healthy seconds that reset

    @factor.validator
    def _check_factor(self, _attribute: attrs.Attribute[float], value: float) -> None:
        if not value >= 1:
            raise ValueError(f"factor must be ≥ 1, got {value!r}")

    @jitter.validator
    def _check_jitter(self, _attribute: attrs.Attribute[float], value: float) -> None:
        if not 0 <= value <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {value!r}")

    @classmethod
    def none(cls) -> Backoff:
        """Retry at once (tests, or children whose restart is cheap and harmless)."""
        return cls(initial=0.0, factor=1.0, cap=0.0, jitter=0.0)

    @classmethod
    def fixed(cls, delay: float) -> Backoff:
        return cls(initial=delay, factor=1.0, cap=delay, jitter=0.0)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number `attempt` (0-based); `rng` is needed only with jitter."""
        try:
            base = min(self.cap, self.initial * self.factor**attempt)
        except OverflowError:
            base = self.cap
        if self.jitter:
            if rng is None:
                raise ValueError("a jittered backoff needs a random generator")
            base *= 1.0 - self.jitter * rng.random()
        return base


class BackoffState:
    """Attempt counter for one child or connection under a `Backoff` policy."""

    def __init__(self, policy: Backoff, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.attempt = 0
        self._rng = rng if rng is not None else random.Random()

    def next_delay(self, *, healthy_for: float = 0.0) -> float:
        """Delay before the next retry; `healthy_for` is how long the last run was healthy."""
        if healthy_for >= self.policy.reset_after:
            self.attempt = 0
        delay = self.policy.delay(self.attempt, self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
