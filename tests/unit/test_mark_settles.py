"""The Account's mid loop skips re-marking a ledger that is already settled at the mid
(actors/account.py): marking twice in a row at one mid must leave a ledger whose next mark
at that mid changes nothing — neither values nor Decimal form (the panel shows them)."""

from __future__ import annotations

import random
from decimal import Decimal

from extmm.domain.pnl import MarketLedger
from extmm.domain.units import Side


def _mid(rng: random.Random) -> Decimal:
    bid = rng.randint(84_000, 84_100)
    return (Decimal(bid) + Decimal(bid + rng.randint(1, 3))) / 2  # as the Account computes it


def test_a_ledger_marked_twice_at_one_mid_is_a_fixed_point_of_marking_there() -> None:
    rng = random.Random(7)
    for _ in range(300):
        ledger = MarketLedger(market="BTC-USD")
        if rng.random() < 0.5:
            ledger = MarketLedger.opening("BTC-USD", position=Decimal(rng.randint(-90, 90)) / 1000, mark=_mid(rng))
        for _ in range(rng.randint(0, 6)):
            mid = _mid(rng)
            if rng.random() < 0.5:
                qty = Decimal(rng.randint(1, 50)) / Decimal(10) ** rng.randint(3, 5)
                ledger = ledger.with_fill(rng.choice([Side.BUY, Side.SELL]), mid + rng.randint(-5, 5), qty,
                                          fee=Decimal("0.0001"), mid=mid)
            else:
                ledger = ledger.with_mark(mid)
        mid = _mid(rng)
        settled = ledger.with_mark(mid).with_mark(mid)
        again = settled.with_mark(mid)
        assert again == settled
        assert repr(again) == repr(settled)  # the Decimal form too (e.g. 1.5 vs 1.500)


def test_marking_keeps_every_other_field_of_the_ledger():
    """`with_mark` lists the ledger's fields by hand (speed): a field added later must be kept too."""
    import attrs



    values = {
        f.name: ("X-USD" if f.name == "market" else 7 if f.name == "fills" else Decimal(i + 1))
        for i, f in enumerate(attrs.fields(MarketLedger))
    }
    ledger = MarketLedger(**values)
    marked = ledger.with_mark(Decimal(100))
    changed = {k for k, v in attrs.asdict(marked).items() if v != values[k]}
    assert changed == {"mark", "inventory"}
    assert marked.inventory == ledger.inventory + ledger.position * (Decimal(100) - ledger.mark)
