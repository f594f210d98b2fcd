"""The L2 book: snapshot/delta rules against a plain Decimal rebuild, real venue frames,
sequence gaps and recovery, malformed frames, and the reads the Quoter relies on."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import extmm.domain.book as book_module
from extmm.domain.book import Book, BookState, GapReason, MalformedBookFrame
from extmm.domain.units import MarketSpec, OffGridError
from extmm.markets import bundled_spec
from tests.apifixtures import FIXTURES

BTC = bundled_spec("BTC-USD")  # tick 1, lot 0.00001
ETH = bundled_spec("ETH-USD")  # tick 0.1, lot 0.001
NVDA = MarketSpec(
    name="NVDA_24_5-USD", tick_size=Decimal("0.01"), lot_size=Decimal("0.01"), min_order_size=Decimal("0.1")
)




def fixture(name: str) -> dict[str, Any]:
    assert FIXTURES is not None
    return json.loads((FIXTURES / name).read_text())


def level(p: str, q: str, c: str | None = None) -> dict[str, str]:
    return {"p": p, "q": q} if c is None else {"p": p, "q": q, "c": c}


def snapshot(
    bids: list[dict[str, str]], asks: list[dict[str, str]], market: str = "BTC-USD"
) -> dict[str, Any]:
    return {"t": "SNAPSHOT", "m": market, "b": bids, "a": asks, "d": "f"}


def delta(bids: list[dict[str, str]], asks: list[dict[str, str]], market: str = "BTC-USD") -> dict[str, Any]:
    return {"t": "DELTA", "m": market, "b": bids, "a": asks, "d": "f"}


def as_decimal(spec: MarketSpec, side: dict[int, int]) -> dict[Decimal, Decimal]:
    return {spec.ticks_to_price(t): spec.lots_to_qty(lots) for t, lots in side.items()}


# -- reference rebuild ------------------------------------------------------------------


class ReferenceBook:
    """The SPEC §5.3 rule spelled out with Decimal keys and values, no caching or tricks."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}

    def apply(self, data: dict[str, Any]) -> None:
        if data["t"] == "SNAPSHOT":
            self.bids, self.asks = {}, {}
            for side, levels in ((self.bids, data["b"]), (self.asks, data["a"])):
                for lvl in levels:
                    size = Decimal(lvl["q"])
                    if size > 0:
                        side[Decimal(lvl["p"])] = size
                    else:
                        side.pop(Decimal(lvl["p"]), None)
            return
        for side, levels in ((self.bids, data["b"]), (self.asks, data["a"])):
            for lvl in levels:
                price = Decimal(lvl["p"])
                size = Decimal(lvl["c"]) if "c" in lvl else side.get(price, Decimal(0)) + Decimal(lvl["q"])
                if size > 0:
                    side[price] = size
                else:
                    side.pop(price, None)

    def best_bid(self) -> Decimal | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> Decimal | None:
        return min(self.asks) if self.asks else None


# -- Hypothesis: random streams vs the reference ------------------------------------------


def _price_text(spec: MarketSpec, ticks: int, style: int) -> str:
    text = str(spec.ticks_to_price(ticks))
    if style == 1:
        return text + (".000000" if "." not in text else "000")  # "84050.000000"
    if style == 2:
        return text + (".0" if "." not in text else "0")  # "84052.0"
    return text


def _size_text(spec: MarketSpec, lots: int, style: int) -> str:
    text = str(spec.lots_to_qty(lots))
    if style == 1 and lots == 0:
        return "0"
    if style == 2:
        return text + "00"
    return text


@st.composite
def frames(draw: st.DrawFn, spec: MarketSpec) -> list[dict[str, Any]]:
    ticks = st.integers(1000, 1030)  # narrow, so levels collide often
    styles = st.sampled_from([0, 0, 0, 1, 2])

    def snapshot_side() -> list[dict[str, str]]:
        n = draw(st.integers(0, 12))
        return [
            level(
                _price_text(spec, draw(ticks), draw(styles)),
                _size_text(spec, draw(st.integers(0, 5000)), draw(styles)),
            )
            for _ in range(n)
        ]

    def delta_side() -> list[dict[str, str]]:
        out = []
        for _ in range(draw(st.integers(0, 5))):
            p = _price_text(spec, draw(ticks), draw(styles))
            if draw(st.booleans()):  # absolute c (0 removes), q ignored
                out.append(
                    level(
                        p,
                        _size_text(spec, draw(st.integers(-500, 500)), 0),
                        _size_text(
                            spec, draw(st.sampled_from([0, draw(st.integers(1, 5000))])), draw(styles)
                        ),
                    )
                )
            else:  # q only: signed change
                out.append(level(p, _size_text(spec, draw(st.integers(-3000, 3000)), draw(styles))))
        return out

    stream = [snapshot(snapshot_side(), snapshot_side(), spec.name)]
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["DELTA"] * 6 + ["EMPTY", "SNAPSHOT"]))
        if kind == "SNAPSHOT":
            stream.append(snapshot(snapshot_side(), snapshot_side(), spec.name))
        elif kind == "EMPTY":
            stream.append(delta([], [], spec.name))
        else:
            stream.append(delta(delta_side(), delta_side(), spec.name))
    return stream


@pytest.mark.parametrize("spec", [BTC, ETH], ids=lambda s: s.name)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_streams_match_the_reference_rebuild(spec: MarketSpec, data: st.DataObject) -> None:
    stream = data.draw(frames(spec))
    book, ref = Book(spec), ReferenceBook()
    for seq, frame in enumerate(stream, start=1):
        assert book.apply(frame, seq) is None
        ref.apply(frame)
        bids, asks = book.levels()
        assert as_decimal(spec, bids) == ref.bids
        assert as_decimal(spec, asks) == ref.asks
        bid, ask = book.best_bid(), book.best_ask()
        assert (spec.ticks_to_price(bid[0]) if bid else None) == ref.best_bid()
        assert (spec.ticks_to_price(ask[0]) if ask else None) == ref.best_ask()
        if bid:
            assert spec.lots_to_qty(bid[1]) == ref.bids[ref.best_bid()]
        if ask:
            assert spec.lots_to_qty(ask[1]) == ref.asks[ref.best_ask()]
        # The ordered depth agrees with the levels.
        depth_bids, depth_asks = book.depth(1000)
        assert depth_bids == sorted(bids.items(), reverse=True)
        assert depth_asks == sorted(asks.items())
        assert book.valid and book.last_seq == seq


decimal_texts = st.one_of(
    st.decimals(min_value=-(10**6), max_value=10**6, allow_nan=False, allow_infinity=False, places=8).map(
        str
    ),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(
        ["84050.000000", "84052.0", "0", "-0", "0.00000", ".5", "5.", "1E+3", "8.405E4", "+7", "1e-5"]
    ),
)


@pytest.mark.parametrize("spec", [BTC, ETH], ids=lambda s: s.name)
@given(text=decimal_texts)
def test_string_conversion_is_exact_and_agrees_with_decimal(spec: MarketSpec, text: str) -> None:
    cache = book_module._UnitCache(spec.lot_size, "qty", signed=True)
    try:
        expected: int | None = spec.qty_to_lots(Decimal(text))
    except OffGridError:
        expected = None
    if expected is None:
        with pytest.raises(OffGridError):
            cache[text]
    else:
        assert cache[text] == expected
        assert cache[text] == expected  # and again from the cache


# -- real frames --------------------------------------------------------------------------


def test_mainnet_rpc_snapshot_then_delta_gives_the_documented_top() -> None:
    snap = fixture("rpc_v2_orderbook_snapshot_btc_mainnet.top50.json")
    dlt = fixture("rpc_v2_orderbook_delta_btc_mainnet.json")
    book = Book(BTC)
    # RPC envelope types are accepted as the frame type; seq 0 → 1 on that connection.
    assert book.apply(snap["data"], snap["seq"], snap["type"]) is None
    top = book.top()
    assert (top.best_bid_ticks, top.best_bid_lots) == (84077, 41547)  # 0.41547
    assert (top.best_ask_ticks, top.best_ask_lots) == (84078, 281690)  # 2.81690
    bids, _ = book.levels()
    assert bids[84050] == 81908  # sent as "84050.000000"
    assert bids[84052] == 3512  # sent as "84052.0"

    assert book.apply(dlt["data"], dlt["seq"], dlt["type"]) is None
    bids, asks = book.levels()
    # Every delta level: snapshot q + delta q = delta c (SPEC §5.3 evidence 3).
    assert bids[84074] == 118  # new level, 0.00118
    assert bids[84073] == 175  # 0.00093 + 0.00082
    assert bids[84069] == 502
    assert bids[84067] == 60063
    assert bids[84053] == 299615  # 3.04234 - 0.04619
    assert bids[84050] == 71908  # "84050.000000" and "84050" are one level
    assert bids[84049] == 71923
    assert asks[84078] == 254894  # 2.81690 - 0.26796
    top = book.top()
    # The new bid 84074 sits below the untouched best bid 84077: the touch is unchanged
    # and only the best ask's size moved.
    assert (top.best_bid_ticks, top.best_bid_lots) == (84077, 41547)
    assert (top.best_ask_ticks, top.best_ask_lots) == (84078, 254894)
    assert top.mid == 84077.5 and top.valid and top.seq == 1
    assert top.spread_ticks == 1
    assert len(bids) == 51 and len(asks) == 50  # one new level, no deletes


def test_v1_btc_snapshot_then_delta() -> None:
    snap = fixture("v1_orderbook_snapshot_btc_mainnet.trimmed.json")
    dlt = fixture("v1_orderbook_delta_btc_mainnet.trimmed.json")
    book = Book(BTC)
    assert book.apply(snap["data"], snap["seq"]) is None  # no `d` key: optional
    assert book.best_bid() == (63720, 1479329) and book.best_ask() == (63721, 510000)
    assert book.apply(dlt["data"], dlt["seq"]) is None
    bids, _ = book.levels()
    assert bids == {63720: 1479329, 63717: 85928}  # c wins over q (-0.00005)
    assert book.best_bid() == (63720, 1479329)


def test_v1_delta_with_deletes() -> None:
    dlt = fixture("v1_orderbook_delta_with_deletes_nvda.json")
    book = Book(NVDA)
    seed = snapshot(
        [level("224.28", "0.64"), level("224.23", "1.28"), level("224.20", "3.00")],
        [level("224.36", "0.67"), level("224.47", "22.34")],
        NVDA.name,
    )
    book.apply(seed, dlt["seq"] - 1)
    assert book.apply(dlt["data"], dlt["seq"]) is None
    bids, asks = book.levels()
    assert bids == {22420: 300}
    assert asks == {22447: 1790}
    assert book.best_bid() == (22420, 300) and book.best_ask() == (22447, 1790)


def test_v1_empty_delta_then_periodic_snapshot_continuing_seq() -> None:
    empty = fixture("v1_orderbook_empty_delta_nvda.json")
    periodic = fixture("v1_orderbook_periodic_snapshot_nvda.json")
    book = Book(NVDA)
    book.apply(snapshot([level("224.10", "5")], [level("224.30", "2")], NVDA.name), 173)
    before = book.levels()
    assert book.apply(empty["data"], empty["seq"]) is None  # seq 174: nothing changes
    assert book.levels() == before and book.last_seq == 174
    assert book.apply(periodic["data"], periodic["seq"]) is None  # seq 175 replaces everything
    assert book.levels() == ({22410: 66, 22409: 133}, {22426: 958})
    assert book.last_seq == 175
    # The count continues after the periodic snapshot.
    assert book.apply(delta([level("224.1", "0.01", "0.67")], [], NVDA.name), 176) is None
    assert book.best_bid() == (22410, 67)


def test_v1_depth1_frames_are_snapshots_of_the_touch() -> None:
    frame = fixture("v1_orderbook_depth1_btc.json")
    book = Book(BTC)
    assert book.apply(frame["data"], frame["seq"]) is None
    assert book.best_bid() == (82588, 409776) and book.best_ask() == (82590, 11)
    nxt = snapshot([level("82589", "1")], [level("82591", "2")])
    assert book.apply(nxt, frame["seq"] + 1) is None
    assert book.levels() == ({82589: 100000}, {82591: 200000})


def test_sdk_test_message_without_t_uses_the_envelope_type() -> None:
    msg = fixture("sdk_test_v1_orderbook_snapshot_message.json")
    book = Book(BTC)
    assert book.apply(msg["data"], msg["seq"], msg["type"]) is None
    assert book.levels() == ({43547: 800, 43548: 700}, {43546: 800})


# -- sequence gaps ------------------------------------------------------------------------

SEED = snapshot([level("100", "1"), level("99", "2")], [level("101", "1"), level("102", "3")])


def test_delta_before_any_snapshot_asks_for_one_resync() -> None:
    book = Book(BTC)
    assert book.state is BookState.EMPTY
    gap = book.apply(delta([level("100", "1", "1")], []), 5)
    assert gap is not None and gap.reason is GapReason.NO_SNAPSHOT and gap.needs_resync
    assert gap.got_seq == 5 and book.state is BookState.INVALID
    again = book.apply(delta([], []), 6)
    assert again is not None and again.reason is GapReason.AWAITING_SNAPSHOT and not again.needs_resync
    assert book.best_bid() is None and not book.top().valid


@pytest.mark.parametrize("bad_seq", [12, 10, 9, 1], ids=["skip", "duplicate", "regress", "restart"])
def test_gap_discards_the_book_until_the_next_snapshot(bad_seq: int) -> None:
    book = Book(BTC)
    book.apply(SEED, 10)
    gap = book.apply(delta([level("100", "1", "5")], []), bad_seq)
    assert gap is not None and gap.reason is GapReason.SEQ_GAP and gap.needs_resync
    assert (gap.expected_seq, gap.got_seq) == (11, bad_seq)
    assert not book.valid and book.best_bid() is None and book.best_ask() is None
    assert len(book) == 0
    # Later deltas are dropped without asking again.
    dropped = book.apply(delta([level("100", "1", "5")], []), bad_seq + 1)
    assert dropped is not None and not dropped.needs_resync
    # A snapshot (any seq: a new connection starts again at 1) re-establishes the book.
    assert book.apply(SEED, 1) is None
    assert book.valid and book.best_bid() == (100, 100000) and book.last_seq == 1
    assert book.apply(delta([level("100", "1", "5")], []), 2) is None
    assert book.best_bid() == (100, 500000)


def test_seq_none_skips_the_check() -> None:
    book = Book(BTC)
    book.apply(SEED, None)
    assert book.apply(delta([level("103", "1", "1")], [level("103", "1", "1")]), None) is None
    assert book.apply(delta([], []), 57) is None  # nothing to compare with
    assert book.apply(delta([], []), 59) is not None  # but now there is


def test_invalidate_forgets_the_book() -> None:
    book = Book(BTC)
    book.apply(SEED, 1)
    book.invalidate()
    assert not book.valid and book.best_bid() is None and book.last_seq is None
    gap = book.apply(delta([], []), 2)
    assert gap is not None and gap.reason is GapReason.AWAITING_SNAPSHOT


# -- malformed frames ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        delta([level("100.5", "1", "1")], []),  # off-grid price
        delta([level("100", "1", "0.000001")], []),  # off-grid size
        delta([level("100", "1", "-1")], []),  # negative absolute size
        delta([level("abc", "1", "1")], []),  # not a number
        delta([level("NaN", "1", "1")], []),
        delta([{"p": 100, "q": "1", "c": "1"}], []),  # number, not string
        delta([{"q": "1", "c": "1"}], []),  # no price
        delta([{"p": "100"}], []),  # neither q nor c
        delta([level("100", "1", "1")], [], market="ETH-USD"),  # another market's frame
        {"t": "DELTA", "m": "BTC-USD", "b": []},  # no asks key
        {"t": "BOGUS", "b": [], "a": []},
        snapshot([level("100", "-1")], []),  # negative snapshot size
        snapshot([level("100.3", "1")], []),
    ],
)
def test_malformed_frame_raises_and_discards_the_book(frame: dict[str, Any]) -> None:
    book = Book(BTC)
    book.apply(SEED, 1)
    with pytest.raises(MalformedBookFrame):
        book.apply(frame, 2)
    assert book.state is BookState.INVALID and book.best_bid() is None
    assert book.apply(SEED, 3) is None and book.valid  # a snapshot recovers


def test_null_c_falls_back_to_q() -> None:
    book = Book(BTC)
    book.apply(SEED, 1)
    assert book.apply(delta([{"p": "100", "q": "0.5", "c": None}], []), 2) is None
    assert book.best_bid() == (100, 150000)


def test_q_fallback_deletes_at_zero_or_below() -> None:
    book = Book(BTC)
    book.apply(SEED, 1)
    book.apply(delta([level("100", "-1")], [level("101", "-2")]), 2)  # exactly 0, and below 0
    assert book.best_bid() == (99, 200000) and book.best_ask() == (102, 300000)
    book.apply(delta([level("98", "0.5")], [level("105", "-1")]), 3)  # new level; nothing to cut
    assert book.levels() == ({99: 200000, 98: 50000}, {102: 300000})


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(book_module, "_CACHE_LIMIT", 8)
    book = Book(BTC)
    for i in range(50):
        book.apply(snapshot([level(str(1000 + i), "1")], [level(str(2000 + i), "1.5")]), i + 1)
        assert book.best_bid() == (1000 + i, 100000)
    assert len(book._price) <= 8 and len(book._size) <= 8


# -- reads --------------------------------------------------------------------------------


def test_top_mid_microprice_and_depth() -> None:
    book = Book(ETH)
    book.apply(
        snapshot(
            [level("2001.3", "1"), level("2001.1", "4"), level("2001.2", "2")],
            [level("2001.6", "3"), level("2001.4", "3")],
            "ETH-USD",
        ),
        1,
    )
    top = book.top()
    assert (top.best_bid_ticks, top.best_bid_lots, top.best_ask_ticks, top.best_ask_lots) == (
        20013,
        1000,
        20014,
        3000,
    )
    assert top.mid == pytest.approx(2001.35)
    assert book.mid == pytest.approx(2001.35) and book.mid_ticks2 == 40027
    # Size-weighted: 1 on the bid, 3 on the ask → closer to the bid.
    assert top.microprice == pytest.approx((2001.3 * 3 + 2001.4 * 1) / 4)
    assert book.microprice == pytest.approx(top.microprice)
    assert book.spread_ticks == 1 and top.spread_ticks == 1
    assert book.depth(2) == ([(20013, 1000), (20012, 2000)], [(20014, 3000), (20016, 3000)])
    assert book.depth(0) == ([], [])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        top.mid = 1.0  # type: ignore[misc]


def test_one_sided_book_has_no_mid() -> None:
    book = Book(BTC)
    book.apply(snapshot([level("100", "1")], []), 1)
    top = book.top()
    assert top.best_ask_ticks is None and top.mid is None and top.microprice is None
    assert book.mid is None and book.spread_ticks is None and book.mid_ticks2 is None
    assert top.valid  # valid but one-sided: the Quoter decides what to do with it
