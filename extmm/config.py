"""Configuration: the seed's `config.json` format, loaded into frozen attrs classes.

One cattrs converter with `forbid_extra_keys=True` structures the file; every leaf type
has a strict hook so a wrong value is reported with its key path, the bad value and what
was expected, e.g. `markets[1].base_spread: expected a number ≥ 0, got "abc"`.
Secrets never live here: see `extmm.ops.secrets`.

Units: `base_spread` is a fraction of mid (0.001 = 10 bps); `*_usd` are USD notionals;
`*_ms` / `*_sec` / `*_s` are durations; `replace_threshold_bps` is basis points of price.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, NewType, cast

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

# -- constrained leaf types -------------------------------------------------------------
NonNegFloat = NewType("NonNegFloat", float)
PosFloat = NewType("PosFloat", float)
NonNegInt = NewType("NonNegInt", int)
PosInt = NewType("PosInt", int)
Rate = NewType("Rate", Decimal)  # a fee rate, as a decimal string or number, -0.01..0.01
MarketName = NewType("MarketName", str)

StpLevel = Literal["DISABLED", "ACCOUNT", "CLIENT"]
ModelName = Literal["seed", "avellaneda_stoikov", "glft"]
NetworkName = Literal["paper", "testnet", "mainnet"]


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# -- schema -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FeesOverride:
    """Fee rates to use instead of the account's (`/user/fees`); null keeps the account's."""

    makerFeeRate: Rate | None = None  # noqa: N815 - the seed's key names
    takerFeeRate: Rate | None = None  # noqa: N815


@attrs.frozen(kw_only=True)
class ModelConfig:
    """Quote model selection and parameters (new in extmm; the seed model is the default).

    avellaneda_stoikov: gamma (risk aversion, 1/(USD·size)), k (intensity decay per price
    unit), horizon_s (τ, seconds). glft: gamma, A (fills per second at the touch), k, xi
    (null → gamma), delta (order size unit). funding_horizon_s: holding horizon over which
    the funding carry shifts the reservation price (Extended funding is hourly).
    """

    type: ModelName = "seed"
    gamma: PosFloat = PosFloat(0.002)  # risk aversion; inventory is in quote sizes, σ in USD/√s
    k: PosFloat | None = None  # None → 1/max(base_spread·mid, one tick) (extmm.domain.quoting)
    A: PosFloat = PosFloat(1.0)  # noqa: N815
    xi: PosFloat | None = None
    delta: PosFloat = PosFloat(1.0)
    horizon_s: PosFloat = PosFloat(60.0)
    funding_horizon_s: NonNegFloat = NonNegFloat(3600.0)
    recalibrate: bool = False
    recalibrate_window_s: PosFloat = PosFloat(900.0)


FairValue = Literal["mid", "microprice"]
SweepAction = Literal["widen", "pull"]


@attrs.frozen(kw_only=True)
class GuardsConfig:
    """Adverse-selection guards of one market (#16), every one off by default.

    fill_cooldown_ms: a side rests for this long after it was filled (0 = off).
    sweep_window_ms / sweep_move_bps: a side is swept when, within the window, the book's
    touch on that side moved through the price of one of our fills, or the opposite touch
    reached our last quote, or the touch moved `sweep_move_bps` or more against that side
    (0 = off); the swept side is widened by `sweep_widen_bps` or pulled (`sweep_action`)
    for `sweep_hold_ms`.
    markout_horizon_s / markout_widen_bps: a side whose recent fills' mean markout at the
    horizon is below −markout_threshold_bps widens by markout_widen_bps per bp of loss,
    capped at markout_max_widen_bps (0 = off); the mean is over markout_window fills.
    vol_window_ms / vol_pause_bps: both sides pause for vol_pause_ms when the mid moved
    more than vol_pause_bps (high − low) within the window (0 = off).
    fair_value: the price every model quotes around: the mid or the touch microprice.
    """

    fill_cooldown_ms: NonNegFloat = NonNegFloat(0.0)
    sweep_window_ms: NonNegFloat = NonNegFloat(0.0)
    sweep_move_bps: PosFloat = PosFloat(3.0)
    sweep_action: SweepAction = "widen"
    sweep_widen_bps: NonNegFloat = NonNegFloat(5.0)
    sweep_hold_ms: NonNegFloat = NonNegFloat(2000.0)
    markout_horizon_s: PosFloat = PosFloat(10.0)
    markout_window: PosInt = PosInt(20)
    markout_threshold_bps: NonNegFloat = NonNegFloat(0.0)
    markout_widen_bps: NonNegFloat = NonNegFloat(0.0)
    markout_max_widen_bps: NonNegFloat = NonNegFloat(20.0)
    vol_window_ms: NonNegFloat = NonNegFloat(0.0)
    vol_pause_bps: PosFloat = PosFloat(10.0)
    vol_pause_ms: NonNegFloat = NonNegFloat(3000.0)
    fair_value: FairValue = "mid"

    @property
    def any_on(self) -> bool:
        """Whether any guard is on (the Quoter skips them all otherwise)."""
        return bool(self.fill_cooldown_ms or self.sweep_window_ms or self.markout_widen_bps
                    or self.vol_window_ms or self.fair_value != "mid")


@attrs.frozen(kw_only=True)
class MarketConfig:
    name: MarketName
    enabled: bool = True
    # Account leverage of this market, set at start when it differs (PATCH /user/leverage);
    # None keeps the account's.
    leverage: PosInt | None = None
    k: NonNegFloat = NonNegFloat(0.0005)  # seed model: relative fair-price skew per quote size of inventory
    alpha: NonNegFloat = NonNegFloat(0.5)  # seed model: half-spread weight on σ
    beta: NonNegFloat = NonNegFloat(0.25)  # seed model: half-spread weight on the funding term
    base_spread: NonNegFloat = NonNegFloat(0.001)  # seed model: base half-spread, fraction of mid
    quote_notional_cap_usd: PosFloat = PosFloat(50.0)
    replace_threshold_bps: NonNegFloat = NonNegFloat(2.0)
    min_order_size: NonNegFloat = NonNegFloat(0.0)
    post_only: bool = True
    fees_override: FeesOverride | None = None
    model: ModelConfig = ModelConfig()
    # Ladders (#16): orders a side; each further level level_spacing_bps (of mid) further
    # out and level_size_multiplier × the size of the level before.
    levels: PosInt = PosInt(1)
    level_spacing_bps: PosFloat = PosFloat(5.0)
    level_size_multiplier: PosFloat = PosFloat(1.0)
    inventory_target_usd: float = 0.0  # every model skews towards this signed USD position
    guards: GuardsConfig = GuardsConfig()


@attrs.frozen(kw_only=True)
class RiskConfig:
    max_net_position_usd: NonNegFloat = NonNegFloat(200.0)
    max_open_orders: PosInt = PosInt(30)
    min_balance_usd: NonNegFloat = NonNegFloat(50.0)
    stale_book_ms: PosInt = PosInt(3000)  # no quotes rest on a book older than this
    max_drawdown_usd: PosFloat | None = None  # kill switch; None disables
    # Account-wide: Σ over markets of |net position| at each market's mid; None disables.
    max_total_net_position_usd: PosFloat | None = None


@attrs.frozen(kw_only=True)
class BreakerConfig:
    max_429_per_min: PosInt = PosInt(5)
    max_error_rate: NonNegFloat = NonNegFloat(0.2)  # share of failed REST calls over the window
    max_latency_ms: PosFloat = PosFloat(2000.0)  # p99 REST latency over the window
    window_s: PosFloat = PosFloat(60.0)
    cooldown_s: PosFloat = PosFloat(30.0)
    dms_backstop_sec: PosInt = PosInt(10)
    # Halted markets within window_s that trip the breaker for every market; one halted
    # market alone only stops itself.
    escalations_to_trip: PosInt = PosInt(2)


@attrs.frozen(kw_only=True)
class AlertsConfig:
    """Optional webhook fired on alert events (extmm.ops.alerts); never on the trading path.

    webhook_url: Slack/Discord/Telegram-compatible (a JSON body with `text` and `content`,
    plus `chat_id` when telegram_chat_id is set). It often embeds a token: it is masked in
    logs like the other secrets. Thresholds: drawdown_usd from the session's peak net PnL,
    no_fills_s without a fill while quoting, `reconnects` feed reconnects within
    reconnect_window_s.
    """

    webhook_url: str | None = None
    telegram_chat_id: str | None = None
    drawdown_usd: PosFloat = PosFloat(50.0)
    no_fills_s: PosFloat = PosFloat(3600.0)
    reconnects: PosInt = PosInt(5)
    reconnect_window_s: PosFloat = PosFloat(600.0)
    timeout_s: PosFloat = PosFloat(5.0)


@attrs.frozen(kw_only=True)
class BotConfig:
    stp: StpLevel = "ACCOUNT"
    quote_loop_ms: PosInt = PosInt(250)
    replace_coalesce_ms: NonNegInt = NonNegInt(400)
    dead_mans_switch_sec: PosInt = PosInt(120)
    risk: RiskConfig = RiskConfig()
    markets: list[MarketConfig] = attrs.Factory(list)
    fees_override: FeesOverride | None = None
    order_expiry_s: PosInt = PosInt(3600)
    external_id_prefix: str = "extmm"
    breaker: BreakerConfig = BreakerConfig()
    alerts: AlertsConfig = AlertsConfig()
    # This instance's REST budget (requests/min). The venue counts per IP address across
    # all keys (SPEC §7): instances sharing an address divide it (README).
    rate_limit_per_min: PosInt = PosInt(1000)
    # Startup: a market whose order book is not valid within this many seconds is left out
    # ("skip": reported by name, the others trade) or stops the start ("fail").
    book_ready_timeout_s: PosFloat = PosFloat(60.0)
    on_missing_book: Literal["skip", "fail"] = "fail"

    @property
    def enabled_markets(self) -> list[MarketConfig]:
        return [m for m in self.markets if m.enabled]

    def fees_for(self, market: MarketConfig) -> FeesOverride | None:
        """Per-market override wins over the top-level one."""
        return market.fees_override or self.fees_override


# -- converter --------------------------------------------------------------------------


def _show(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(lo: float | None, strict_lo: bool, integer: bool) -> Callable[[Any, Any], float]:
    what = "an integer" if integer else "a number"
    if lo is not None:
        what += f" {'>' if strict_lo else '≥'} {lo:g}"

    def hook(value: Any, _type: Any) -> Any:
        try:
            ok = _is_number(value) and math.isfinite(value) and (not integer or float(value).is_integer())
        except OverflowError:  # an integer too large for a float
            ok = False
        if ok and lo is not None:
            ok = value > lo if strict_lo else value >= lo
        if not ok or value != value:  # NaN
            raise ValueError(f"expected {what}, got {_show(value)}")
        return int(value) if integer else float(value)

    return hook


def _rate(value: Any, _type: Any) -> Decimal:
    try:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InvalidOperation
        rate = Decimal(str(value))
        if not rate.is_finite() or abs(rate) > Decimal("0.01"):
            raise InvalidOperation
    except InvalidOperation:
        raise ValueError(f"expected a fee rate between -0.01 and 0.01, got {_show(value)}") from None
    return rate


def _str(value: Any, _type: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_show(value)}")
    return value


def _market_name(value: Any, _type: Any) -> str:
    if not isinstance(value, str) or not value or value.strip() != value:
        raise ValueError(f"expected a market name such as \"BTC-USD\", got {_show(value)}")
    return value


def _bool(value: Any, _type: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_show(value)}")
    return value


def _literal(value: Any, type_: Any) -> Any:
    allowed = type_.__args__
    if value not in allowed:
        raise ValueError(f"expected one of {', '.join(_show(a) for a in allowed)}, got {_show(value)}")
    return value


def _object_hook(inner: Any, *, allow_str: bool = False) -> Any:
    def hook(value: Any, type_: Any) -> Any:
        if not isinstance(value, dict) and not (allow_str and isinstance(value, str)):
            raise ValueError(f"expected an object, got {_show(value)}")
        return inner(value, type_)

    return hook


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(NonNegFloat, _number(0, False, False))
    conv.register_structure_hook(PosFloat, _number(0, True, False))
    conv.register_structure_hook(NonNegInt, _number(0, False, True))
    conv.register_structure_hook(PosInt, _number(0, True, True))
    conv.register_structure_hook(float, _number(None, False, False))
    conv.register_structure_hook(int, _number(None, False, True))
    conv.register_structure_hook(Rate, _rate)
    conv.register_structure_hook(MarketName, _market_name)
    conv.register_structure_hook(str, _str)
    conv.register_structure_hook(bool, _bool)
    conv.register_structure_hook_func(lambda t: getattr(t, "__origin__", None) is Literal, _literal)
    # Wrong container types get a plain "expected ..." instead of a Python error.
    for cls in (FeesOverride, RiskConfig, BreakerConfig, GuardsConfig):
        conv.register_structure_hook(cls, _object_hook(conv.get_structure_hook(cls)))
    # `model` may be just the model's name.
    base_model_hook = conv.get_structure_hook(ModelConfig)
    conv.register_structure_hook(
        ModelConfig,
        _object_hook(lambda v, t: base_model_hook({"type": v} if isinstance(v, str) else v, t), allow_str=True),
    )
    # The seed's quote model key was sometimes spelled `K`; accept it as `k`.
    base_market_hook = conv.get_structure_hook(MarketConfig)

    def market_hook(value: Any, type_: Any) -> MarketConfig:
        if isinstance(value, dict) and "K" in value and "k" not in value:
            value = {("k" if key == "K" else key): v for key, v in value.items()}
        if not isinstance(value, dict):
            raise ValueError(f"expected an object, got {_show(value)}")
        return cast(MarketConfig, base_market_hook(value, type_))

    conv.register_structure_hook(MarketConfig, market_hook)
    base_markets_hook = list_structure_factory(list[MarketConfig], conv)

    def markets_hook(value: Any, type_: Any) -> list[MarketConfig]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list of market objects, got {_show(value)}")
        return cast(list[MarketConfig], base_markets_hook(value, type_))

    conv.register_structure_hook_func(lambda t: t == list[MarketConfig], markets_hook)
    return conv


converter = _make_converter()


def _format_path(path: str) -> str:
    return path.removeprefix("$").removeprefix(".") or "(top level)"


def _child_path(path: str, key: str) -> str:
    """`path.key`, or `path["odd key"]` for keys that are not plain names (one line each)."""
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _problems(exc: BaseException, path: str = "$") -> list[str]:
    """Flatten cattrs' exception groups into `key.path: message` lines."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        out: list[str] = []
        with_notes, without = exc.group_exceptions()
        for inner, note in with_notes:
            if isinstance(note, IterableValidationNote):
                sub = f"{path}[{note.index!r}]"
            else:
                sub = f"{path}.{note.name}"
                if isinstance(inner, KeyError):
                    out.append(f"{_format_path(sub)}: required key is missing")
                    continue
            out.extend(_problems(inner, sub))
        for inner in without:
            out.extend(_problems(inner, path))
        return out
    if isinstance(exc, ForbiddenExtraKeysError):
        return [f"{_format_path(_child_path(path, key))}: unknown key" for key in sorted(exc.extra_fields)]
    if isinstance(exc, ValueError | TypeError):
        msg = str(exc)
        if isinstance(exc, TypeError) or "expected" not in msg:
            msg = f"invalid value ({msg})"
        return [f"{_format_path(path)}: {msg}"]
    if isinstance(exc, AttributeError | KeyError):
        return [f"{_format_path(path)}: expected an object"]
    return [f"{_format_path(path)}: {exc}"]


def _semantic_problems(cfg: BotConfig) -> list[str]:
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, market in enumerate(cfg.markets):
        if market.name in seen:
            out.append(f"markets[{i}].name: duplicate market {market.name!r} (also markets[{seen[market.name]}])")
        seen[market.name] = i
    if not cfg.enabled_markets:
        out.append("markets: expected at least one enabled market")
    if cfg.dead_mans_switch_sec < 3:
        out.append(f"dead_mans_switch_sec: expected an integer ≥ 3, got {cfg.dead_mans_switch_sec}")
    if not cfg.external_id_prefix.isascii() or not cfg.external_id_prefix.isalnum():
        out.append(f"external_id_prefix: expected ASCII letters and digits only, got {_show(cfg.external_id_prefix)}")
    url = cfg.alerts.webhook_url
    if url is not None and not url.startswith(("https://", "http://")):
        out.append("alerts.webhook_url: expected an http:// or https:// URL")  # never echo it: a token
    return out


def parse_config(data: Any) -> BotConfig:
    """Structure already-decoded JSON; raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"(top level): expected an object, got {_show(data)}"])
    try:
        cfg = converter.structure(data, BotConfig)
    except (ClassValidationError, IterableValidationError, ValueError, TypeError) as exc:
        raise ConfigError(_problems(exc) or [str(exc)]) from None
    problems = _semantic_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(path: str | Path) -> BotConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"]) from None
    return parse_config(data)


def dump_config(cfg: BotConfig) -> dict[str, Any]:
    conv = cattrs.Converter()
    conv.register_unstructure_hook(Decimal, str)
    return cast(dict[str, Any], conv.unstructure(cfg))
