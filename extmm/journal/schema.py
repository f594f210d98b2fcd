"""The journal file: location, versioned schema with forward migrations, and the checks
that refuse an unusable file with one clear line.

`PRAGMA user_version` holds the schema version. A file written by a newer extmm is refused
(never silently downgraded); an older one is migrated forward in one transaction. One
process at a time may write a journal: an advisory lock on `<journal>.lock` (released by the
kernel when the process dies, `kill -9` included) refuses a second instance.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1

# Migration n takes a journal from version n - 1 to version n. Append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,               -- live | paper | backtest
        network TEXT NOT NULL,
        account TEXT NOT NULL,            -- e.g. "vault 12345": continuity key with network
        version TEXT NOT NULL,
        config_digest TEXT NOT NULL,
        markets TEXT NOT NULL,            -- comma separated
        started_at REAL NOT NULL,         -- epoch seconds (virtual for backtests)
        stopped_at REAL,
        summary TEXT                      -- the exit summary (JSON), NULL if it never stopped cleanly
    );
    CREATE TABLE orders (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        at REAL NOT NULL,
        market TEXT NOT NULL,
        external_id TEXT NOT NULL,
        venue_id INTEGER,
        side TEXT NOT NULL,
        price TEXT NOT NULL,
        qty TEXT NOT NULL,
        filled_qty TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT
    );
    CREATE INDEX orders_by_time ON orders(at);
    CREATE INDEX orders_by_ext ON orders(external_id);
    CREATE TABLE fills (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        seq INTEGER NOT NULL,             -- journal order across fills, funding and marks
        at REAL NOT NULL,
        market TEXT NOT NULL,
        trade_id INTEGER NOT NULL,
        order_id INTEGER,
        external_id TEXT,
        side TEXT NOT NULL,
        price TEXT NOT NULL,
        qty TEXT NOT NULL,
        fee TEXT NOT NULL,
        is_taker INTEGER NOT NULL,
        mid TEXT,                         -- the mid the ledger used at the fill; NULL: unknown
        markout_1s REAL,                  -- bps from our side, filled in when known
        markout_10s REAL,
        markout_60s REAL,
        source TEXT NOT NULL,             -- stream | reconciled | backtest
        UNIQUE (session_id, trade_id)
    );
    CREATE INDEX fills_by_time ON fills(at);
    CREATE TABLE funding (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        seq INTEGER NOT NULL,             -- journal order across fills, funding and marks
        at REAL NOT NULL,
        market TEXT NOT NULL,
        paid_ms INTEGER NOT NULL,
        payment TEXT NOT NULL,            -- positive: we paid
        UNIQUE (session_id, market, paid_ms)
    );
    CREATE TABLE marks (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        seq INTEGER NOT NULL,             -- journal order across fills, funding and marks
        at REAL NOT NULL,
        market TEXT NOT NULL,
        kind TEXT NOT NULL,               -- open | periodic | final
        -- the whole MarketLedger, so the session's ledger restores exactly
        position TEXT NOT NULL,
        mark TEXT,
        cost_basis TEXT NOT NULL,
        cash TEXT NOT NULL,
        spread TEXT NOT NULL,
        inventory TEXT NOT NULL,
        fees TEXT NOT NULL,
        funding TEXT NOT NULL,
        fills INTEGER NOT NULL,
        volume TEXT NOT NULL
    );
    CREATE INDEX marks_by_session ON marks(session_id, market);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        market TEXT,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_by_time ON events(at);
    """,
)
assert len(MIGRATIONS) == SCHEMA_VERSION


class JournalError(Exception):
    """The journal cannot be used; the message is one line for the operator."""


def default_path(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """$XDG_STATE_HOME/extmm/journal.db, else ~/.local/state/extmm/journal.db."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(state) / "extmm" / "journal.db"


class JournalLock:
    """An exclusive advisory lock on `<journal>.lock` for the life of one writer."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(f"journal {self.path.parent}: cannot create the lock file: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise JournalError(
                f"journal {self.path.with_suffix('')} is in use by another extmm process "
                "(two instances must not share one journal; give this one its own --journal)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        uri = f"file:{path}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=5.0)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=5.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def _version(conn: sqlite3.Connection, path: Path) -> int:
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"journal {path} is not a readable extmm journal ({exc}); move it aside") from None


def open_journal(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (and for a writer create and migrate) the journal; raises JournalError."""
    path = Path(path).expanduser()
    if readonly:
        if not path.is_file():
            raise JournalError(f"journal {path} does not exist")
        conn = _connect(path, readonly=True)
        try:
            version = _version(conn, path)
            _check_version(version, path)
            if version == 0:
                raise JournalError(f"journal {path} is empty or not an extmm journal")
        except BaseException:
            conn.close()
            raise
        return conn
    folder = path.parent
    if not folder.is_dir():
        raise JournalError(f"journal folder {folder} does not exist (create it, or pick another --journal)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise JournalError(f"journal folder {folder} is not writable")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise JournalError(f"journal {path} is not writable (read-only file)")
    try:
        conn = _connect(path, readonly=False)
    except sqlite3.Error as exc:
        raise JournalError(f"journal {path} cannot be opened: {exc}") from None
    try:
        version = _version(conn, path)
        _check_version(version, path)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses at most the last commits
            conn.execute("PRAGMA foreign_keys=ON")
            if str(mode).lower() != "wal":
                raise JournalError(f"journal {path}: SQLite refused WAL mode ({mode})")
            _migrate(conn, version)
            conn.execute("PRAGMA quick_check").fetchone()
        except sqlite3.OperationalError as exc:
            raise JournalError(f"journal {path} cannot be written: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {path} is corrupt ({exc}); move it aside") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _check_version(version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"journal {path} has schema version {version}, newer than this extmm understands "
            f"({SCHEMA_VERSION}); upgrade extmm or use another --journal"
        )


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    for target in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[target - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
