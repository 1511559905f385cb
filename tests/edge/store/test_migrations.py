from pathlib import Path

import pytest
import sqlite_utils

from edge.store.db import open_database
from edge.store.migrations import MIGRATIONS, applied, migrate


def raw_memory() -> sqlite_utils.Database:
    return sqlite_utils.Database(memory=True)


def test_migrate_applies_each_migration_once_and_records_it() -> None:
    db = raw_memory()
    names = [migration.__name__ for migration in MIGRATIONS]
    assert migrate(db) == names
    assert migrate(db) == []
    assert applied(db) == names
    rows = list(db.query("SELECT name, applied_at FROM _migrations"))
    assert [row["name"] for row in rows] == names
    assert all(row["applied_at"] for row in rows)


def test_reopening_a_file_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    open_database(path).close()
    db = open_database(path)
    try:
        assert migrate(db) == []
        assert applied(db) == [migration.__name__ for migration in MIGRATIONS]
    finally:
        db.close()


def test_initial_schema() -> None:
    db = raw_memory()
    migrate(db)
    columns = {table: {c.name: c for c in db[table].columns} for table in db.table_names()}
    assert set(columns["conversations"]) == {
        *("id", "user", "name", "inputs", "status", "introduction", "created_at", "updated_at", "deleted"),
    }
    assert set(columns["messages"]) == {
        *("seq", "id", "conversation_id", "user", "query", "answer", "status", "error", "route", "intent"),
        *("confidence", "latency_ms", "prompt_tokens", "completion_tokens", "sources", "created_at"),
        *("language", "reason"),
    }
    assert db["bank_answers"].pks == ["label", "language"]
    assert db["feedback"].pks == ["message_id", "user"]
    assert db["curated_answers"].pks == ["label"]
    assert db["messages"].foreign_keys[0].other_table == "conversations"
    assert columns["outbox"]["status"].notnull
    indexes = {
        table: [index.columns for index in db[table].indexes] for table in ("conversations", "messages", "outbox")
    }
    assert ["user", "updated_at"] in indexes["conversations"]
    assert ["conversation_id", "seq"] in indexes["messages"]
    assert ["status", "next_attempt_at"] in indexes["outbox"]


def test_initial_schema_defaults() -> None:
    db = raw_memory()
    migrate(db)
    db.execute("INSERT INTO conversations (id, user) VALUES ('c', 'u')")
    db.execute("INSERT INTO outbox (kind, ref) VALUES ('turn', 'm')")
    conversation = next(db.query("SELECT status, introduction, deleted FROM conversations"))
    assert conversation == {"status": "normal", "introduction": "", "deleted": 0}
    outbox = next(db.query("SELECT status, attempts, next_attempt_at FROM outbox"))
    assert outbox == {"status": "pending", "attempts": 0, "next_attempt_at": 0}


def test_a_failing_migration_is_rolled_back_and_stays_pending() -> None:
    db = raw_memory()

    def m002_half_done(db: sqlite_utils.Database) -> None:
        db.execute("CREATE TABLE half (x INTEGER)")
        raise RuntimeError("fails after its first statement")

    with pytest.raises(RuntimeError):
        migrate(db, [*MIGRATIONS, m002_half_done])
    assert "half" not in db.table_names()
    assert applied(db) == [migration.__name__ for migration in MIGRATIONS]

    def m002_half_done_fixed(db: sqlite_utils.Database) -> None:
        db.execute("CREATE TABLE half (x INTEGER)")

    m002_half_done_fixed.__name__ = "m002_half_done"
    assert migrate(db, [*MIGRATIONS, m002_half_done_fixed]) == ["m002_half_done"]
    assert "half" in db.table_names()
