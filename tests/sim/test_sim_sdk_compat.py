"""Wire compatibility with the official SDK: its asyncio clients trade against our simulator.

`tests/sdk_compat_driver.py` runs in a subprocess (the SDK's clients are asyncio, ours is
trio) with the venv's Python: REST reads, a signed post-only order, replace, cancel, mass
cancel, the account stream and the order-book stream, all parsed by the SDK's own
pydantic models. Its stream client needs the legacy websockets API (SPEC §10.1); the
driver switches `websockets.connect` to the legacy client that websockets still ships,
so no second environment is needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import trio

from extmm.sim.server import serve_simulator

DRIVER = Path(__file__).resolve().parents[1] / "sdk_compat_driver.py"


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def line(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise EOFError(f"driver closed stdout; partial output {self._buffer[-500:]!r}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


async def test_official_sdk_trades_against_the_simulator(nursery):
    # Wall-clock start: the SDK stamps orders with utc_now() + 1 h itself.
    sim = await nursery.start(partial(serve_simulator, seed=21, heartbeat_s=0.5))
    acct = sim.account
    command = [
        sys.executable,
        str(DRIVER),
        "--rest",
        sim.rest_url,
        "--stream",
        sim.stream_url,
        "--api-key",
        acct.api_key,
        "--vault",
        str(acct.vault),
        "--private-key",
        acct.stark_private_key,
        "--public-key",
        acct.stark_public_key,
    ]
    steps: dict[str, dict[str, Any]] = {}
    stderr_chunks: list[bytes] = []
    with trio.fail_after(90):
        async with trio.open_nursery() as driver_nursery:
            process = await driver_nursery.start(
                partial(
                    trio.run_process,
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    check=False,
                )
            )
            assert process.stdout is not None and process.stdin is not None and process.stderr is not None

            async def drain_stderr() -> None:
                async for chunk in process.stderr:
                    stderr_chunks.append(chunk)

            driver_nursery.start_soon(drain_stderr)
            reader = LineReader(process.stdout)
            try:
                while "done" not in steps:
                    step = json.loads(await reader.line())
                    steps[step["step"]] = step
                    if step["step"] == "book_ready":
                        sim.runner.frozen = True
                        await process.stdin.send_all(b"go\n")
            except EOFError as exc:
                await process.wait()
                raise AssertionError(f"{exc}\nstderr:\n{b''.join(stderr_chunks).decode()[-3000:]}") from None
            assert await process.wait() == 0

    assert steps["markets"]["names"] == ["BTC-USD", "ETH-USD"]
    assert Decimal(steps["balance"]["balance"]) == Decimal(10_000)
    assert steps["rest_book"]["bids"] > 100 and steps["rest_book"]["asks"] > 100
    assert (Decimal(steps["fees"]["maker"]), Decimal(steps["fees"]["taker"])) == (
        Decimal(0),
        Decimal("0.00025"),
    )
    assert steps["account"]["vault"] == acct.vault
    assert int(steps["account"]["key"], 16) == int(acct.stark_public_key, 16)

    assert steps["account_snapshots"] == {
        "step": "account_snapshots",
        "types": ["ORDER", "BALANCE", "POSITION"],
        "seqs": [1, 2, 3],
    }
    placed_id = steps["placed"]["id"]
    assert steps["placed"]["open"] == [[placed_id, "sdk-1", "NEW"]]
    assert steps["stream_new"]["seen"] == {"sdk-1": "NEW"}
    assert steps["replaced"]["seen"] == {"sdk-1": "CANCELLED", "sdk-2": "NEW"}
    assert steps["replaced"]["open"] == ["sdk-2"]
    assert steps["cancelled"]["seen"] == {"sdk-2": "CANCELLED"}
    assert steps["mass_cancelled"]["open"] == []
    assert set(steps["mass_cancelled"]["seen"].values()) == {"CANCELLED"}

    book = steps["book"]
    assert book["kinds"][0] == "SNAPSHOT" and "DELTA" in book["kinds"]
    assert book["seqs"] == list(range(1, len(book["seqs"]) + 1))
    snapshot = sim.engine.book_snapshot("BTC-USD")
    assert [(Decimal(p), Decimal(q)) for p, q in book["bids"]] == [(lv.price, lv.qty) for lv in snapshot.bids]
    assert [(Decimal(p), Decimal(q)) for p, q in book["asks"]] == [(lv.price, lv.qty) for lv in snapshot.asks]
