import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlite_utils

from edge.store.db import SYNCHRONOUS, connection_lock, is_busy, memory_database, open_database, pragmas, transaction


def pragma(db: sqlite_utils.Database, name: str) -> object:
    return db.execute(f"PRAGMA {name}").fetchone()[0]


def test_open_database_creates_parent_dirs_and_configures(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "edge.db"
    db = open_database(path)
    try:
        assert path.is_file()
        assert pragma(db, "journal_mode") == "wal"
        assert pragma(db, "busy_timeout") == 5000
        assert pragma(db, "foreign_keys") == 1
        assert pragma(db, "synchronous") == 2  # FULL: NORMAL loses acknowledged turns at a power cut
        assert {"conversations", "messages", "feedback", "curated_answers", "outbox"} <= set(db.table_names())
    finally:
        db.close()


def test_wal_persists_for_a_second_connection(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    open_database(path).close()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def test_memory_database_is_migrated_and_usable_from_another_thread() -> None:
    db = memory_database()
    assert pragma(db, "foreign_keys") == 1
    errors: list[BaseException] = []

    def use() -> None:
        try:
            db.execute("INSERT INTO curated_answers (label, answer) VALUES ('a', 'b')")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join()
    assert errors == []
    assert db.execute("SELECT count(*) FROM curated_answers").fetchone()[0] == 1


def test_foreign_keys_are_enforced() -> None:
    db = memory_database()
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO messages (id, conversation_id, user) VALUES ('m', 'no-such-conversation', 'u')")


def test_connection_lock_is_per_database() -> None:
    first, second = memory_database(), memory_database()
    assert connection_lock(first) is connection_lock(first)
    assert connection_lock(first) is not connection_lock(second)


def test_transaction_commits_or_rolls_back_as_a_whole() -> None:
    db = memory_database()
    with transaction(db):
        db.execute("INSERT INTO curated_answers (label, answer) VALUES ('kept', 'x')")
    with pytest.raises(RuntimeError), transaction(db):
        db.execute("INSERT INTO curated_answers (label, answer) VALUES ('lost', 'x')")
        raise RuntimeError("boom")
    assert not db.conn.in_transaction
    assert [row[0] for row in db.execute("SELECT label FROM curated_answers").fetchall()] == ["kept"]


def test_nested_transaction_joins_the_outer_one() -> None:
    db = memory_database()
    with pytest.raises(RuntimeError), transaction(db):
        with transaction(db):
            db.execute("INSERT INTO curated_answers (label, answer) VALUES ('inner', 'x')")
        assert db.conn.in_transaction  # the inner block did not commit
        raise RuntimeError("outer fails after inner finished")
    assert db.execute("SELECT count(*) FROM curated_answers").fetchone()[0] == 0


def test_the_pragmas_are_those_a_connection_runs(tmp_path: Path) -> None:
    """The power-cut test replays `pragmas()`: it must be what `open_database` actually runs."""
    assert SYNCHRONOUS == "FULL"
    db = open_database(tmp_path / "edge.db")
    try:
        for statement in pragmas(wal=True):
            name, value = statement.removeprefix("PRAGMA ").split("=")
            expected = {"WAL": "wal", "ON": 1, "FULL": 2}.get(value, int(value) if value.isdigit() else value)
            assert pragma(db, name) == expected, statement
    finally:
        db.close()


@pytest.fixture
def locked(tmp_path: Path):
    """The box's database, and another process's connection (the sync agent) holding its write lock."""
    db = open_database(tmp_path / "edge.db")
    agent = sqlite3.connect(tmp_path / "edge.db", isolation_level=None, check_same_thread=False)
    agent.execute("BEGIN IMMEDIATE")
    yield db, agent
    if agent.in_transaction:
        agent.execute("ROLLBACK")
    agent.close()
    db.close()


def test_a_read_does_not_wait_behind_a_transaction_waiting_for_the_write_lock(locked) -> None:
    """A transaction waiting for another process's write lock must not hold the connection: WAL reads go on."""
    db, agent = locked
    inside = threading.Event()

    def write() -> None:
        with transaction(db, wait=3.0):
            inside.set()
            db.execute("INSERT INTO curated_answers (label, answer) VALUES ('waited', 'x')")

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.2)  # the writer is waiting for the agent's lock by now
    started = time.perf_counter()
    with connection_lock(db):
        assert db.execute("SELECT count(*) FROM curated_answers").fetchone()[0] == 0
    assert time.perf_counter() - started < 0.2
    assert not inside.is_set()
    agent.execute("COMMIT")
    writer.join(5)
    assert inside.is_set()
    assert db.execute("SELECT count(*) FROM curated_answers WHERE label = 'waited'").fetchone()[0] == 1


def test_a_transaction_gives_up_after_its_wait_with_database_is_locked(locked) -> None:
    db, _ = locked
    started = time.perf_counter()
    with pytest.raises(sqlite3.OperationalError) as caught, transaction(db, wait=0.2):
        pass
    assert is_busy(caught.value)
    assert 0.2 <= time.perf_counter() - started < 1.0
    assert not db.conn.in_transaction
    assert pragma(db, "busy_timeout") == 5000  # the zero used while polling is not left behind
