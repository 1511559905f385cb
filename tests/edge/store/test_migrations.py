import sqlite3
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import CliRunner

from edge.cli import main
from edge.store.db import configure, open_database
from edge.store.disk import is_disk_full
from edge.store.migrations import MIGRATIONS, NAMED_VERSIONS, Migration, SchemaTooNew, applied, migrate

VERSIONS = [migration.version for migration in MIGRATIONS]
LATEST = VERSIONS[-1]


def raw_memory() -> sqlite_utils.Database:
    return sqlite_utils.Database(memory=True)


def test_migrate_applies_each_migration_once_and_records_it() -> None:
    db = raw_memory()
    assert migrate(db) == VERSIONS
    assert migrate(db) == []
    assert applied(db) == VERSIONS
    rows = list(db.query("SELECT version, name, applied_at FROM _migrations"))
    assert [(row["version"], row["name"]) for row in rows] == [(m.version, m.name) for m in MIGRATIONS]
    assert all(row["applied_at"] for row in rows)


def test_versions_count_up_one_by_one_and_the_named_ones_keep_their_numbers() -> None:
    assert list(range(1, len(MIGRATIONS) + 1)) == VERSIONS
    by_name = {migration.name: migration.version for migration in MIGRATIONS}
    assert {name: by_name.get(name) for name in NAMED_VERSIONS} == NAMED_VERSIONS


def test_reopening_a_file_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    open_database(path).close()
    db = open_database(path)
    try:
        assert migrate(db) == []
        assert applied(db) == VERSIONS
    finally:
        db.close()


def test_renaming_a_migration_does_not_run_it_again() -> None:
    """Keyed by name, a renamed m003 ran again on every box: `CREATE TABLE sync_state` failed at start."""
    db = raw_memory()
    migrate(db)

    def m003_sync_streams(db: sqlite_utils.Database) -> None:
        raise AssertionError("a renamed migration must not run again")

    renamed = [Migration(3, m003_sync_streams) if m.version == 3 else m for m in MIGRATIONS]
    assert migrate(db, renamed) == []
    assert applied(db) == VERSIONS


def legacy_database(names: list[str]) -> sqlite_utils.Database:
    """A database as releases that keyed migrations by name left it."""
    db = raw_memory()
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for migration in MIGRATIONS[:7]:
        migration.apply(db)
    for name in names:
        db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, '2026-01-01T00:00:00+00:00')", [name])
    db.conn.commit()
    return db


def test_a_database_keyed_by_names_gets_numbers_once_and_reruns_nothing() -> None:
    db = legacy_database([migration.name for migration in MIGRATIONS[:7]])
    assert migrate(db) == VERSIONS[7:]  # 1-7 would fail if run again: their tables exist
    assert applied(db) == VERSIONS
    assert migrate(db) == []


def test_a_database_newer_than_the_code_is_refused_with_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    db = open_database(path)

    def m099_from_a_newer_release(db: sqlite_utils.Database) -> None:
        db.execute("CREATE TABLE newer (x)")

    migrate(db, [*MIGRATIONS, Migration(LATEST + 1, m099_from_a_newer_release)])
    db.close()
    with pytest.raises(SchemaTooNew) as refused:
        open_database(path)
    message = str(refused.value)
    assert "\n" not in message
    assert f"schema version {LATEST + 1}, newer than this release knows (schema version {LATEST})" in message
    assert str(path) in message


def test_a_migration_recorded_only_by_an_unknown_name_is_refused() -> None:
    db = legacy_database([*(migration.name for migration in MIGRATIONS[:7]), "m008_something_else"])
    with pytest.raises(SchemaTooNew, match="m008_something_else"):
        migrate(db)
    assert "version" not in db["_migrations"].columns_dict  # refused before anything was written


@pytest.mark.parametrize("command", [["serve"], ["sync", "status"]])
def test_edge_serve_and_the_agent_refuse_a_newer_schema_in_one_line(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    db = open_database(data / "kiosk.sqlite3")
    db.execute("INSERT INTO _migrations (version, name, applied_at) VALUES (?, 'm_future', 'now')", [LATEST + 5])
    db.close()
    monkeypatch.setenv("KIOSK_DATA_DIR", str(data))
    monkeypatch.setenv("KIOSK_APP_KEYS", '["app-very-secret-key-123"]')
    monkeypatch.setenv("KIOSK_CENTRAL_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("KIOSK_BUNDLE_DIR", str(tmp_path / "no-bundle"))
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert f"schema version {LATEST + 5}, newer than this release knows (schema version {LATEST})" in lines[0]


def test_a_new_file_reclaims_space_incrementally(tmp_path: Path) -> None:
    db = open_database(tmp_path / "edge.db")
    try:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_starting_on_a_full_volume_writes_nothing(tmp_path: Path) -> None:
    """A current file is opened and migrated without a single write, so a full data volume cannot stop the
    box from starting (it answers 503 `storage_full` to writes instead of crash-looping)."""
    path = tmp_path / "edge.db"
    open_database(path).close()
    conn = sqlite3.connect(str(path), check_same_thread=False)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite now fails as a full disk does (SQLITE_FULL)
    db = sqlite_utils.Database(conn)
    configure(db, wal=True)
    assert path.with_name("edge.db-wal").stat().st_size == 0
    with pytest.raises(sqlite3.OperationalError) as full:
        db.execute("INSERT INTO outbox (kind, ref, payload) VALUES ('turn', 'm', ?)", [f'"{"x" * 100_000}"'])
    assert is_disk_full(full.value)
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
        *("central_message_id", "central_conversation_id", "central_first_byte_ms", "escalation"),
    }
    assert db["central_conversations"].pks == ["conversation_id"]
    assert db["bank_answers"].pks == ["label", "language"]
    assert db["feedback"].pks == ["message_id", "user"]
    assert db["curated_answers"].pks == ["label"]
    assert db["messages"].foreign_keys[0].other_table == "conversations"
    assert columns["outbox"]["status"].notnull
    indexes = {
        table: [index.columns for index in db[table].indexes] for table in ("conversations", "messages", "outbox")
    }
    assert ["user", "updated_at"] in indexes["conversations"]
    assert ["updated_at", "id"] in indexes["conversations"]
    assert ["conversation_id", "seq"] in indexes["messages"]
    assert ["status", "next_attempt_at"] in indexes["outbox"]
    assert ["ref"] in indexes["outbox"]


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

    def m099_half_done(db: sqlite_utils.Database) -> None:
        db.execute("CREATE TABLE half (x INTEGER)")
        raise RuntimeError("fails after its first statement")

    with pytest.raises(RuntimeError):
        migrate(db, [*MIGRATIONS, Migration(LATEST + 1, m099_half_done)])
    assert "half" not in db.table_names()
    assert applied(db) == VERSIONS

    def m099_half_done_fixed(db: sqlite_utils.Database) -> None:
        db.execute("CREATE TABLE half (x INTEGER)")

    assert migrate(db, [*MIGRATIONS, Migration(LATEST + 1, m099_half_done_fixed)]) == [LATEST + 1]
    assert "half" in db.table_names()


def test_versions_must_increase() -> None:
    with pytest.raises(ValueError, match="must increase"):
        migrate(raw_memory(), [MIGRATIONS[1], MIGRATIONS[0]])
