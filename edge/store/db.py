"""Open the box's SQLite database, and the one lock and transaction shape every store uses.

The server shares one connection between threads (`check_same_thread=False`). SQLite transactions
belong to a connection, not a thread, so every use of the connection -- reads included -- must hold
the same lock, or one thread's statements land inside another thread's transaction. The lock lives on
the `Database` object itself, so two stores built on the same database always share it and two
databases never do.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

_LOCK_ATTR = "_edge_store_lock"
BUSY_TIMEOUT_MS = 5000


def connection_lock(db: sqlite_utils.Database) -> threading.RLock:
    """The lock that serializes every use of `db`'s connection (re-entrant, so stores can nest calls)."""
    lock = getattr(db, _LOCK_ATTR, None)
    if lock is None:
        lock = threading.RLock()
        setattr(db, _LOCK_ATTR, lock)
    return lock


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """One write transaction under the connection lock; a nested call joins the outer transaction.

    `with db.conn:` is not enough with sqlite-utils 4: `Database.execute` commits each write at once
    when no transaction is open, and Python's legacy mode opens none until the first DML. So the
    transaction is begun explicitly. IMMEDIATE takes the write lock up front, so a second process
    waits on `busy_timeout` instead of failing when a read-then-write transaction upgrades.
    """
    with connection_lock(db):
        if db.conn.in_transaction:
            yield
            return
        db.conn.execute("BEGIN IMMEDIATE")
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


def _configure(db: sqlite_utils.Database, *, wal: bool) -> None:
    # Imported here because migrations run inside `transaction`, defined above.
    from edge.store.migrations import migrate

    connection_lock(db)
    if wal:
        db.enable_wal()
    db.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    db.conn.execute("PRAGMA foreign_keys=ON")
    db.conn.execute("PRAGMA synchronous=NORMAL")
    migrate(db)


def open_database(path: Path) -> sqlite_utils.Database:
    """Open (creating if needed) the database file at `path`, configured and migrated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    db = sqlite_utils.Database(conn)
    _configure(db, wal=True)
    return db


def memory_database() -> sqlite_utils.Database:
    """A migrated in-memory database for tests; usable from several threads like the real one."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    db = sqlite_utils.Database(conn)
    _configure(db, wal=False)
    return db
