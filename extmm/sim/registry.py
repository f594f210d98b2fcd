"""The accounts' side of the engine: opening and funding accounts, API keys, fee rates,
and every per-account read (orders, fills, positions, balance, ledger, fees).

One account's money and positions are `extmm.sim.account.AccountState`; leverage and the
margin checks are `extmm.sim.margin`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

from extmm.sim.account import AccountState
from extmm.sim.model import (
    AccountInfo,
    BalanceState,
    FeeSchedule,
    Fill,
    FundingPaymentRecord,
    Ledger,
    OrderState,
    PositionState,
    SimReject,
)
from extmm.sim.signing import KeyPair, generate_key_pair
from extmm.sim.world import World


class AccountRegistry:
    """Account lifecycle and reads over a `World`; see the module docstring."""

    def __init__(self, world: World) -> None:
        self.world = world

    # -- lifecycle -------------------------------------------------------------------------
    def create(
        self,
        *,
        balance: Decimal | int | str,
        api_key: str | None,
        key_pair: KeyPair | None,
        public_key: int | None,
        vault: int | None,
        client_id: int | None,
        description: str,
    ) -> AccountInfo:
        """A new funded account; missing keys are generated deterministically from the seed."""
        world = self.world
        account_id = next(world.account_ids)
        rng = random.Random(f"{world.config.seed}:account:{account_id}")
        if key_pair is None and public_key is None:
            key_pair = generate_key_pair(rng)
        if api_key is None:
            api_key = f"{rng.getrandbits(128):032x}"
        if api_key in world.api_keys:
            raise ValueError("API key already in use")
        if key_pair is not None:
            public_key = key_pair.public_key
        assert public_key is not None  # a key pair was generated when neither was given
        info = AccountInfo(
            id=account_id,
            client_id=client_id if client_id is not None else account_id,
            description=description or f"sim account {account_id}",
            vault=vault if vault is not None else 100_000 + account_id,
            public_key=public_key,
            api_key=api_key,
            private_key=key_pair.private_key if key_pair is not None else None,
        )
        state = AccountState(info, history_limit=world.config.history_limit, created_ms=world.now)
        state.deposit(Fraction(Decimal(str(balance))), world.now)
        world.accounts[account_id] = state
        world.api_keys[api_key] = account_id
        return info

    def authenticate(self, api_key: str | None) -> AccountInfo:
        """The account of an `X-Api-Key`, or SimReject 401."""
        account_id = self.world.api_keys.get(api_key or "")
        if account_id is None:
            raise SimReject(401, "Unauthorized", 401)
        return self.world.accounts[account_id].info

    def by_api_key(self, api_key: str | None) -> AccountInfo | None:
        account_id = self.world.api_keys.get(api_key or "")
        return None if account_id is None else self.world.accounts[account_id].info

    def all(self) -> list[AccountInfo]:
        return [a.info for a in self.world.accounts.values()]

    def deposit(self, account_id: int, amount: Decimal) -> None:
        account = self.world.account(account_id)
        account.deposit(Fraction(amount), self.world.now)
        self.world.emit_balance(account)

    def set_fee_rates(self, account_id: int, market: str, *, maker: Decimal, taker: Decimal) -> None:
        self.world.market(market)
        self.world.account(account_id).fee_overrides[market] = (maker, taker)

    # -- reads -----------------------------------------------------------------------------
    def open_orders(self, account_id: int, market: str | None = None) -> list[OrderState]:
        world = self.world
        account = world.account(account_id)
        return [world.order_state(o) for o in account.open_orders.values() if market in (None, o.market)]

    def get_order(self, account_id: int, order_id: int) -> OrderState:
        order = self.world.account(account_id).orders_by_id.get(order_id)
        if order is None:
            raise SimReject(404, f"order {order_id} not found", 404)
        return self.world.order_state(order)

    def orders_by_external_id(self, account_id: int, external_id: str) -> list[OrderState]:
        world = self.world
        return [world.order_state(o) for o in world.account(account_id).orders_by_external.get(external_id, [])]

    def order_history(
        self, account_id: int, market: str | None = None, limit: int | None = None
    ) -> list[OrderState]:
        """Closed orders, newest first."""
        out: list[OrderState] = []
        for order in reversed(self.world.account(account_id).closed_orders):
            if market in (None, order.market):
                out.append(self.world.order_state(order))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def trades(self, account_id: int, market: str | None = None, limit: int | None = None) -> list[Fill]:
        """The account's fills, newest first."""
        out = [t for t in reversed(self.world.account(account_id).trades) if market in (None, t.market)]
        return out[:limit] if limit is not None else out

    def funding_payments(
        self, account_id: int, market: str | None = None, limit: int | None = None
    ) -> list[FundingPaymentRecord]:
        history = self.world.account(account_id).funding_history
        out = [f for f in reversed(history) if market in (None, f.market)]
        return out[:limit] if limit is not None else out

    def positions(self, account_id: int, market: str | None = None) -> list[PositionState]:
        """Open positions."""
        account = self.world.account(account_id)
        return [
            self.world.position_state(account, name)
            for name, position in account.positions.items()
            if position.lots and market in (None, name)
        ]

    def balance(self, account_id: int) -> BalanceState:
        return self.world.balance_state(self.world.account(account_id))

    def ledger(self, account_id: int) -> Ledger:
        """Exact totals; see `Ledger` for the identity they satisfy."""
        return self.world.account(account_id).ledger(self.world.terms, self.world.marks())

    def fees(self, account_id: int, markets: Sequence[str] | None = None) -> list[FeeSchedule]:
        world = self.world
        account: AccountState = world.account(account_id)
        names = list(markets) if markets else list(world.markets)
        out = []
        for name in names:
            world.market(name)
            maker, taker = world.fee_rates(account, name)
            out.append(FeeSchedule(market=name, maker=maker, taker=taker))
        return out
