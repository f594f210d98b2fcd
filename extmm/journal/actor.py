"""The journal's sink and actor: trading code calls `Journal.record(row)`, which never
blocks and never raises; the actor commits what arrived in batches on a worker thread.

Nothing on the quote→order path waits for the disk. Every row that cannot be kept is
counted in `dropped`: the bounded inbox was full, or the bounded buffer of rows waiting
for a failing disk (full, read-only, locked) overflowed. While writes fail the journal is
*degraded*: the condition is logged at ERROR once per change, shown by `statistics()`
(metrics, panel) and retried with a capped backoff; trading goes on.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import trio
from loguru import logger

from extmm.journal.rows import JournalRow, SessionEnd

INBOX_ROWS = 4096  # what may queue between two commits
PENDING_ROWS = 50_000  # what may wait for a failing disk before the oldest are dropped


@attrs.frozen(kw_only=True)
class JournalStats:
    enabled: bool
    written: int  # rows committed
    dropped: int  # rows lost, each one counted
    pending: int  # rows waiting for the next commit (or for the disk to recover)
    commits: int
    write_errors: int
    degraded: str | None  # why writes fail now; None when healthy


class PartialWrite(sqlite3.OperationalError):
    """The disk failed after the first `done` rows of a batch were handled (committed or refused)."""

    def __init__(self, message: str, *, done: int, refused: int) -> None:
        super().__init__(message)
        self.done = done
        self.refused = refused


class JournalWriter:
    """Writes batches in one transaction each. Runs on a worker thread, one call at a time."""

    def __init__(self, conn: sqlite3.Connection, session_id: int) -> None:
        self.conn = conn
        self.session_id = session_id
        # One order across fills, funding and marks (what replaying a ledger needs).
        self.seq = max(
            conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {table}").fetchone()[0]
            for table in ("fills", "funding", "marks")
        )

    def write(self, rows: Sequence[JournalRow]) -> int:
        """Commit `rows`; returns how many were refused one by one as malformed (and skipped).

        Raises sqlite3.OperationalError (disk full, read-only, locked...) with nothing
        committed — or `PartialWrite` saying how many leading rows were — so the caller
        keeps the rest and retries.
        """
        try:
            self._write(rows)
            return 0
        except sqlite3.OperationalError:
            raise
        except Exception:  # noqa: BLE001 - a malformed row, whatever the error: find and skip it
            # One bad row must not block the others forever: write them one at a time.
            refused = 0
            for done, row in enumerate(rows):
                try:
                    self._write([row])
                except sqlite3.OperationalError as exc:
                    raise PartialWrite(str(exc), done=done, refused=refused) from exc
                except Exception:  # noqa: BLE001
                    refused += 1
            return refused

    def _write(self, rows: Sequence[JournalRow]) -> None:
        conn = self.conn
        seq = self.seq
        conn.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                seq += 1
                sql, params = row.statement(self.session_id, seq)
                conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.seq = seq

    def close(self) -> None:
        self.conn.close()


class Journal:
    """The sink handed to actors (`record`) and the actor that writes (`run`).

    `Journal.disabled()` accepts and discards everything, so callers never test for None.
    `clock` gives the rows' timestamps in epoch seconds (wall clock live, virtual in a
    backtest); it is read when a row is made.
    """

    def __init__(
        self,
        writer: JournalWriter | None,
        *,
        clock: Callable[[], float],
        inbox_rows: int = INBOX_ROWS,
        pending_rows: int = PENDING_ROWS,
        commit_every_s: float = 0.25,
        retry_max_s: float = 30.0,
        on_thread: bool = True,
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.pending_rows = pending_rows
        self.commit_every_s = commit_every_s
        self.retry_max_s = retry_max_s
        self.on_thread = on_thread  # False: write inline (deterministic backtests under MockClock)
        self._send, self._recv = trio.open_memory_channel[JournalRow](inbox_rows if writer is not None else 0)
        self._pending: deque[JournalRow] = deque()
        self._done = trio.Event()
        self._closed = False
        self.written = self.dropped = self.commits = self.write_errors = 0
        self.degraded: str | None = None
        # What the lifetime PnL of this account was before this session (net, per market).
        self.lifetime_base: dict[str, Decimal] = {}
        self.path: Path | None = None
        self.lock: Any = None  # the JournalLock held while this process writes the file
        self.meta: Any = None  # the session's SessionMeta

    @classmethod
    def disabled(cls) -> Journal:
        journal = cls(None, clock=lambda: 0.0)
        journal._done.set()
        return journal

    def lifetime_net(self, session_net: Decimal = Decimal(0)) -> Decimal | None:
        """Net PnL over every earlier session of this network and account, plus `session_net`;
        None without a journal (unknown, not zero)."""
        if not self.enabled:
            return None
        return sum(self.lifetime_base.values(), Decimal(0)) + session_net

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    # -- the sink ---------------------------------------------------------------------------
    def record(self, row: JournalRow) -> None:
        """Queue a row; never blocks, never raises. A full inbox drops the row (counted)."""
        if self.writer is None:
            return
        try:
            self._send.send_nowait(row)
        except trio.WouldBlock:
            self._drop(1, "the journal inbox is full")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._drop(1, "the journal is closed")

    def _drop(self, count: int, why: str) -> None:
        first = self.dropped == 0
        self.dropped += count
        if first or self.dropped % 1000 < count:
            logger.error("journal: {} row(s) dropped ({}); {} dropped so far", count, why, self.dropped)

    def statistics(self) -> JournalStats:
        return JournalStats(
            enabled=self.enabled,
            written=self.written,
            dropped=self.dropped,
            pending=len(self._pending) + self._send.statistics().current_buffer_used,
            commits=self.commits,
            write_errors=self.write_errors,
            degraded=self.degraded,
        )

    # -- the actor --------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until `close()`; on cancellation, one last shielded, bounded flush."""
        if self.writer is None:
            task_status.started()
            return
        self._done = trio.Event()  # a fresh one per run: the root's supervisor may restart it
        task_status.started()
        delay = 0.0
        try:
            while True:
                if not self._pending:
                    try:
                        self._pending.append(await self._recv.receive())
                    except trio.EndOfChannel:
                        break
                if self._take_queued():
                    break  # closed: the final flush below writes (or counts) what is left
                ok = await self._flush()
                if ok:
                    delay = self.commit_every_s
                else:
                    delay = min(max(delay * 2, 1.0), self.retry_max_s)
                await trio.sleep(delay)  # rows keep queueing meanwhile: the next batch is bigger
        except trio.Cancelled:
            with trio.CancelScope(shield=True), trio.move_on_after(5.0):
                await self._final_flush()
            raise
        else:
            await self._final_flush()
        finally:
            lost = len(self._pending)
            if lost:
                self._pending.clear()
                self._drop(lost, "the journal stopped before the disk took them")
            self._done.set()

    def _take_queued(self) -> bool:
        """Move what queued into the pending buffer; True once the inbox is closed."""
        while True:
            try:
                row = self._recv.receive_nowait()
            except trio.WouldBlock:
                return False
            except trio.EndOfChannel:
                return True
            self._pending.append(row)
            if len(self._pending) > self.pending_rows:
                self._pending.popleft()
                self._drop(1, "the buffer of rows waiting for the disk is full")

    async def _flush(self) -> bool:
        if not self._pending:
            return True
        batch = list(self._pending)
        try:
            writer = self.writer
            assert writer is not None  # run() flushes only with a writer
            if self.on_thread:
                refused = await trio.to_thread.run_sync(writer.write, batch)
            else:
                refused = writer.write(batch)
        except Exception as exc:  # noqa: BLE001 - the disk, or a bug: trading must go on either way
            if isinstance(exc, PartialWrite):
                for _ in range(exc.done):
                    self._pending.popleft()
                self.written += exc.done - exc.refused
                if exc.refused:
                    self._drop(exc.refused, "malformed rows refused by SQLite")
            self.write_errors += 1
            reason = _describe(exc) if isinstance(exc, sqlite3.Error | OSError) else (
                f"journal writer failed: {type(exc).__name__}: {exc}")
            if self.degraded != reason:
                logger.error("journal degraded: {}; trading goes on, {} rows wait (at most {}), "
                             "drops are counted", reason, len(self._pending), self.pending_rows)
            self.degraded = reason
            return False
        for _ in range(len(batch)):
            self._pending.popleft()
        self.commits += 1
        self.written += len(batch) - refused
        if refused:
            self._drop(refused, "malformed rows refused by SQLite")
        if self.degraded is not None:
            logger.warning("journal recovered ({}): {} rows written", self.degraded, len(batch))
            self.degraded = None
        return True

    async def _final_flush(self) -> None:
        self._take_queued()
        for attempt in range(3):
            if await self._flush():
                return
            await trio.sleep(0.2 * (attempt + 1))

    async def close(self, summary: dict[str, object] | None = None, *, timeout_s: float = 10.0) -> None:
        """Record the session's end, let the actor write what is queued, and wait for it."""
        if self.writer is None or self._closed:
            return
        self._closed = True
        self.record(SessionEnd(at=self.clock(), summary=summary))
        await self._send.aclose()
        with trio.CancelScope(shield=True), trio.move_on_after(timeout_s):
            await self._done.wait()
        self.release()

    def release(self) -> None:
        """Close the file and drop the lock (after the actor is done)."""
        if self.writer is not None and self._done.is_set():
            self.writer.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "disk is full" in text or "disk I/O" in text:
        return f"disk full ({text})"
    if "readonly" in text or "read-only" in text:
        return f"journal file is read-only ({text})"
    if "locked" in text:
        return f"journal file is locked ({text})"
    return text
