"""The replay's per-frame shortcuts give the same answers as the long way round.

- `_Units` reads plain decimals on a 10**-n grid without Decimal: same units, same errors;
- `Timers.run` skips its look-up when nothing is due, yet a switch armed later still fires;
- `ReplayEngine.on_book` skips the queue update for a DELTA away from our levels, not one at them;
- `RecordingReader` skips blank lines silently and still counts undecodable ones;
- the driver's conflation adds size changes as before ("c": on the later level, else the earlier).
"""

from __future__ import annotations

import gzip
from decimal import Decimal

import pytest
import trio
from loguru import logger

from extmm.domain.l2 import BadFrame, _Units
from extmm.markets import bundled_markets
from extmm.sim.clock import VirtualClock
from extmm.sim.engine import EngineConfig, SimEngine
from extmm.sim.recording import RecordingReader
from extmm.sim.replay_driver import ReplayDriver
from extmm.sim.replay_engine import ReplayEngine
from extmm.sim.runner import SimRunner

START_MS = 1_790_000_000_000


@pytest.fixture(autouse=True)
def quiet_logs():
    logger.disable("extmm")
    yield
    logger.enable("extmm")


def _slow_units(text, step: Decimal):
    try:
        units = Decimal(text) / step
    except Exception:
        return "bad"
    return int(units) if units == units.to_integral_value() else "bad"


@pytest.mark.parametrize("step", ["1", "0.00001", "0.1", "0.000010", "0.5", "10", "0.00002"])
def test_units_read_without_decimal_match_the_decimal_division(step):
    texts = [
        "0", "-0", "-0.00000", "84058", "84058.0", "84058.5", "0.00470", "-0.04510", "1.5", "0.000001",
        "00012", "1e3", "abc", " 5", "5_0", "-12.30", "", "-", ".5", "5.", "123456789012345678901234",
    ]
    for text in texts:
        units = _Units(Decimal(step), "x")
        try:
            got = units[text]
        except BadFrame:
            got = "bad"
        assert got == _slow_units(text, Decimal(step)), (step, text)
        if got != "bad":
            assert units[text] == got  # cached


def _engine() -> tuple[SimEngine, int]:
    engine = SimEngine(EngineConfig(seed=1, verify_signatures=False, strict_nonce=False, synthetic_flow=False),
                       start_ms=START_MS, markets=[bundled_markets()["BTC-USD"]])
    return engine, engine.create_account(balance=Decimal(10_000)).id


def test_a_switch_armed_after_a_quiet_look_up_still_fires_on_time():
    engine, acc = _engine()
    engine.advance(START_MS + 1_000)  # nothing armed: remembered as "no switch"
    assert engine.dms_deadline(acc) is None
    engine.set_dms(acc, 5, START_MS + 2_000)
    assert engine.dms_deadline(acc) == START_MS + 7_000
    engine.advance(START_MS + 6_999)
    assert engine.dms_deadline(acc) == START_MS + 7_000
    engine.advance(START_MS + 7_000)
    assert engine.dms_deadline(acc) is None  # fired at its deadline
    # Re-armed later than it was, then fired by hand (fault drill): both seen.
    engine.set_dms(acc, 60, START_MS + 8_000)
    engine.advance(START_MS + 9_000)
    assert engine.dms_deadline(acc) == START_MS + 68_000
    assert engine.fire_dms(acc, START_MS + 9_500)
    assert engine.dms_deadline(acc) is None


def _replay_engine() -> tuple[ReplayEngine, int]:
    engine = ReplayEngine(EngineConfig(verify_signatures=False, strict_nonce=False),
                          start_ms=START_MS, markets=[bundled_markets()["BTC-USD"]])
    acc = engine.create_account(balance=Decimal(100_000)).id
    book = {"m": "BTC-USD", "b": [{"p": "84000", "q": "0.00100"}, {"p": "83999", "q": "0.00200"}],
            "a": [{"p": "84002", "q": "0.00100"}, {"p": "84003", "q": "0.00200"}]}
    engine.on_book("BTC-USD", "SNAPSHOT", book, START_MS)
    return engine, acc


def _bid(oid: str, price: str) -> dict:
    return {
        "id": oid, "market": "BTC-USD", "type": "LIMIT", "side": "BUY", "qty": "0.00050", "price": price,
        "reduceOnly": False, "postOnly": True, "timeInForce": "GTT", "expiryEpochMillis": START_MS + 3_600_000,
        "fee": "0.001", "nonce": "1", "selfTradeProtectionLevel": "ACCOUNT",
        "settlement": {"signature": {"r": "0x1", "s": "0x1"}, "starkKey": "0x1", "collateralPosition": "1"},
    }


def _delta(engine: ReplayEngine, side: str, price: str, size: str, at: int) -> None:
    data = {"m": "BTC-USD", "b": [], "a": []}
    data[side] = [{"p": price, "q": "0", "c": size}]
    assert engine.on_book("BTC-USD", "DELTA", data, at)


def test_a_delta_shrinks_the_queue_only_at_our_levels():
    engine, acc = _replay_engine()
    engine.place_order(acc, _bid("a", "84000"), START_MS + 1)
    engine.place_order(acc, _bid("b", "83999"), START_MS + 2)
    ahead = lambda: sorted(s.ahead for s in engine.queues["BTC-USD"].values())  # noqa: E731
    assert ahead() == [100, 200]
    _delta(engine, "a", "84002", "0.00001", START_MS + 3)  # asks: not our side
    _delta(engine, "b", "83998", "0.00001", START_MS + 4)  # a bid level without ours
    assert ahead() == [100, 200]
    _delta(engine, "b", "83999", "0.00030", START_MS + 5)  # ours: cancels ahead of us
    assert ahead() == [30, 100]
    _delta(engine, "b", "83999", "0.00500", START_MS + 6)  # grows behind us: unchanged
    assert ahead() == [30, 100]
    # A later order at a new level is watched too.
    engine.place_order(acc, _bid("c", "83998"), START_MS + 7)
    assert ahead() == [1, 30, 100]
    _delta(engine, "b", "83998", "0", START_MS + 8)
    assert ahead() == [0, 30, 100]
    # A snapshot may change any level: all are checked.
    engine.on_book("BTC-USD", "SNAPSHOT", {"m": "BTC-USD", "b": [{"p": "84000", "q": "0.00010"}],
                                           "a": [{"p": "84002", "q": "0.00100"}]}, START_MS + 9)
    assert ahead() == [0, 0, 10]


def test_the_reader_skips_blank_lines_and_counts_bad_ones(tmp_path):
    path = tmp_path / "r.ndjson.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b'{"k":"header","v":1,"markets":{}}\n\n   \n\r\n{"t":1,"k":"mark","m":"X","f":{}}\n'
                 b"not json\n[1]\n \t \n" + b'{"t":2,"k":"mark","m":"X","f":{}}')
    reader = RecordingReader([path])
    records = list(reader)
    assert [r.get("t") for r in records] == [None, 1, 2]
    assert (reader.stats.lines, reader.stats.bad_lines) == (3, 2)


def _merge(*frames: list[dict]) -> list[dict]:
    """The levels the driver delivers for these bid DELTAs merged in one window."""
    out: list[dict] = []

    async def main() -> None:
        engine = ReplayEngine(EngineConfig(verify_signatures=False, strict_nonce=False),
                              start_ms=START_MS, markets=[bundled_markets()["BTC-USD"]])
        driver = ReplayDriver(engine, SimRunner(engine), RecordingReader.__new__(RecordingReader),
                              markets=["BTC-USD"], start_ms=START_MS, book_interval_ms=100)
        for levels in frames:
            driver._conflate("BTC-USD", {"ts": START_MS}, {"b": levels, "a": []}, START_MS + 10)
        window = driver._pending["BTC-USD"]
        out.extend(window.b.values())

    trio.run(main, clock=VirtualClock())
    return out


def test_conflation_adds_size_changes_as_it_did():
    a = {"p": "100", "q": "0.00470", "c": "0.00470"}
    b = {"q": "-0.04510", "p": "100", "c": "0.00000"}
    assert _merge([a], [b]) == [{"q": "-0.04040", "p": "100", "c": "0.00000"}]
    # Without "c" the earlier level keeps its keys, with the summed change.
    assert _merge([a], [{"p": "100", "q": "0.1"}]) == [{"p": "100", "q": "0.10470", "c": "0.00470"}]
    # A level without "q" replaces; one after it (no "q" before) replaces too.
    assert _merge([a], [{"p": "100", "c": "1"}], [b]) == [b]
    # Changes that cancel give a plain zero; recorded levels are left as they were.
    assert _merge([{"p": "1", "q": "-0.5"}], [{"p": "1", "q": "0.5"}]) == [{"p": "1", "q": "0.0"}]
    assert a == {"p": "100", "q": "0.00470", "c": "0.00470"}
    # A size that is not a number fails the frame (counted bad by the caller).
    with pytest.raises(ArithmeticError):
        _merge([a], [{"p": "100", "q": "x", "c": "1"}])
