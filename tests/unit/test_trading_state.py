"""The trading state's one transition function (extmm.domain.trading)."""

from __future__ import annotations

import pytest

from extmm.domain.trading import (
    HaltMarket,
    ResumeQuoting,
    ReviveMarket,
    SetCountdown,
    StopQuoting,
    SwitchArmed,
    SwitchDisarmed,
    SwitchState,
    Throttle,
    TradingState,
    transition,
)


def start() -> TradingState:
    return TradingState(switch=SwitchState(countdown_s=30))


def run(*events) -> TradingState:
    state = start()
    for event in events:
        state = transition(state, event)
    return state


def test_a_fresh_state_quotes_fully_and_the_switch_is_not_armed():
    state = start()
    assert state.quoting and state.size_fraction == 1.0 and state.quotes("BTC-USD")
    assert not state.switch.armed and state.switch.remaining(100.0) is None


def test_stop_and_resume():
    stopped = run(StopQuoting("breaker: rate_limit"))
    assert not stopped.quoting and not stopped.quotes("BTC-USD")
    assert stopped.mode == (False, "breaker: rate_limit", 1.0)
    resumed = transition(stopped, ResumeQuoting("breaker HALF_OPEN", 0.25))
    assert resumed.mode == (True, "breaker HALF_OPEN", 0.25)
    assert transition(stopped, ResumeQuoting("x", 7.0)).size_fraction == 1.0  # clamped to [0, 1]


def test_throttle_only_while_quoting_and_only_by_a_real_step():
    half = run(ResumeQuoting("breaker HALF_OPEN", 0.25))
    assert transition(half, Throttle("breaker HALF_OPEN", 0.27)) is half  # under RAMP_STEP
    assert transition(half, Throttle("breaker HALF_OPEN", 0.31)).size_fraction == 0.31
    stopped = run(StopQuoting("shutdown"))
    assert transition(stopped, Throttle("breaker HALF_OPEN", 0.5)) is stopped  # never resumes by itself


def test_halt_and_revive_one_market():
    state = run(HaltMarket("BTC-USD"))
    assert state.halted == {"BTC-USD"}
    assert not state.quotes("BTC-USD") and state.quotes("ETH-USD")
    assert transition(state, ReviveMarket("BTC-USD")).quotes("BTC-USD")
    # A halted market stays halted across stop and resume.
    state = run(HaltMarket("BTC-USD"), StopQuoting("op"), ResumeQuoting("op"))
    assert not state.quotes("BTC-USD") and state.quotes("ETH-USD")


def test_the_switch_state_is_what_the_venue_accepted():
    armed = run(SwitchArmed(at=100.0, countdown_s=30))
    assert armed.switch == SwitchState(countdown_s=30, expires_at=130.0)
    assert armed.switch.remaining(120.0) == 10.0 and armed.switch.remaining(200.0) == 0.0
    backstop = transition(armed, SetCountdown(10))  # asked for, not yet accepted
    assert backstop.switch == SwitchState(countdown_s=10, expires_at=130.0)
    rearmed = transition(backstop, SwitchArmed(at=125.0, countdown_s=10))
    assert rearmed.switch.expires_at == 135.0
    disarmed = transition(rearmed, SwitchDisarmed())
    assert not disarmed.switch.armed and disarmed.switch.countdown_s == 10
    # Quoting and the switch are independent parts of the one value.
    assert disarmed.quoting and transition(disarmed, StopQuoting("x")).switch == disarmed.switch


def test_anything_else_is_refused():
    with pytest.raises(TypeError):
        transition(start(), "stop")  # type: ignore[arg-type]
