import sqlite3
import threading
from pathlib import Path

import pytest
import sqlite_utils

from edge.store.db import connection_lock, memory_database, open_database, transaction


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
        assert pragma(db, "synchronous") == 1  # NORMAL
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
