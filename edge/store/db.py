"""Open the box's SQLite database, and the one lock and transaction shape every store uses.

The server shares one connection between threads (`check_same_thread=False`). SQLite transactions
belong to a connection, not a thread, so every use of the connection -- reads included -- must hold
the same lock, or one thread's statements land inside another thread's transaction. The lock lives on
the `Database` object itself, so two stores built on the same database always share it and two
databases never do.

Another process (the sync agent) may hold SQLite's write lock for a while. A transaction waits for it
*without* holding the connection lock (see `transaction`), so this process's reads, which WAL never
blocks, go on meanwhile instead of queueing behind the waiting writer.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

_LOCK_ATTR = "_edge_store_lock"
_BUSY_ATTR = "_edge_store_busy_timeout_ms"
BUSY_TIMEOUT_MS = 5000
# FULL, not NORMAL: in WAL mode NORMAL does not fsync the WAL at COMMIT, so a turn the shopper was
# answered with can roll back after a power cut. The writer groups turns, so it is one fsync per batch
# (tests/edge/store/test_power_loss.py proves the difference; bench/durability.py measures the cost).
SYNCHRONOUS = "FULL"
_FIRST_PAUSE_S, _MAX_PAUSE_S = 0.001, 0.025


def pragmas(*, wal: bool, busy_timeout_ms: int = BUSY_TIMEOUT_MS, synchronous: str = SYNCHRONOUS) -> list[str]:
    """The PRAGMAs every connection to the box's database runs, in order.

    `synchronous` is a parameter only so the power-cut test and the bench can run NORMAL as a baseline.
    """
    return [
        *(["PRAGMA journal_mode=WAL"] if wal else []),
        f"PRAGMA busy_timeout={int(busy_timeout_ms)}",
        "PRAGMA foreign_keys=ON",
        f"PRAGMA synchronous={synchronous}",
    ]


def connection_lock(db: sqlite_utils.Database) -> threading.RLock:
    """The lock that serializes every use of `db`'s connection (re-entrant, so stores can nest calls)."""
    lock = getattr(db, _LOCK_ATTR, None)
    if lock is None:
        lock = threading.RLock()
        setattr(db, _LOCK_ATTR, lock)
    return lock


def is_busy(exc: BaseException) -> bool:
    """Whether `exc` is SQLITE_BUSY/SQLITE_LOCKED ("database is locked"): another connection holds a lock,
    so the same work can succeed later."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "locked" in str(exc) or "busy" in str(exc)
    return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _try_begin(db: sqlite_utils.Database) -> None:
    """BEGIN IMMEDIATE that fails at once if another connection holds the write lock (busy_timeout 0): the
    caller waits with the connection lock released, not inside SQLite's busy handler holding it."""
    db.conn.execute("PRAGMA busy_timeout=0")
    try:
        db.conn.execute("BEGIN IMMEDIATE")
    finally:
        db.conn.execute(f"PRAGMA busy_timeout={getattr(db, _BUSY_ATTR, BUSY_TIMEOUT_MS)}")


def _begin(db: sqlite_utils.Database, lock: threading.RLock, wait_s: float) -> None:
    deadline, pause = time.monotonic() + wait_s, _FIRST_PAUSE_S
    while True:
        try:
            _try_begin(db)
            return
        except sqlite3.OperationalError as exc:
            left = deadline - time.monotonic()
            if not is_busy(exc) or left <= 0:
                raise
        lock.release()  # a nested caller still holds it: then only this thread's own work waits
        try:
            time.sleep(min(pause, left))
        finally:
            lock.acquire()
        pause = min(pause * 2, _MAX_PAUSE_S)


@contextmanager
def transaction(db: sqlite_utils.Database, *, wait: float | None = None) -> Iterator[None]:
    """One write transaction under the connection lock; a nested call joins the outer transaction.

    `with db.conn:` is not enough with sqlite-utils 4: `Database.execute` commits each write at once
    when no transaction is open, and Python's legacy mode opens none until the first DML. So the
    transaction is begun explicitly. IMMEDIATE takes the write lock up front, so a second process
    waits instead of failing when a read-then-write transaction upgrades. While another connection
    holds the write lock it waits up to `wait` seconds (default: the busy timeout), polling with the
    connection lock released, then raises "database is locked" (`is_busy`).
    """
    lock = connection_lock(db)
    with lock:
        if db.conn.in_transaction:
            yield
            return
        if wait is None:
            wait = getattr(db, _BUSY_ATTR, BUSY_TIMEOUT_MS) / 1000
        _begin(db, lock, wait)
        try:
            yield
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        try:
            db.conn.execute("COMMIT")
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise


def configure(
    db: sqlite_utils.Database,
    *,
    wal: bool,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    synchronous: str = SYNCHRONOUS,
) -> None:
    """Run `pragmas` on `db`'s connection and migrate it (the power-cut test configures an apsw-backed
    database with this same function)."""
    # Imported here because migrations run inside `transaction`, defined above.
    from edge.store.migrations import migrate

    connection_lock(db)
    setattr(db, _BUSY_ATTR, int(busy_timeout_ms))
    for pragma in pragmas(wal=wal, busy_timeout_ms=busy_timeout_ms, synchronous=synchronous):
        db.conn.execute(pragma).fetchall()
    migrate(db)


def _sync_directory(directory: Path) -> None:
    """fsync a directory, so a file just created in it survives a power cut (SQLite does this for its WAL
    and journals, not for a new main database file)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_database(
    path: Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, synchronous: str = SYNCHRONOUS
) -> sqlite_utils.Database:
    """Open (creating if needed) the database file at `path`, configured and migrated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=busy_timeout_ms / 1000)
    db = sqlite_utils.Database(conn)
    configure(db, wal=True, busy_timeout_ms=busy_timeout_ms, synchronous=synchronous)
    if created:
        _sync_directory(path.parent)
    return db


def memory_database() -> sqlite_utils.Database:
    """A migrated in-memory database for tests; usable from several threads like the real one."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    db = sqlite_utils.Database(conn)
    configure(db, wal=False)
    return db
