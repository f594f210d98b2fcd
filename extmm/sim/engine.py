"""The simulated Extended exchange: `SimEngine`, a facade over one module per concern.

`SimEngine` is pure: no I/O, no clock, no trio. Every mutating call takes the current
epoch time in ms and first brings the world up to it (`advance`): order expiries, dead
man's switches, hourly funding and the synthetic flow run in time order, so the same
seed and the same calls at the same times give the same results, in real or virtual
time. REST-level refusals raise `SimReject`; everything the venue would report on its
streams (order states, fills, positions, balances, public trades, marks, funding) is
appended to an outbox that the owner drains (`drain_events`, `drain_book_changes`).

Choices where the venue's behaviour is not documented (SPEC §11), in one place:
- post-only that would cross: status REJECTED, statusReason POST_ONLY_FAILED;
- self-trade protection: the taker's level decides (DISABLED / ACCOUNT: same account /
  CLIENT: same client id); on a conflict the taker's remainder is CANCELLED with
  SELF_TRADE_PROTECTION and the resting order stays;
- replace (`cancelId`): REST-level failures (codes below) leave the old order alone. A
  `cancelId` that names no open order of the account is an engine-level outcome: the new
  order is REJECTED/PREV_ORDER_NOT_FOUND (PREV_ORDER_CONFLICT if the old order is in
  another market). Otherwise the old order ends CANCELLED/ORDER_REPLACED first and the new
  one is then matched; if the new one is rejected by the engine (e.g. post-only cross),
  both are gone. The new order may not reuse an externalId the account has used (1134);
- IOC and MARKET remainders end CANCELLED with statusReason NO_LIQUIDITY (or FILLED);
- user cancels, mass cancels and DMS expiry give CANCELLED with no statusReason; expiry
  gives EXPIRED; cancelling an order that is already closed is acknowledged silently,
  an id the account never had is 404;
- HTTP statuses: 400 for every validation code, 401 for an unknown API key, 404 for an
  unknown order or market path;
- the signed `fee` must be at least the account's maker rate (post-only) or taker rate
  (otherwise), else 1128; fills charge the actual maker/taker rate, rounded up to 1e-6;
- signatures: `starkKey` other than the account's key → 1100, `collateralPosition` other
  than its vault → 1102, a signature that does not verify → 1101 (all REST-level);
  nonces outside [1, 2^31] → 1133 unless `strict_nonce=False`;
- reduce-only (simplified): at placement it must shrink the current position, else
  REJECTED/REDUCE_ONLY_FAILED; TOB/FOK and CONDITIONAL/TPSL/TWAP orders → 1133;
- events of one match, per account: the resting orders' ORDER and TRADE as each fills,
  then the taker's ORDER and its TRADEs, then POSITION and BALANCE of every account
  involved; the crowd (account 0) reports nothing.

Where each rule lives: the shared state and snapshots `extmm.sim.world`; validation of a
new order `extmm.sim.validation` (the body) and `extmm.sim.admission` (against market and
account); accepting, replacing and cancelling `extmm.sim.order_entry`; matching and how an
order ends `extmm.sim.matching`; accounts `extmm.sim.registry`, leverage and margin
`extmm.sim.margin`; expiry, the dead man's switch and funding `extmm.sim.timers`; the
synthetic crowd `extmm.sim.crowd`; market data and book drains `extmm.sim.marketview`.

The outbox has one consumer. Book changes accumulate per market until drained; drain a
market (`drain_book_delta`) before taking the snapshot for a new subscriber so that the
snapshot and the following deltas line up.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from extmm.domain.units import MarketSpec
from extmm.markets import bundled_markets, spec_from_market
from extmm.sim.account import AccountState
from extmm.sim.admission import UNCHECKED, Admission
from extmm.sim.book import LevelUnits
from extmm.sim.crowd import Crowd
from extmm.sim.flow import FlowParams, MarketFlow
from extmm.sim.margin import Margin
from extmm.sim.marketview import MarketView
from extmm.sim.matching import Matcher
from extmm.sim.model import (
    AccountInfo,
    BalanceState,
    BookDelta,
    BookSnapshot,
    FeeSchedule,
    Fill,
    FundingPaymentRecord,
    FundingRatePoint,
    Ledger,
    MarketStats,
    MarkPriceEvent,
    OrderState,
    PositionState,
    PublicTrade,
    SimEvent,
    SimOrder,
)
from extmm.sim.order_entry import OrderEntry
from extmm.sim.registry import AccountRegistry
from extmm.sim.signing import KeyPair, L2Config, SignatureError, StarknetDomain
from extmm.sim.timers import Timers
from extmm.sim.world import EngineConfig, SimMarket, World
from extmm.venue.types import PlacedOrder

__all__ = ["UNCHECKED", "EngineConfig", "SimEngine"]


class SimEngine:
    """An Extended-compatible exchange in memory. See the module docstring for the rules.

    Every mutating call takes the current epoch time in ms and first runs what is due up
    to it (`advance`); the work itself is done by the concern objects it composes.
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        start_ms: int,
        markets: Iterable[Mapping[str, Any]] | None = None,
    ) -> None:
        self.config = config = config or EngineConfig()
        sim_markets: dict[str, SimMarket] = {}
        raw_markets = list(markets) if markets is not None else list(bundled_markets().values())
        for raw in raw_markets:
            raw = dict(raw)
            spec = spec_from_market(raw)
            flow = None
            if config.synthetic_flow:
                params = config.flow_params.get(spec.name) or FlowParams.for_market(raw, preset=config.flow_preset)
                flow = MarketFlow(params, spec, random.Random(f"{config.seed}:flow:{spec.name}"))
            sim_markets[spec.name] = SimMarket(raw, spec, flow)
        self.world = world = World(config, start_ms=start_ms, markets=sim_markets)
        self.matcher = Matcher(world)
        self.registry = AccountRegistry(world)
        self.margin = Margin(world)
        self.admission = Admission(world, self.margin)
        self.orders = OrderEntry(world, self.matcher)
        self.timers = Timers(world, self.matcher)
        self.crowd = Crowd(world, self.matcher)
        self.view = MarketView(world)
        step = config.step_ms
        self._next_step_ms = (start_ms // step + 1) * step
        self._has_flow = any(m.flow is not None for m in world.markets.values())
        for market in world.markets.values():
            if market.flow is not None:
                self.crowd.refresh(market)
        for market in world.markets.values():
            market.book.drain_changes()  # the opening book is the first snapshot, not a delta

    # == time ================================================================================
    @property
    def now_ms(self) -> int:
        return self.world.now

    @property
    def domain(self) -> StarknetDomain:
        return self.config.domain

    @property
    def maker_fills(self) -> Counter[str]:
        """Our resting orders' fills by how they came about (see `World.maker_fills`)."""
        return self.world.maker_fills

    def advance(self, now_ms: int) -> None:
        """Run everything due up to `now_ms` (a time in the past is treated as the present)."""
        world = self.world
        if now_ms <= world.now:
            return
        if self._has_flow:
            step = self.config.step_ms
            t = self._next_step_ms
            while t <= now_ms:
                self.timers.run(t)
                world.now = t
                self.crowd.step(t)
                t += step
            self._next_step_ms = t
        self.timers.run(now_ms)
        world.now = now_ms

    # == accounts ============================================================================
    def create_account(
        self,
        *,
        balance: Decimal | int | str = Decimal(10_000),
        api_key: str | None = None,
        key_pair: KeyPair | None = None,
        public_key: int | None = None,
        vault: int | None = None,
        client_id: int | None = None,
        description: str = "",
    ) -> AccountInfo:
        """A new funded account; missing keys are generated deterministically from the seed.

        Give `key_pair`, or only `public_key` for an account whose orders are signed
        elsewhere (e.g. the SDK's public test key); `private_key` of the result is then None.
        """
        return self.registry.create(
            balance=balance,
            api_key=api_key,
            key_pair=key_pair,
            public_key=public_key,
            vault=vault,
            client_id=client_id,
            description=description,
        )

    def authenticate(self, api_key: str | None) -> AccountInfo:
        """The account of an `X-Api-Key`, or SimReject 401."""
        return self.registry.authenticate(api_key)

    def account_by_api_key(self, api_key: str | None) -> AccountInfo | None:
        return self.registry.by_api_key(api_key)

    def account_info(self, account_id: int) -> AccountInfo:
        return self.world.account(account_id).info

    def accounts(self) -> list[AccountInfo]:
        return self.registry.all()

    def deposit(self, account_id: int, amount: Decimal, now_ms: int) -> None:
        self.advance(now_ms)
        self.registry.deposit(account_id, amount)

    def set_fee_rates(self, account_id: int, market: str, *, maker: Decimal, taker: Decimal) -> None:
        self.registry.set_fee_rates(account_id, market, maker=maker, taker=taker)

    def set_leverage(self, account_id: int, market: str, leverage: Decimal, now_ms: int) -> None:
        """`PATCH /user/leverage` (SPEC §4.7); see `Margin.set_leverage` for the refusals."""
        self.advance(now_ms)
        self.margin.set_leverage(account_id, market, leverage)

    def leverage(self, account_id: int, market: str | None = None) -> list[tuple[str, Decimal]]:
        return self.margin.leverage(account_id, market)

    def set_dms(self, account_id: int, countdown_s: int, now_ms: int) -> None:
        """Arm or re-arm the dead man's switch; 0 disarms (SPEC §4.11)."""
        self.advance(now_ms)
        self.timers.set_switch(account_id, countdown_s)

    def dms_deadline(self, account_id: int) -> int | None:
        return self.timers.switch_deadline(account_id)

    def fire_dms(self, account_id: int, now_ms: int) -> bool:
        """Expire an armed dead man's switch now (fault drills); False if it was not armed."""
        self.advance(now_ms)
        return self.timers.fire_switch(account_id)

    # == markets =============================================================================
    def market_names(self) -> list[str]:
        return list(self.world.markets)

    def market_object(self, name: str) -> dict[str, Any]:
        """The venue's market object (as served at start) — combine with `market_stats`."""
        return self.world.market(name).raw

    def market_spec(self, name: str) -> MarketSpec:
        return self.world.market(name).spec

    def l2_config(self, name: str) -> L2Config:
        return self.world.market(name).l2

    def flow_params(self, name: str) -> FlowParams | None:
        flow = self.world.market(name).flow
        return flow.params if flow else None

    def mid(self, name: str) -> float:
        """The flow's true (float) mid; without a flow, the mark."""
        m = self.world.market(name)
        return m.flow.mid if m.flow else float(m.mark)

    def mark_price(self, name: str) -> Decimal:
        return self.world.market(name).mark

    def index_price(self, name: str) -> Decimal:
        return self.world.market(name).index

    def funding_rate(self, name: str) -> Decimal:
        return self.world.market(name).funding_rate

    def set_mark_price(self, name: str, price: Decimal, now_ms: int | None = None) -> None:
        """Pin the mark (tests, markets without flow); a flow overwrites it on its next step."""
        if now_ms is not None:
            self.advance(now_ms)
        m = self.world.market(name)
        m.mark = Decimal(price)
        m.index = Decimal(price)
        self.world.events.append(MarkPriceEvent(market=name, price=m.mark, ts=self.world.now))

    def set_funding_rate(self, name: str, rate: Decimal) -> None:
        self.world.market(name).funding_rate = Decimal(rate)

    def market_stats(self, name: str) -> MarketStats:
        return self.view.stats(name)

    def public_trades(self, name: str, limit: int = 50) -> list[PublicTrade]:
        """The latest prints, oldest first."""
        return self.view.public_trades(name, limit)

    def funding_rates(self, name: str, start_ms: int = 0, end_ms: int | None = None) -> list[FundingRatePoint]:
        """Hourly applied rates in [start, end], newest first."""
        return self.view.funding_rates(name, start_ms, end_ms)

    def book_snapshot(self, name: str, depth: int | None = None) -> BookSnapshot:
        """Aggregated levels best-first. Drain book changes first when serving a new subscriber."""
        return self.view.book_snapshot(name, depth)

    def book_levels(self, name: str, depth: int | None = None) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Integer (ticks, lots) levels best-first: bids, asks."""
        return self.view.book_levels(name, depth)

    def drain_book_changes(self) -> list[BookDelta]:
        """Per market, the levels that changed since its last drain (unchanged markets left out)."""
        return self.view.drain_book_changes()

    def drain_level_changes(self) -> list[tuple[str, list[LevelUnits], list[LevelUnits]]]:
        """`drain_book_changes` in integers: `(market, bids, asks)`, levels `(ticks, Δlots, lots)`."""
        return self.view.drain_level_changes()

    def drain_book_delta(self, name: str) -> BookDelta:
        """One market's level changes since its last drain (empty tuples: nothing changed)."""
        return self.view.drain_book_delta(name)

    def drain_events(self) -> list[SimEvent]:
        """Everything reported since the last drain, in order."""
        world = self.world
        events, world.events = world.events, []
        return events

    # == orders ==============================================================================
    def check_signature(self, account_id: int, body: Mapping[str, Any]) -> SignatureError | None:
        """The signature verdict for an order body (None: valid, or not checkable yet).
        Reads only immutable configuration: safe to run in a worker thread."""
        return self.admission.check_signature(account_id, body)

    def place_order(
        self,
        account_id: int,
        body: Mapping[str, Any],
        now_ms: int,
        *,
        force_reject: str | None = None,
        signature: SignatureError | None | object = UNCHECKED,
    ) -> PlacedOrder:
        """`POST /user/order`: validate, then accept and match. Returns the ack.

        `force_reject` (fault injection) accepts the order and rejects it in the engine
        with that status reason, like a matching-engine refusal after a 200 (a replaced
        order is cancelled all the same, as for a post-only cross).
        `signature`: the verdict of `check_signature` computed beforehand (the served
        simulator checks in a worker thread, as a venue's front end would not stall on
        it); by default the signature is checked here. Either way a bad signature is
        refused at the same point of the validation order.
        """
        self.advance(now_ms)
        admitted = self.admission.admit(account_id, body, signature=signature)
        return self.orders.accept(admitted, force_reject=force_reject)

    def cancel_order(self, account_id: int, order_id: int, now_ms: int) -> None:
        """`DELETE /user/order/{id}`; 404 if the account never had the order."""
        self.advance(now_ms)
        self.orders.cancel(account_id, order_id)

    def cancel_order_by_external_id(self, account_id: int, external_id: str, now_ms: int) -> None:
        """`DELETE /user/order?externalId=`; 404 if the account never used the id."""
        self.advance(now_ms)
        self.orders.cancel_by_external_id(account_id, external_id)

    def mass_cancel(
        self,
        account_id: int,
        now_ms: int,
        *,
        order_ids: Sequence[int] = (),
        external_ids: Sequence[str] = (),
        markets: Sequence[str] = (),
        cancel_all: bool = False,
    ) -> int:
        """`POST /user/order/massCancel`: cancels the union of the selections; returns how many."""
        self.advance(now_ms)
        return self.orders.mass_cancel(
            account_id, order_ids=order_ids, external_ids=external_ids, markets=markets, cancel_all=cancel_all
        )

    def open_orders(self, account_id: int, market: str | None = None) -> list[OrderState]:
        return self.registry.open_orders(account_id, market)

    def get_order(self, account_id: int, order_id: int) -> OrderState:
        return self.registry.get_order(account_id, order_id)

    def orders_by_external_id(self, account_id: int, external_id: str) -> list[OrderState]:
        return self.registry.orders_by_external_id(account_id, external_id)

    def order_history(self, account_id: int, market: str | None = None, limit: int | None = None) -> list[OrderState]:
        """Closed orders, newest first."""
        return self.registry.order_history(account_id, market, limit)

    def trades(self, account_id: int, market: str | None = None, limit: int | None = None) -> list[Fill]:
        """The account's fills, newest first."""
        return self.registry.trades(account_id, market, limit)

    def funding_payments(
        self, account_id: int, market: str | None = None, limit: int | None = None
    ) -> list[FundingPaymentRecord]:
        return self.registry.funding_payments(account_id, market, limit)

    def positions(self, account_id: int, market: str | None = None) -> list[PositionState]:
        """Open positions."""
        return self.registry.positions(account_id, market)

    def balance(self, account_id: int) -> BalanceState:
        return self.registry.balance(account_id)

    def ledger(self, account_id: int) -> Ledger:
        """Exact totals; see `Ledger` for the identity they satisfy."""
        return self.registry.ledger(account_id)

    def fees(self, account_id: int, markets: Sequence[str] | None = None) -> list[FeeSchedule]:
        return self.registry.fees(account_id, markets)

    # == for subclasses (`extmm.sim.replay_engine.ReplayEngine`) ===============================
    @property
    def _now(self) -> int:
        return self.world.now

    @_now.setter
    def _now(self, now_ms: int) -> None:
        self.world.now = now_ms

    def _run_timers(self, until_ms: int) -> None:
        self.timers.run(until_ms)

    @property
    def _accounts(self) -> dict[int, AccountState]:
        return self.world.accounts

    def _market(self, name: str) -> SimMarket:
        return self.world.market(name)

    def _submit(self, m: SimMarket, order: SimOrder) -> SimOrder | None:
        return self.matcher.submit(m, order)
