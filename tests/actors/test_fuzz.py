"""Fuzzing with Hypothesis: hostile configs, frames and bodies, and two state machines.

- Random and mutated configs end in exit code 2 with `key.path: problem` lines, or in a
  valid config the bot starts with (checked by starting it in virtual time).
- Random, truncated and mutated WebSocket frames and REST bodies raise only the venue's
  documented errors (or are skipped and counted) on the parse functions, the stream
  parsing path, the REST client and the Book actor's inbox.
- Stateful: one quote side driven by `clamp_intent` and `decide` never holds more than
  the limits allow.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import re
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from trio_websocket import CloseReason, ConnectionClosed

from actors.book import book_actor
from actors.feed import _parse_side_message
from actors.messages import BookFrame, FeedReset, TopOfBook
from extmm.cli import main as cli_main
from extmm.config import ConfigError, RiskConfig, parse_config
from extmm.domain.execution import ActionKind, LiveOrder, SideTarget, decide
from extmm.domain.quoting import QuoteIntent
from extmm.domain.risk import RiskReason, RiskSnapshot, clamp_intent, position_limit_lots
from extmm.markets import bundled_spec
from extmm.ops.telemetry import BookStats, Telemetry
from extmm.sim import wire
from extmm.sim.launch import build_engine
from extmm.venue import parse
from extmm.venue.errors import MalformedResponse, OrderRejected, StreamError, VenueError
from extmm.venue.network import NetworkVenue
from extmm.venue.ratelimit import TokenBucket
from extmm.venue.rest import RetryPolicy
from extmm.venue.signing import Credentials
from extmm.venue.streams import AccountSubscription, Liveness, StreamSubscription
from tests.apifixtures import FIXTURES

BTC = bundled_spec("BTC-USD")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- JSON values --------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "0", "-1", "1e400", "NaN", "BTC-USD", "BUY", "SNAPSHOT", "DELTA", "84000.5"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)


def mutate(value: Any, rnd: random.Random, replacement: Any) -> Any:
    """`value` with one random node replaced by `replacement` (or removed, for a key)."""
    if isinstance(value, dict) and value:
        key = rnd.choice(list(value))
        out = dict(value)
        roll = rnd.random()
        if roll < 0.2:
            del out[key]
        elif roll < 0.55 or not isinstance(value[key], dict | list):
            out[key] = replacement
        else:
            out[key] = mutate(value[key], rnd, replacement)
        return out
    if isinstance(value, list) and value:
        i = rnd.randrange(len(value))
        out_list = list(value)
        if rnd.random() < 0.5 and isinstance(value[i], dict | list):
            out_list[i] = mutate(value[i], rnd, replacement)
        else:
            out_list[i] = replacement
        return out_list
    return replacement


# -- configs --------------------------------------------------------------------------------

BASE_CONFIG = json.loads((Path(__file__).resolve().parents[2] / "config" / "config.json").read_text())
# `markets[1].base_spread: ...`, `(top level): ...`; odd key names quoted: `risk[""]: ...`.
KEY_PATH = re.compile(
    r'^(\(top level\)|[A-Za-z_]\w*(\[\d+\]|\["(?:[^"\\]|\\.)*"\])*'
    r'(\.[A-Za-z_]\w*(\[\d+\]|\["(?:[^"\\]|\\.)*"\])*)*): \S'
)
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)


# Objects with identifier keys: a key with odd characters is a separate, known problem below.
config_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(identifiers, inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def configs(draw: st.DrawFn) -> Any:
    """The example config with a few nodes replaced, removed or added; sometimes anything."""
    base = BASE_CONFIG
    if draw(st.integers(0, 9)) == 0:
        return draw(config_values)
    rnd = random.Random(draw(st.integers(0, 2**32)))
    value: Any = base
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            replacement = draw(config_values)
        else:  # an unknown key somewhere
            replacement = {draw(identifiers): draw(scalars)}
        value = mutate(value, rnd, replacement)
    return value


def check_exit(data: Any) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(data))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(["check", "--config", str(path)])
    return code, out.getvalue(), err.getvalue()


@FUZZ
@given(data=configs())
def test_random_configs_are_refused_with_key_paths_or_accepted(data):
    try:
        cfg = parse_config(data)
    except ConfigError as exc:
        assert exc.problems
        for line in exc.problems:
            assert KEY_PATH.match(line), line
        code, _, err = check_exit(data)
        assert code == 2
        assert [line for line in err.splitlines() if KEY_PATH.match(line)]
    else:
        assert cfg.enabled_markets
        code, out, _ = check_exit(data)
        assert code == 0 and "configuration is valid" in out


def test_unknown_keys_with_odd_characters_keep_one_problem_per_line():
    data = dict(BASE_CONFIG, risk={"max_open_orders": 3, "bad\nkey": 1, "": 2})
    with pytest.raises(ConfigError) as refused:
        parse_config(data)
    for line in refused.value.problems:
        assert "\n" not in line and KEY_PATH.match(line), line


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    markets = draw(st.lists(st.sampled_from(["BTC-USD", "ETH-USD"]), min_size=1, max_size=2, unique=True))
    positive = st.floats(min_value=1e-6, max_value=1e3, allow_nan=False)
    return {
        "quote_loop_ms": draw(st.integers(1, 2000)),
        "replace_coalesce_ms": draw(st.integers(0, 2000)),
        "dead_mans_switch_sec": draw(st.integers(3, 600)),
        "stp": draw(st.sampled_from(["DISABLED", "ACCOUNT", "CLIENT"])),
        "risk": {
            "max_net_position_usd": draw(st.floats(0, 1e6)),
            "max_open_orders": draw(st.integers(1, 50)),
            "min_balance_usd": draw(st.floats(0, 20_000)),
            "stale_book_ms": draw(st.integers(1, 10_000)),
        },
        "markets": [
            {
                "name": name,
                "base_spread": draw(st.floats(0, 0.05)),
                "alpha": draw(st.floats(0, 5)),
                "beta": draw(st.floats(0, 5)),
                "k": draw(st.floats(0, 0.01)),
                "quote_notional_cap_usd": draw(positive),
                "replace_threshold_bps": draw(st.floats(0, 100)),
                "min_order_size": draw(st.floats(0, 1)),
                "post_only": draw(st.booleans()),
                "model": {"type": draw(st.sampled_from(["seed", "avellaneda_stoikov", "glft"])),
                          "gamma": draw(positive), "A": draw(positive), "horizon_s": draw(positive)},
            }
            for name in markets
        ],
    }


def start_bot_briefly(cfg: Any, seed: int) -> Any:
    from extmm.research.chaos.runner import run_scenario_async
    from extmm.research.chaos.scenarios import CALM

    return trio.run(
        lambda: run_scenario_async(CALM, duration_s=5, seed=seed, cfg=cfg, warmup_s=5, settle_after_s=2),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=valid_configs(), seed=st.integers(0, 1000))
def test_valid_configs_start_the_bot_and_stop_it_clean(data, seed):
    cfg = parse_config(data)  # the strategy only draws valid values
    result = start_bot_briefly(cfg, seed)
    assert result.crashes == 0, result.crash_details
    assert result.clean_exit, result.to_json()


# -- venue parsing ------------------------------------------------------------------------


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


def _sim_samples() -> dict[str, Any]:
    """Wire objects as the simulator renders them: an order, a trade, a position, fees."""
    engine = build_engine(markets=["BTC-USD"], seed=1, start_ms=1_790_000_000_000, verify_signatures=False)
    maker, taker = engine.create_account(), engine.create_account()
    now = engine.now_ms
    best_ask = engine.book_snapshot("BTC-USD", depth=1).asks[0].price

    def body(ext: str, side: str, price: Decimal, post_only: bool) -> dict[str, Any]:
        return {"id": ext, "market": "BTC-USD", "type": "LIMIT", "side": side, "qty": "0.001",
                "price": str(price), "reduceOnly": False, "postOnly": post_only, "timeInForce": "GTT",
                "expiryEpochMillis": now + 3_600_000, "fee": "0.001", "nonce": "1",
                "selfTradeProtectionLevel": "ACCOUNT"}

    engine.place_order(maker.id, body("m-1", "SELL", best_ask + 1000, True), now)
    engine.place_order(taker.id, body("t-1", "BUY", best_ask, False), now)
    return {
        "order": wire.order(engine.open_orders(maker.id)[0]),
        "trade": wire.trade(engine.trades(taker.id)[0]),
        "position": wire.position(engine.positions(taker.id)[0]),
        "balance": wire.balance(engine.balance(taker.id)),
        "fee": wire.fee(engine.fees(taker.id)[0]),
    }


SAMPLES = _sim_samples()
PARSERS = {
    "order": parse.parse_order,
    "trade": parse.parse_trade,
    "position": parse.parse_position,
    "balance": parse.parse_balance,
    "fee": parse.parse_fee_rates,
    "market": parse.parse_market,
}
SAMPLES["market"] = json.loads(fixture_text("rest_info_markets_btc_mainnet.json"))["data"][0]
REST_FIXTURES = ["rest_info_markets_btc_mainnet.json", "rest_user_balance_ok.json", "rest_error_1006_internal.json"]
STREAM_FIXTURES = sorted(p.name for p in FIXTURES.glob("v1_*.json")) + ["sdk_test_v1_account_trade_message.json"]


def test_samples_parse_unchanged():
    for kind, parser in PARSERS.items():
        parser(SAMPLES[kind])  # the mutations below start from good input


@FUZZ
@given(kind=st.sampled_from(sorted(PARSERS)), seed=st.integers(0, 2**32), replacement=json_values)
def test_mutated_objects_parse_or_raise_malformed(kind, seed, replacement):
    value = mutate(SAMPLES[kind], random.Random(seed), replacement)
    try:
        PARSERS[kind](value)
    except MalformedResponse:
        pass


@FUZZ
@given(value=json_values, parser=st.sampled_from(sorted(PARSERS)))
def test_random_json_parses_or_raises_malformed(value, parser):
    with contextlib.suppress(MalformedResponse):
        PARSERS[parser](value)


@FUZZ
@given(name=st.sampled_from(REST_FIXTURES + STREAM_FIXTURES), cut=st.floats(0, 1, exclude_max=True))
def test_truncated_bodies_and_frames_raise_malformed(name, cut):
    text = fixture_text(name)
    truncated = text[: int(len(text) * cut)]
    for loader in (parse.loads, parse.loads_stream):
        try:
            value = loader(truncated)
        except MalformedResponse:
            continue
        # A cut may leave valid JSON (a bare number, say): it must still fail softly.
        with contextlib.suppress(MalformedResponse, OrderRejected):
            parse.unwrap_envelope(value)
        with contextlib.suppress(MalformedResponse):
            message = parse.parse_stream_message(value)
            parse.parse_account_update(message)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=64), st.text(max_size=64)))
def test_random_bytes_are_malformed_not_crashes(raw):
    for loader in (parse.loads, parse.loads_stream):
        with contextlib.suppress(MalformedResponse):
            loader(raw)


@FUZZ
@given(envelope=json_values, kind=st.one_of(st.none(), st.sampled_from(["ORDER", "TRADE", "POSITION", "BALANCE",
                                                                         "order", "DEPOSIT"]), st.text(max_size=8)))
def test_stream_envelopes_and_account_payloads(envelope, kind):
    with contextlib.suppress(MalformedResponse):
        parse.parse_stream_message(envelope)
    message = parse.StreamMessage(type=kind, data=envelope, ts=1, seq=1)
    with contextlib.suppress(MalformedResponse):
        parse.parse_account_update(message)


@FUZZ
@given(kind=st.sampled_from(["funding", "mark"]), data=json_values)
def test_funding_and_mark_frames_parse_or_are_skipped(kind, data):
    parsed = _parse_side_message(kind, data, 1)  # None (logged) when malformed, never raises
    if parsed is not None:
        assert isinstance(data, dict)


# -- the stream parsing path ------------------------------------------------------------------


class FakeConnection:
    """Hands out scripted frames, then closes like a server would."""

    def __init__(self, frames: list[str | bytes]) -> None:
        self.frames = list(frames)

    async def get_message(self) -> str | bytes:
        if not self.frames:
            raise ConnectionClosed(CloseReason(1000, "bye"))
        return self.frames.pop(0)


def good_frames() -> list[str]:
    frames = []
    for seq, name in enumerate(["v1_account_order_snapshot_empty.json", "v1_account_balance_snapshot.json",
                                "v1_account_position_snapshot_empty.json",
                                "sdk_test_v1_account_trade_message.json"], start=1):
        obj = json.loads(fixture_text(name))
        obj["seq"] = seq
        frames.append(json.dumps(obj))
    return frames


frames_strategy = st.lists(
    st.one_of(
        st.sampled_from(good_frames()),
        st.text(max_size=40),
        st.binary(max_size=40),
        json_values.map(json.dumps),
        st.tuples(st.sampled_from(good_frames()), st.floats(0, 1)).map(lambda t: t[0][: int(len(t[0]) * t[1])]),
    ),
    max_size=12,
)


@FUZZ
@given(frames=frames_strategy, account=st.booleans(), strict=st.booleans())
def test_stream_path_delivers_or_raises_stream_errors(frames, account, strict):
    async def consume() -> tuple[int, int]:
        conn = FakeConnection(frames)
        cls = AccountSubscription if account else StreamSubscription
        sub = cls(conn, name="fuzz", strict_seq=strict, liveness=Liveness(data_stall_s=5.0))  # type: ignore[arg-type]
        delivered = 0
        with contextlib.suppress(StreamError):  # closed at the end, or a seq gap
            while True:
                await sub.receive()
                delivered += 1
        return delivered, sub.statistics().malformed

    delivered, malformed = trio.run(consume)
    assert delivered + malformed <= len(frames)


# -- REST bodies through the client ------------------------------------------------------------

CREDENTIALS = Credentials(
    api_key="fuzz-api-key-0123456789",
    vault=10002,
    stark_private_key="0x7a7ff6fd3cab02ccdcd4a572563f5976f8976899b03a39773795a3c486d4986",
    stark_public_key="0x61c5e7e8339b7d56f197f54ea91b776776690e3232313de0f2ecbd0ef76f466",
)
READS = ["get_markets", "get_balance", "get_positions", "get_open_orders", "get_trades", "get_funding_history",
         "get_order_history"]
bodies = st.one_of(
    st.binary(max_size=80),
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps({"status": "OK", "data": v}).encode()),
    st.sampled_from(REST_FIXTURES).map(lambda n: fixture_text(n).encode()),
    st.tuples(st.sampled_from(REST_FIXTURES), st.floats(0, 1)).map(
        lambda t: fixture_text(t[0]).encode()[: int(len(fixture_text(t[0])) * t[1])]
    ),
)


@FUZZ
@given(body=bodies, status=st.sampled_from([200, 200, 200, 201, 204, 400, 404, 429, 500, 503]),
       read=st.sampled_from(READS))
def test_rest_reads_return_or_raise_venue_errors(body, status, read):
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body)

    async def call() -> None:
        venue = NetworkVenue("https://venue.test/api/v1", "wss://venue.test/stream", CREDENTIALS,
                             transport=httpx.MockTransport(answer), retry=RetryPolicy(attempts=1),
                             limiter=TokenBucket(capacity=1000, refill_per_s=1000.0),
                             rate_limited_pause_s=0.0)
        async with venue:
            with contextlib.suppress(VenueError):
                await getattr(venue, read)()

    trio.run(call)


# -- the Book actor's inbox ---------------------------------------------------------------------


def book_frames() -> st.SearchStrategy[BookFrame]:
    snapshot = json.loads(fixture_text("v1_orderbook_snapshot_btc_mainnet.trimmed.json"))
    delta = json.loads(fixture_text("v1_orderbook_delta_btc_mainnet.trimmed.json"))
    good = st.sampled_from([snapshot, delta])
    data = st.one_of(
        good.map(lambda f: f["data"]),
        st.tuples(good, st.integers(0, 2**32), json_values).map(
            lambda t: mutate(t[0]["data"], random.Random(t[1]), t[2])
        ),
        json_values,
    )
    typed = st.builds(
        BookFrame,
        type=st.one_of(st.sampled_from(["SNAPSHOT", "DELTA", "ORDERBOOKS.DELTA"]), st.text(max_size=6)),
        data=data,
        seq=st.integers(-2, 50),
        exchange_ts_ms=st.just(1),
        received_at=st.just(0.0),
    )
    # Without a type the Book reads it from `data["t"]`; a non-object there, or a `t` that is
    # not a string, is the known bug below.
    untyped_data = st.one_of(
        good.map(lambda f: f["data"]),
        st.tuples(st.dictionaries(st.text(max_size=3), json_values), st.one_of(st.none(), st.text(max_size=9))).map(
            lambda t: {k: v for k, v in t[0].items() if k != "t"} | ({} if t[1] is None else {"t": t[1]})
        ),
    )
    untyped = st.builds(BookFrame, type=st.none(), data=untyped_data, seq=st.integers(-2, 50),
                        exchange_ts_ms=st.just(1), received_at=st.just(0.0))
    return st.one_of(typed, untyped)


async def _run_book(frames: list[Any]) -> list[Any]:
    """Feed `frames` to a Book actor; returns what it published (tops, then telemetry)."""
    inbox_send, inbox = trio.open_memory_channel[Any](len(frames) + 1)
    to_quoter, quoter_out = trio.open_memory_channel[Any](1000)
    to_account, _account_out = trio.open_memory_channel[Any](1000)
    control, _control_out = trio.open_memory_channel[Any](1)
    tele_send, tele_recv = trio.open_memory_channel[Any](1000)
    for frame in frames:
        inbox_send.send_nowait(frame)
    inbox_send.close()  # the actor returns once its inbox is drained and closed
    await book_actor(spec=BTC, inbox=inbox, to_quoter=to_quoter, to_account=to_account,
                     feed_control=control, telemetry=Telemetry(tele_send))
    out = []
    for channel in (quoter_out, tele_recv):
        while True:
            try:
                out.append(channel.receive_nowait())
            except trio.WouldBlock:
                break
    return out


@FUZZ
@given(frames=st.lists(st.one_of(book_frames(), st.builds(FeedReset, reason=st.just("fuzz"))), max_size=15))
def test_book_actor_survives_any_frames(frames):
    out = trio.run(_run_book, frames)
    for top in (t for t in out if isinstance(t, TopOfBook)):
        if top.valid:
            assert top.bid_ticks is not None and top.ask_ticks is not None and top.bid_ticks < top.ask_ticks
    stats = [s for s in out if isinstance(s, BookStats)]
    if stats:  # every frame counted; bad ones as malformed, never more than arrived
        book_frames_in = sum(1 for f in frames if isinstance(f, BookFrame))
        assert stats[-1].frames <= book_frames_in and stats[-1].malformed <= book_frames_in


@pytest.mark.parametrize("data", [None, ["SNAPSHOT"], {"t": ["DELTA"], "m": "BTC-USD", "b": [], "a": []}])
def test_book_actor_survives_a_typeless_frame_with_odd_data(data):
    trio.run(_run_book, [BookFrame(type=None, data=data, seq=1, exchange_ts_ms=1, received_at=0.0)])


# -- both quote sides under Risk and the Executor's decisions: a state machine ----------------

QUOTE_LOTS = 30  # the largest quote the Quoter proposes here (0.0003 BTC)


class QuotingMarket(RuleBasedStateMachine):
    """One market quoted through `clamp_intent` then `decide` per side, against a venue
    modelled as instant, with partial fills, price moves and a book that may go stale.

    Invariants: an order is only placed or replaced with exactly Risk's target, never on
    a stale book; our open orders never exceed `max_open_orders`; and position plus what
    the resting bid could still buy (minus the ask) never exceeds the largest limit Risk
    allowed when it placed them, whatever fills and price moves came in between.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.mid = 80_000.0
        self.book_at = 0.0
        self.position = 0
        self.live: dict[str, LiveOrder | None] = {"bid": None, "ask": None}
        self.limits = RiskConfig()
        self.long_bound = self.short_bound = 0

    def _limit_lots(self) -> int:
        return position_limit_lots(BTC, self.limits.max_net_position_usd, self.mid)

    @initialize(position=st.integers(-150, 150), max_open=st.integers(1, 3), limit_usd=st.sampled_from([0, 50, 100]))
    def start(self, position, max_open, limit_usd):
        self.position = position
        self.limits = RiskConfig(max_net_position_usd=limit_usd, max_open_orders=max_open, min_balance_usd=50,
                                 stale_book_ms=3000)
        # A position already beyond the limit may only shrink.
        self.long_bound = max(position, 0)
        self.short_bound = min(position, 0)

    @rule(dt=st.floats(0.01, 2.5), fresh=st.booleans())
    def time_passes(self, dt, fresh):
        self.now += dt
        if fresh:
            self.book_at = self.now

    @rule(move=st.floats(-0.02, 0.02))
    def price_moves(self, move):
        self.mid *= 1 + move
        self.book_at = self.now

    @rule(side=st.sampled_from(["bid", "ask"]), part=st.floats(0.05, 1.0))
    def fill(self, side, part):
        order = self.live[side]
        if order is None:
            return
        lots = max(1, int(order.lots * part))
        self.position += lots if side == "bid" else -lots
        left = order.lots - lots
        self.live[side] = attrs.evolve(order, lots=left) if left > 0 else None

    @rule(bid_lots=st.integers(0, QUOTE_LOTS), ask_lots=st.integers(0, QUOTE_LOTS), offset=st.integers(1, 200))
    def quote(self, bid_lots, ask_lots, offset):
        mid_ticks = int(self.mid)
        intent = QuoteIntent(market="BTC-USD", bid_ticks=mid_ticks - offset, bid_lots=bid_lots,
                             ask_ticks=mid_ticks + offset, ask_lots=ask_lots, model="seed")
        age_ms = (self.now - self.book_at) * 1000
        decision = clamp_intent(
            intent, spec=BTC, limits=self.limits,
            snapshot=RiskSnapshot(mid=self.mid, position_lots=self.position, balance_usd=10_000,
                                  book_age_ms=age_ms, open_orders=sum(o is not None for o in self.live.values()),
                                  live_bid=self.live["bid"] is not None, live_ask=self.live["ask"] is not None),
        )
        stale = age_ms > self.limits.stale_book_ms
        assert (RiskReason.STALE_BOOK in decision.reasons) == stale
        clamped = decision.intent
        for side, ticks, lots in (("bid", clamped.bid_ticks, clamped.bid_lots),
                                  ("ask", clamped.ask_ticks, clamped.ask_lots)):
            target = SideTarget(ticks=ticks, lots=lots) if lots > 0 else None
            live = self.live[side]
            action = decide(target=target, live=live, now=self.now, replace_threshold_bps=2.0, coalesce_s=0.2)
            match action.kind:
                case ActionKind.PLACE | ActionKind.REPLACE:
                    assert (live is None) == (action.kind is ActionKind.PLACE)
                    assert action.target == target and target is not None and not stale
                    self.live[side] = LiveOrder(external_id=f"{side}-{self.now}", ticks=target.ticks,
                                                lots=target.lots, placed_at=self.now, expires_at=self.now + 3600)
                    limit = self._limit_lots()
                    if side == "bid":
                        self.long_bound = max(self.long_bound, limit)
                    else:
                        self.short_bound = min(self.short_bound, -limit)
                case ActionKind.CANCEL:
                    assert live is not None and target is None
                    self.live[side] = None

    @invariant()
    def open_orders_within_the_limit(self):
        assert sum(o is not None for o in self.live.values()) <= self.limits.max_open_orders

    @invariant()
    def exposure_within_what_risk_allowed(self):
        bid = self.live["bid"].lots if self.live["bid"] else 0
        ask = self.live["ask"].lots if self.live["ask"] else 0
        assert self.position + bid <= self.long_bound
        assert self.position - ask >= self.short_bound


QuotingMarket.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestQuotingMarket = QuotingMarket.TestCase


@pytest.mark.parametrize("age_ms", [3000.5, 10_000, math.inf, math.nan])
def test_a_stale_or_unknown_book_age_denies_both_sides(age_ms):
    limits = RiskConfig(max_net_position_usd=500, max_open_orders=3, min_balance_usd=50, stale_book_ms=3000)
    intent = QuoteIntent(market="BTC-USD", bid_ticks=79_990, bid_lots=10, ask_ticks=80_010, ask_lots=10, model="seed")
    decision = clamp_intent(intent, spec=BTC, limits=limits,
                            snapshot=RiskSnapshot(mid=80_000, position_lots=0, balance_usd=1e4, book_age_ms=age_ms))
    assert (decision.intent.bid_lots, decision.intent.ask_lots) == (0, 0)
