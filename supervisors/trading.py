"""The one owner of the root's `TradingState` (`extmm.domain.trading`).

Every change — operator, breaker, a market's halt or restart, the heartbeat, shutdown —
goes through `TradingControl.apply`, which runs the pure `transition` and, when the
quoting mode changed, tells every running, non-halted market's Risk actor (`TradingMode`).
"""

from __future__ import annotations

from actors.messages import TradingMode
from extmm.domain.trading import (
    ResumeQuoting,
    StopQuoting,
    SwitchState,
    TradingEvent,
    TradingState,
    transition,
)
from supervisors.market import MarketWiring


class TradingControl:
    def __init__(self, countdown_s: int) -> None:
        self._state = TradingState(switch=SwitchState(countdown_s=countdown_s))
        self._wirings: dict[str, MarketWiring] = {}

    @property
    def state(self) -> TradingState:
        return self._state

    def quotes(self, market: str) -> bool:
        return self._state.quotes(market)

    def attach(self, market: str, wiring: MarketWiring) -> None:
        """A market's (new) actors: where its `TradingMode` messages go."""
        self._wirings[market] = wiring

    def apply(self, *events: TradingEvent) -> TradingState:
        for event in events:
            before = self._state
            self._state = transition(before, event)
            # Stop and resume are always said (a restarted Risk may have missed one);
            # a throttle only when it changed something.
            if isinstance(event, StopQuoting | ResumeQuoting) or self._state.mode != before.mode:
                self._tell_markets()
        return self._state

    def _tell_markets(self) -> None:
        active, reason, fraction = self._state.mode
        for name, wiring in self._wirings.items():
            if name not in self._state.halted:
                wiring.set_trading_mode(TradingMode(active=active, reason=reason, size_fraction=fraction))
