"""Quote models (seed, Avellaneda–Stoikov, GLFT) and the full quote computation.

The model functions work in floats and return unrounded prices; `compute_quote` turns a
book top, σ, inventory and funding into an integer `QuoteIntent` (ticks and lots) that is
on the market's grid, never crosses the touch when post-only, and always has bid < ask.

Units shared by `avellaneda_stoikov` and `glft`: prices in USD; inventory q in quote
sizes (q = position / base quote size); σ in USD per √second; time in seconds; fill
intensity A in fills per second; k per USD of distance from the reference price.
`compute_quote` converts the bot's inputs (σ relative per √s, inventory in lots) to these.

Funding (all models). Extended funds hourly and a positive rate means longs pay shorts:
holding one unit long for the holding horizon H costs rate·mid·H/3600. The expected carry
lowers the value of being long, so every model prices off the mid shifted by
`funding_shift = −rate·mid·H/3600` (H = `ModelParams.funding_horizon_s`): with a positive
rate both quotes drop, which makes buying less and selling more likely.

Fees. A fill at distance δ from the reference earns δ − fee, so the maker fee rate (a
negative rate is a rebate) widens (narrows) each side by maker_fee_rate·mid.
"""

from __future__ import annotations

import math

import attrs

from extmm.domain.params import ModelParams, QuoteParams
from extmm.domain.units import MarketSpec, Side

SECONDS_PER_FUNDING_PERIOD = 3600.0  # Extended applies funding hourly; rates are per hour
_INF = math.inf
_isfinite = math.isfinite


# -- model outputs ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ModelQuote:
    """Unrounded prices from one model.

    `reservation` is the price the model is indifferent at (fair price skewed by
    inventory); `half_spread` is half the distance between bid and ask, in price units.
    """

    bid: float
    ask: float
    reservation: float
    half_spread: float


def _finite(name: str, value: float, *, minimum: float | None = None, strict: bool = False) -> float:
    """Reject NaN/inf and out-of-range parameters with a message naming the parameter."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '≥'} {minimum:g}, got {value!r}")
    return value


def _log1p_ratio(x: float) -> float:
    """ln(1 + x) / x, continuous at x = 0 (where it is 1)."""
    if abs(x) < 1e-6:
        # Taylor series: the direct form loses all precision as x → 0.
        return 1.0 - x / 2.0 + x * x / 3.0
    return math.log1p(x) / x


# -- models -----------------------------------------------------------------------------


def avellaneda_stoikov(
    *, mid: float, inventory: float, gamma: float, sigma: float, k: float, time_left: float
) -> ModelQuote:
    """Avellaneda–Stoikov (2008) quotes around the reservation price.

        r      = s − q·γ·σ²·τ
        spread = γ·σ²·τ + (2/γ)·ln(1 + γ/k)          (total, bid to ask)
        bid    = r − spread/2,  ask = r + spread/2

    s = `mid`, q = `inventory` (quote sizes), γ = `gamma` (1/USD per quote size), σ =
    `sigma` (USD per √time), τ = `time_left` (same time unit), k = `k` (per USD). γ → 0 is
    handled as its limit, spread = 2/k. A long inventory (q > 0) lowers both quotes.
    """
    mid = _finite("mid", mid)
    inventory = _finite("inventory", inventory)
    gamma = _finite("gamma", gamma, minimum=0.0)
    sigma = _finite("sigma", sigma, minimum=0.0)
    k = _finite("k", k, minimum=0.0, strict=True)
    time_left = _finite("time_left", time_left, minimum=0.0)

    variance_over_horizon = sigma * sigma * time_left
    reservation = mid - inventory * gamma * variance_over_horizon
    # (2/γ)·ln(1 + γ/k) = (2/k)·[ln(1 + γ/k)/(γ/k)], which stays finite as γ → 0.
    spread = gamma * variance_over_horizon + (2.0 / k) * _log1p_ratio(gamma / k)
    half_spread = spread / 2.0
    return ModelQuote(
        bid=reservation - half_spread,
        ask=reservation + half_spread,
        reservation=reservation,
        half_spread=half_spread,
    )


@attrs.frozen(kw_only=True)
class GlftCoefficients:
    c1: float
    c2: float


def glft_coefficients(*, gamma: float, A: float, k: float, xi: float, delta: float) -> GlftCoefficients:  # noqa: N803
    """c1 = ln(1 + ξΔ/k)/(ξΔ),  c2 = sqrt( γ/(2AΔk) · (1 + ξΔ/k)^(k/(ξΔ) + 1) ).

    As ξ → 0 these tend to c1 = 1/k and c2 = sqrt(γ·e/(2AΔk)); both forms are computed
    through ln(1+x)/x with x = ξΔ/k so the limit is exact and there is no 0/0.
    """
    x = xi * delta / k
    ratio = _log1p_ratio(x)  # ln(1+x)/x
    c1 = ratio / k
    # (1+x)^(1/x + 1) = exp(ln(1+x)/x + ln(1+x))
    growth = math.exp(ratio + math.log1p(x))
    c2 = math.sqrt(gamma / (2.0 * A * delta * k) * growth)
    return GlftCoefficients(c1=c1, c2=c2)


def glft(
    *,
    mid: float,
    inventory: float,
    gamma: float,
    sigma: float,
    A: float,  # noqa: N803 - the literature's name
    k: float,
    xi: float | None = None,
    delta: float = 1.0,
) -> ModelQuote:
    """Guéant–Lehalle–Fernandez-Tapia closed-form approximation (no terminal time).

    Guéant (2017), "Optimal market making", eqs. (4.6)–(4.7), in the c1/c2 form of
    hftbacktest's GLFT tutorial:

        c1   = 1/(ξΔ) · ln(1 + ξΔ/k)
        c2   = sqrt( γ/(2AΔk) · (1 + ξΔ/k)^(k/(ξΔ) + 1) )
        δ_b  = c1 + (Δ/2)·σ·c2 + q·σ·c2        (bid distance below the reference)
        δ_a  = c1 + (Δ/2)·σ·c2 − q·σ·c2        (ask distance above the reference)
        bid  = s − δ_b,  ask = s + δ_a

    i.e. half_spread = c1 + (Δ/2)·σ·c2 and skew = σ·c2 per unit of inventory; the
    reservation price is s − q·σ·c2, so a long inventory (q > 0) lowers both quotes.
    s = `mid`, q = `inventory` and Δ = `delta` in the same size unit (quote sizes, Δ = 1
    by default), γ = `gamma`, ξ = `xi` (None → ξ = γ; ξ → 0 uses the exact limit), A =
    fills per time unit at the reference, k per price unit, σ per √time unit.
    """
    mid = _finite("mid", mid)
    inventory = _finite("inventory", inventory)
    gamma = _finite("gamma", gamma, minimum=0.0)
    sigma = _finite("sigma", sigma, minimum=0.0)
    A = _finite("A", A, minimum=0.0, strict=True)  # noqa: N806
    k = _finite("k", k, minimum=0.0, strict=True)
    xi = gamma if xi is None else _finite("xi", xi, minimum=0.0)
    delta = _finite("delta", delta, minimum=0.0, strict=True)

    coeff = glft_coefficients(gamma=gamma, A=A, k=k, xi=xi, delta=delta)
    half_spread = coeff.c1 + delta / 2.0 * sigma * coeff.c2
    skew = sigma * coeff.c2
    reservation = mid - inventory * skew
    return ModelQuote(
        bid=reservation - half_spread,
        ask=reservation + half_spread,
        reservation=reservation,
        half_spread=half_spread,
    )


def seed(
    *,
    mid: float,
    inventory: float,
    sigma: float,
    k: float,
    base_spread: float,
    alpha: float,
    beta: float,
    funding_carry: float = 0.0,
    horizon: float = 60.0,
) -> ModelQuote:
    """The seed design, made precise.

        fair             = s · (1 − k·q)
        half_spread_rel  = base_spread + α·σ·√horizon + β·|funding_carry|
        bid = fair·(1 − half_spread_rel),  ask = fair·(1 + half_spread_rel)

    s = `mid`; q = `inventory` in quote sizes, so k (`markets[].k`) is the relative
    fair-price skew per quote size held — a long position lowers both quotes (this
    resolves the seed's sign ambiguity). σ = `sigma` is relative (fraction of price) per
    √time unit, scaled to the move expected over `horizon` (`model.horizon_s`,
    60 s by default). `funding_carry` is the funding cost as a fraction of price over the
    holding horizon (rate·H/3600), so β widens the spread when funding is large either way.
    """
    mid, inventory, sigma, k = float(mid), float(inventory), float(sigma), float(k)
    base_spread, alpha, beta = float(base_spread), float(alpha), float(beta)
    funding_carry, horizon = float(funding_carry), float(horizon)
    # One combined test on the hot path (every quote); `_finite` names the bad parameter.
    if not (
        _isfinite(mid) and _isfinite(inventory) and _isfinite(funding_carry)
        and 0.0 <= sigma < _INF and 0.0 <= k < _INF and 0.0 <= base_spread < _INF
        and 0.0 <= alpha < _INF and 0.0 <= beta < _INF and 0.0 <= horizon < _INF
    ):
        _finite("mid", mid)
        _finite("inventory", inventory)
        _finite("sigma", sigma, minimum=0.0)
        _finite("k", k, minimum=0.0)
        _finite("base_spread", base_spread, minimum=0.0)
        _finite("alpha", alpha, minimum=0.0)
        _finite("beta", beta, minimum=0.0)
        _finite("funding_carry", funding_carry)
        _finite("horizon", horizon, minimum=0.0)

    fair = mid * (1.0 - k * inventory)
    half_spread_rel = base_spread + alpha * sigma * math.sqrt(horizon) + beta * abs(funding_carry)
    return ModelQuote(
        bid=fair * (1.0 - half_spread_rel),
        ask=fair * (1.0 + half_spread_rel),
        reservation=fair,
        half_spread=fair * half_spread_rel,
    )


def funding_carry(*, funding_rate: float, funding_horizon_s: float) -> float:
    """Funding paid by a long over the horizon, as a fraction of price (rate is per hour)."""
    return funding_rate * funding_horizon_s / SECONDS_PER_FUNDING_PERIOD


def funding_shift(*, mid: float, funding_rate: float, funding_horizon_s: float) -> float:
    """Reservation-price shift for funding: −rate·mid·H/3600 (positive rate → lower quotes)."""
    return -funding_carry(funding_rate=funding_rate, funding_horizon_s=funding_horizon_s) * mid


def default_intensity_k(*, spec: MarketSpec, mid: float, base_spread: float) -> float:
    """k (per USD) when `model.k` is null: 1 / max(base_spread·mid, one tick).

    With little risk aversion both AS and GLFT quote a half-spread of about 1/k, so this
    makes the models start from the market's configured base half-spread, never tighter
    than one tick.
    """
    return 1.0 / max(base_spread * mid, spec.tick_float)


# -- the full quote ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class QuoteIntent:
    """The quote the Quoter wants on the book for one market, on the market's grid.

    A side with 0 lots is not quoted (the Executor cancels it). `reservation` and
    `half_spread` (USD, 0 when unknown) and `model` are diagnostics; `note` says why
    nothing is quoted when the inputs were unusable.
    """

    market: str
    bid_ticks: int
    bid_lots: int
    ask_ticks: int
    ask_lots: int
    reservation: float = 0.0
    half_spread: float = 0.0
    model: str = ""
    note: str = ""
    # Ladder levels beyond the first (`markets[].levels` > 1), each (ticks, lots), ordered
    # away from the touch: bids strictly lower, asks strictly higher than the level before.
    more_bids: tuple[tuple[int, int], ...] = ()
    more_asks: tuple[tuple[int, int], ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.bid_lots < 0 or self.ask_lots < 0:
            raise ValueError(f"{self.market}: negative quote size ({self.bid_lots}, {self.ask_lots})")
        if (self.bid_lots and self.bid_ticks <= 0) or (self.ask_lots and self.ask_ticks <= 0):
            raise ValueError(f"{self.market}: non-positive quote price ({self.bid_ticks}, {self.ask_ticks})")
        if self.bid_lots and self.ask_lots and self.bid_ticks >= self.ask_ticks:
            raise ValueError(f"{self.market}: crossed quote, bid {self.bid_ticks} ≥ ask {self.ask_ticks}")
        if not (self.more_bids or self.more_asks):
            return  # one level a side: no ladder order to check
        for name, levels, sign in (("bid", self.bid_ladder, -1), ("ask", self.ask_ladder, 1)):
            for (t0, _), (t1, l1) in zip(levels, levels[1:], strict=False):
                if l1 < 0 or (l1 and t1 <= 0):
                    raise ValueError(f"{self.market}: bad {name} level ({t1}, {l1})")
                if t0 > 0 and t1 > 0 and (t1 - t0) * sign <= 0:
                    raise ValueError(f"{self.market}: {name} levels must move away from the touch ({t0} → {t1})")

    @property
    def bid_ladder(self) -> tuple[tuple[int, int], ...]:
        """Every bid level, (ticks, lots), the first one (`bid_ticks`, `bid_lots`) included."""
        return ((self.bid_ticks, self.bid_lots), *self.more_bids)

    @property
    def ask_ladder(self) -> tuple[tuple[int, int], ...]:
        return ((self.ask_ticks, self.ask_lots), *self.more_asks)

    def with_ladders(self, bids: tuple[tuple[int, int], ...], asks: tuple[tuple[int, int], ...]) -> QuoteIntent:
        """This intent with the given full ladders (first level included); sizes may be 0."""
        (bid_ticks, bid_lots), *more_bids = bids
        (ask_ticks, ask_lots), *more_asks = asks
        return attrs.evolve(
            self, bid_ticks=bid_ticks, bid_lots=bid_lots, ask_ticks=ask_ticks, ask_lots=ask_lots,
            more_bids=tuple(more_bids), more_asks=tuple(more_asks),
        )

    @classmethod
    def empty(cls, market: str, *, model: str = "", note: str = "") -> QuoteIntent:
        """Quote nothing on either side."""
        return cls(market=market, bid_ticks=0, bid_lots=0, ask_ticks=0, ask_lots=0, model=model, note=note)

    @property
    def has_bid(self) -> bool:
        return self.bid_lots > 0

    @property
    def has_ask(self) -> bool:
        return self.ask_lots > 0


def min_quote_lots(spec: MarketSpec, min_order_size: float = 0.0) -> int:
    """Smallest size we quote, in lots: the larger of the venue's and the config's minimum."""
    config_min = math.ceil(min_order_size / spec.lot_float - 1e-9) if min_order_size > 0 else 0
    return max(spec.min_order_lots, config_min, 1)


def skewed_sizes(*, base_lots: int, inventory_lots: int) -> tuple[int, int]:
    """(bid_lots, ask_lots) from the base size, leaning against the inventory.

    With u = |inventory| / base, the side that reduces the position quotes
    base + min(|inventory|, base) (at most twice the base, so it never offers to flip far
    past flat) and the side that adds quotes base / (1 + u) (halved at one base size
    held, shrinking towards 0). Flat: both sides quote the base size.
    """
    if base_lots <= 0:
        return 0, 0
    held = abs(inventory_lots)
    reducing = base_lots + min(held, base_lots)
    adding = base_lots * base_lots // (base_lots + held)
    if inventory_lots > 0:
        return adding, reducing
    if inventory_lots < 0:
        return reducing, adding
    return base_lots, base_lots


def _model_quote(
    *, model: ModelParams, market: QuoteParams, spec: MarketSpec, reference: float, mid: float,
    inventory: float, sigma_rel: float, carry: float,
) -> ModelQuote:
    if model.type == "seed":
        return seed(
            mid=reference, inventory=inventory, sigma=sigma_rel, k=market.k,
            base_spread=market.base_spread, alpha=market.alpha, beta=market.beta,
            funding_carry=carry, horizon=model.horizon_s,
        )
    k = model.k if model.k is not None else default_intensity_k(spec=spec, mid=mid, base_spread=market.base_spread)
    sigma = sigma_rel * mid  # USD per √s
    if model.type == "avellaneda_stoikov":
        return avellaneda_stoikov(
            mid=reference, inventory=inventory, gamma=model.gamma, sigma=sigma, k=k, time_left=model.horizon_s
        )
    if model.type == "glft":
        return glft(
            mid=reference, inventory=inventory, gamma=model.gamma, sigma=sigma, A=model.A, k=k,
            xi=model.xi, delta=model.delta,
        )
    raise ValueError(f"unknown quote model {model.type!r}")


def compute_quote(
    *,
    spec: MarketSpec,
    market: QuoteParams,
    best_bid_ticks: int | None,
    best_ask_ticks: int | None,
    mid: float,
    sigma: float,
    inventory_lots: int,
    funding_rate: float = 0.0,
    maker_fee_rate: float = 0.0,
) -> QuoteIntent:
    """The integer quote for one market from the book top, σ, inventory and funding.

    `sigma` is relative (fraction of price) per √second; `inventory_lots` is the signed
    position; `funding_rate` is the current hourly rate; `maker_fee_rate` is the fee rate
    of a resting fill (negative = rebate). `best_*_ticks` may be None for an empty side.

    Steps: reference = mid + funding_shift; the model of `market.model` prices bid/ask
    (inventory measured in base quote sizes); each side moves out by maker_fee_rate·mid;
    prices round side-aware (bid down, ask up); post-only clamps bid ≤ best_ask − 1 tick
    and ask ≥ best_bid + 1 tick; bid < ask is restored by raising the ask if rounding
    met them. Sizes: base = quote_notional_cap_usd / mid (rounded down to lots), skewed by
    `skewed_sizes`, capped by the venue's max limit-order value, and a side below
    `min_quote_lots` or at a non-positive price is not quoted (0 lots).

    Unusable inputs (non-finite or non-positive mid, NaN σ, ...) give an empty intent
    whose `note` says why, so a long-running Quoter never dies on one bad update.
    """
    model = market.model
    try:
        mid, sigma, funding_rate, maker_fee_rate = float(mid), float(sigma), float(funding_rate), float(maker_fee_rate)
        # One combined test on the hot path; `_finite` names the bad input.
        if not (0.0 < mid < _INF and 0.0 <= sigma < _INF and _isfinite(funding_rate) and _isfinite(maker_fee_rate)):
            _finite("mid", mid, minimum=0.0, strict=True)
            _finite("sigma", sigma, minimum=0.0)
            _finite("funding_rate", funding_rate)
            _finite("maker_fee_rate", maker_fee_rate)
        base_qty = market.quote_notional_cap_usd / mid
        # Skew towards the inventory target (`inventory_target_usd`, 0 by default) instead of flat.
        if market.inventory_target_usd:
            inventory_lots = inventory_lots - target_lots(spec, market.inventory_target_usd, mid)
        inventory = spec.lots_to_float(inventory_lots) / base_qty
        carry = funding_carry(funding_rate=funding_rate, funding_horizon_s=model.funding_horizon_s)
        reference = mid + funding_shift(mid=mid, funding_rate=funding_rate, funding_horizon_s=model.funding_horizon_s)
        raw = _model_quote(
            model=model, market=market, spec=spec, reference=reference, mid=mid,
            inventory=inventory, sigma_rel=sigma, carry=carry,
        )
        fee_distance = maker_fee_rate * mid
        bid_price = raw.bid - fee_distance
        ask_price = raw.ask + fee_distance
        if not (math.isfinite(bid_price) and math.isfinite(ask_price)):
            raise ValueError(f"model gave non-finite prices ({bid_price!r}, {ask_price!r})")
    except (ValueError, OverflowError, ZeroDivisionError) as exc:
        return QuoteIntent.empty(spec.name, model=model.type, note=str(exc))

    bid_ticks = spec.float_to_ticks(bid_price, Side.BUY)
    ask_ticks = spec.float_to_ticks(ask_price, Side.SELL)
    if market.post_only:
        if best_ask_ticks is not None:
            bid_ticks = min(bid_ticks, best_ask_ticks - 1)
        if best_bid_ticks is not None:
            ask_ticks = max(ask_ticks, best_bid_ticks + 1)
    # Raising the ask can only move it away from the bids, so post-only still holds.
    ask_ticks = max(ask_ticks, bid_ticks + 1)

    base_lots = spec.float_to_lots(base_qty)
    bid_lots, ask_lots = skewed_sizes(base_lots=base_lots, inventory_lots=inventory_lots)
    min_lots = min_quote_lots(spec, market.min_order_size)
    more_bids = ladder_levels(spec, market, first_ticks=bid_ticks, first_lots=bid_lots, mid=mid, side=Side.BUY)
    more_asks = ladder_levels(spec, market, first_ticks=ask_ticks, first_lots=ask_lots, mid=mid, side=Side.SELL)
    bid_lots = _venue_size(spec, bid_ticks, bid_lots, min_lots)
    ask_lots = _venue_size(spec, ask_ticks, ask_lots, min_lots)
    return QuoteIntent(
        market=spec.name,
        bid_ticks=bid_ticks,
        bid_lots=bid_lots,
        ask_ticks=ask_ticks,
        ask_lots=ask_lots,
        reservation=raw.reservation,
        half_spread=raw.half_spread + fee_distance,
        model=model.type,
        more_bids=tuple((t, _venue_size(spec, t, lots, min_lots)) for t, lots in more_bids),
        more_asks=tuple((t, _venue_size(spec, t, lots, min_lots)) for t, lots in more_asks),
    )


def target_lots(spec: MarketSpec, target_usd: float, mid: float) -> int:
    """The inventory target in signed lots at `mid` (rounded towards zero)."""
    if not target_usd:
        return 0
    lots = spec.float_to_lots(abs(target_usd) / mid)
    return lots if target_usd > 0 else -lots


def ladder_levels(
    spec: MarketSpec, market: QuoteParams, *, first_ticks: int, first_lots: int, mid: float, side: Side
) -> list[tuple[int, int]]:
    """Levels 2..`levels` of one side as (ticks, lots), before venue caps.

    Level i (0 = the first) sits i·`level_spacing_bps` of the mid further from the touch
    than the first, and at least one tick beyond the level before; its size is the first
    level's × `level_size_multiplier`^i, rounded down to lots.
    """
    out: list[tuple[int, int]] = []
    if market.levels <= 1 or first_ticks <= 0:
        return out
    sign = -1 if side is Side.BUY else 1
    first_price = spec.ticks_to_float(first_ticks)
    previous = first_ticks
    for i in range(1, market.levels):
        price = first_price + sign * i * market.level_spacing_bps * 1e-4 * mid
        ticks = spec.float_to_ticks(price, side) if price > 0 else 0
        ticks = min(ticks, previous - 1) if sign < 0 else max(ticks, previous + 1)
        lots = int(first_lots * market.level_size_multiplier**i + 1e-9) if ticks > 0 else 0
        out.append((max(ticks, 0), lots))
        previous = ticks
    return out


def _venue_size(spec: MarketSpec, ticks: int, lots: int, min_lots: int) -> int:
    """Cap a side at the venue's max limit-order value; 0 if unquotable."""
    if ticks <= 0:
        return 0
    price = spec.ticks_to_float(ticks)
    max_lots = spec.float_to_lots(spec.max_limit_order_value_float / price)
    lots = min(lots, max_lots)
    return lots if lots >= min_lots else 0
