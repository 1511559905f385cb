"""Ordered schema migrations, each applied once and recorded in `_migrations` under its version number.

Append new migrations to `MIGRATIONS` with the next number; never edit, renumber or reorder one that
has shipped, because boxes in stores already recorded its number. The function's name is for people
only: renaming it changes nothing. Each migration and its record commit together, so a failure
leaves the migration pending rather than half-applied.

A database that records a version this code does not know was written by a newer release: `migrate`
refuses it (`SchemaTooNew`) instead of running an older release on a schema it cannot read.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlite_utils

from edge.store.db import connection_lock, transaction

Apply = Callable[[sqlite_utils.Database], None]
INCREMENTAL = 2  # PRAGMA auto_vacuum


@dataclass(frozen=True)
class Migration:
    version: int  # the stable key recorded in `_migrations`
    apply: Apply

    @property
    def name(self) -> str:
        return self.apply.__name__


class SchemaTooNew(Exception):
    """The database was migrated by a newer release (a rolled-back bundle or image is running on it)."""


def m001_initial(db: sqlite_utils.Database) -> None:
    """Conversations, messages, feedback, curated answers and the sync outbox."""
    statements = [
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            user TEXT NOT NULL,
            name TEXT,
            inputs TEXT, -- JSON object
            status TEXT DEFAULT 'normal',
            introduction TEXT DEFAULT '',
            created_at INTEGER,
            updated_at INTEGER,
            deleted INTEGER DEFAULT 0
        )""",
        "CREATE INDEX idx_conversations_user_updated ON conversations (user, updated_at)",
        """CREATE TABLE messages (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT UNIQUE NOT NULL,
            conversation_id TEXT NOT NULL REFERENCES conversations(id),
            user TEXT NOT NULL,
            query TEXT,
            answer TEXT,
            status TEXT DEFAULT 'normal',
            error TEXT,
            route TEXT,
            intent TEXT,
            confidence REAL,
            latency_ms REAL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            sources TEXT, -- JSON array
            created_at INTEGER
        )""",
        "CREATE INDEX idx_messages_conversation_seq ON messages (conversation_id, seq)",
        """CREATE TABLE feedback (
            message_id TEXT,
            user TEXT,
            rating TEXT,
            content TEXT,
            created_at INTEGER,
            updated_at INTEGER,
            PRIMARY KEY (message_id, user)
        )""",
        """CREATE TABLE curated_answers (
            label TEXT PRIMARY KEY,
            answer TEXT NOT NULL,
            source TEXT,
            updated_at INTEGER
        )""",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            ref TEXT NOT NULL,
            payload TEXT, -- JSON
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER DEFAULT 0,
            last_error TEXT,
            next_attempt_at REAL DEFAULT 0,
            created_at REAL,
            updated_at REAL
        )""",
        "CREATE INDEX idx_outbox_status_next ON outbox (status, next_attempt_at)",
    ]
    for sql in statements:
        db.execute(sql)


def m002_knowledge(db: sqlite_utils.Database) -> None:
    """Local knowledge (Dify segments, or the seed): text, its vector, and an FTS5 index kept by triggers.

    `version` moves on every change, so the server's in-memory vector matrix knows when to reload.
    """
    statements = [
        """CREATE TABLE knowledge_segments (
            id TEXT PRIMARY KEY, -- Dify segment id
            dataset_id TEXT NOT NULL,
            dataset_name TEXT,
            document_id TEXT NOT NULL,
            document_name TEXT,
            position INTEGER,
            content TEXT NOT NULL,
            answer TEXT, -- Q&A segments: the answer to the question in content
            keywords TEXT, -- JSON array
            enabled INTEGER NOT NULL DEFAULT 1,
            index_node_hash TEXT,
            updated_at INTEGER,
            word_count INTEGER,
            vector BLOB, -- float32, L2-normalised
            embedder TEXT -- sha256 of the embedder model that made vector
        )""",
        "CREATE INDEX idx_knowledge_document ON knowledge_segments (dataset_id, document_id)",
        """CREATE VIRTUAL TABLE knowledge_fts USING fts5(
            content, answer, keywords,
            content='knowledge_segments', content_rowid='rowid',
            tokenize='porter unicode61 remove_diacritics 2'
        )""",
        """CREATE TRIGGER knowledge_fts_insert AFTER INSERT ON knowledge_segments BEGIN
            INSERT INTO knowledge_fts (rowid, content, answer, keywords)
            VALUES (new.rowid, new.content, new.answer, new.keywords);
        END""",
        """CREATE TRIGGER knowledge_fts_delete AFTER DELETE ON knowledge_segments BEGIN
            INSERT INTO knowledge_fts (knowledge_fts, rowid, content, answer, keywords)
            VALUES ('delete', old.rowid, old.content, old.answer, old.keywords);
        END""",
        """CREATE TRIGGER knowledge_fts_update AFTER UPDATE OF content, answer, keywords ON knowledge_segments BEGIN
            INSERT INTO knowledge_fts (knowledge_fts, rowid, content, answer, keywords)
            VALUES ('delete', old.rowid, old.content, old.answer, old.keywords);
            INSERT INTO knowledge_fts (rowid, content, answer, keywords)
            VALUES (new.rowid, new.content, new.answer, new.keywords);
        END""",
        "CREATE TABLE knowledge_state (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
        "INSERT INTO knowledge_state (id, version) VALUES (1, 0)",
    ]
    for sql in statements:
        db.execute(sql)


def m003_sync_state(db: sqlite_utils.Database) -> None:
    """What the sync agent last saw of central, per stream ('central' is the connectivity probe)."""
    db.execute(
        """CREATE TABLE sync_state (
            stream TEXT PRIMARY KEY,
            state TEXT NOT NULL, -- online | offline | ok | failed | stopped
            last_attempt_at REAL,
            last_success_at REAL,
            last_error TEXT,
            details TEXT -- JSON object
        )"""
    )


def m004_push_and_parameters(db: sqlite_utils.Database) -> None:
    """Records pushed to central (one per conversation part, written ahead of the send) and central's
    app parameters (opening statement, suggested questions) as last pulled."""
    db.execute(
        """CREATE TABLE pushed_records (
            conversation_id TEXT NOT NULL,
            part INTEGER NOT NULL, -- 1 for a conversation's first record; turns after it go in part 2, ...
            end_user TEXT NOT NULL, -- Dify `user` of the run: the idempotency key looked up before sending
            status TEXT NOT NULL, -- sending | done | parked
            outbox_ids TEXT NOT NULL, -- JSON list: the turns this record carries, fixed when it is first written
            workflow_run_id TEXT,
            last_error TEXT,
            created_at REAL,
            updated_at REAL,
            PRIMARY KEY (conversation_id, part)
        )"""
    )
    db.execute("CREATE TABLE central_parameters (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT, fetched_at REAL)")


def m005_outbox_by_conversation(db: sqlite_utils.Database) -> None:
    """The pusher gathers a conversation's pending turns; without this it read the whole outbox per
    conversation (quadratic: 10,000 conversations took minutes)."""
    db.execute(
        "CREATE INDEX idx_outbox_pending_conversation ON outbox (json_extract(payload, '$.conversation_id'))"
        " WHERE status = 'pending'"
    )


def m006_bank_answers(db: sqlite_utils.Database) -> None:
    """Curated answers per language (the bank of verbatim answers), and what each turn was answered in.

    The English answers of `curated_answers` move over as they are; the table stays, unread, so an
    older release rolled back onto this file still finds it.
    """
    db.execute(
        """CREATE TABLE bank_answers (
            label TEXT NOT NULL,
            language TEXT NOT NULL,
            question TEXT, -- the canonical question, shown to staff and central
            answer TEXT NOT NULL,
            source TEXT,
            updated_at INTEGER,
            PRIMARY KEY (label, language)
        )"""
    )
    db.execute(
        "INSERT INTO bank_answers (label, language, answer, source, updated_at)"
        " SELECT label, 'en', answer, source, updated_at FROM curated_answers"
    )
    db.execute("ALTER TABLE messages ADD COLUMN language TEXT")
    db.execute("ALTER TABLE messages ADD COLUMN reason TEXT")  # why the route was taken (policy.Reason)


def m007_cjk_full_text(db: sqlite_utils.Database) -> None:
    """Full text that finds Chinese words: the index holds CJK runs split into bigrams (see
    `knowledge.index_text`), kept in step by the knowledge store instead of triggers."""
    from edge.store.knowledge import index_text

    for trigger in ("knowledge_fts_insert", "knowledge_fts_delete", "knowledge_fts_update"):
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    db.execute("DROP TABLE IF EXISTS knowledge_fts")
    db.execute(
        "CREATE VIRTUAL TABLE knowledge_fts USING fts5(content, answer, keywords,"
        " tokenize='porter unicode61 remove_diacritics 2')"
    )
    rows = db.execute("SELECT rowid, content, answer, keywords FROM knowledge_segments").fetchall()
    for rowid, content, answer, keywords in rows:
        words = " ".join(json.loads(keywords or "[]"))
        db.execute(
            "INSERT INTO knowledge_fts (rowid, content, answer, keywords) VALUES (?, ?, ?, ?)",
            [rowid, index_text(content or ""), index_text(answer or ""), index_text(words)],
        )


def m008_push_leases(db: sqlite_utils.Database) -> None:
    """Who is working an outbox row (two sync agents on one box must not send the same record), and when a
    record's send was last attempted (from then on its run may exist on central: wait for it, never re-send)."""
    db.execute("ALTER TABLE outbox ADD COLUMN leased_by TEXT")  # holder of the lease ending at next_attempt_at
    db.execute("ALTER TABLE pushed_records ADD COLUMN sent_at REAL")


def m009_retention_indexes(db: sqlite_utils.Database) -> None:
    """Retention (`edge.store.retention`) walks conversations by age and finds each one's outbox rows by
    message (`ref`); without these it scanned both tables per batch."""
    db.execute("CREATE INDEX idx_conversations_updated ON conversations (updated_at, id)")
    db.execute("CREATE INDEX idx_outbox_ref ON outbox (ref)")


def m010_central_escalation(db: sqlite_utils.Database) -> None:
    """Live escalation (issue #13): which central conversation continues each local one, and per turn what
    central answered with (its message and conversation ids, its first-byte latency) or why it did not."""
    db.execute(
        """CREATE TABLE central_conversations (
            conversation_id TEXT PRIMARY KEY, -- the local conversation
            central_conversation_id TEXT NOT NULL,
            updated_at INTEGER
        )"""
    )
    db.execute("ALTER TABLE messages ADD COLUMN central_message_id TEXT")
    db.execute("ALTER TABLE messages ADD COLUMN central_conversation_id TEXT")
    db.execute("ALTER TABLE messages ADD COLUMN central_first_byte_ms REAL")
    db.execute("ALTER TABLE messages ADD COLUMN escalation TEXT")  # NULL: not tried; `answered`; `fallback:<cause>`


def m011_handoffs(db: sqlite_utils.Database) -> None:
    """Hand-offs to store staff (issue #14, `edge.store.handoffs`): one row per call, its state and times.
    Times are epoch seconds as REAL: time to claim is measured in seconds, not whole ones."""
    db.execute(
        """CREATE TABLE handoffs (
            id TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL,
            user TEXT NOT NULL, -- the Dify user (a kiosk session's is kiosk-<sid>)
            message_id TEXT NOT NULL, -- the turn that opened it
            kiosk_id TEXT NOT NULL,
            language TEXT NOT NULL,
            reason TEXT NOT NULL, -- button | abstention | error
            detail TEXT, -- the policy's reason: unsure, no_translation, no_llm, ...
            question TEXT,
            status TEXT NOT NULL, -- open | claimed | closed | abandoned
            opened_at REAL NOT NULL,
            claimed_at REAL,
            claimed_by TEXT,
            closed_at REAL,
            closed_by TEXT,
            abandoned_at REAL,
            calls INTEGER NOT NULL DEFAULT 1, -- hand-off turns while it was active
            rev INTEGER NOT NULL -- bumped by every change: the staff page's cursor
        )"""
    )
    db.execute(
        "CREATE UNIQUE INDEX idx_handoffs_active ON handoffs (conversation_id) WHERE status IN ('open', 'claimed')"
    )
    db.execute("CREATE INDEX idx_handoffs_rev ON handoffs (rev)")
    db.execute("CREATE INDEX idx_handoffs_opened ON handoffs (opened_at)")
    db.execute("CREATE INDEX idx_handoffs_user ON handoffs (user, opened_at)")
    db.execute("CREATE INDEX idx_handoffs_conversation ON handoffs (conversation_id)")  # retention, records


# Each migration's number is its key in `_migrations`: the next one takes the next number.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, m001_initial),
    Migration(2, m002_knowledge),
    Migration(3, m003_sync_state),
    Migration(4, m004_push_and_parameters),
    Migration(5, m005_outbox_by_conversation),
    Migration(6, m006_bank_answers),
    Migration(7, m007_cjk_full_text),
    Migration(8, m008_push_leases),
    Migration(9, m009_retention_indexes),
    Migration(10, m010_central_escalation),
    Migration(11, m011_handoffs),
)

# What releases before version numbers recorded: function names. Frozen on purpose, so a later rename
# of a function cannot change how an old record is read. (m008 was never released keyed by name; it is
# here for development databases.)
NAMED_VERSIONS = {
    "m001_initial": 1,
    "m002_knowledge": 2,
    "m003_sync_state": 3,
    "m004_push_and_parameters": 4,
    "m005_outbox_by_conversation": 5,
    "m006_bank_answers": 6,
    "m007_cjk_full_text": 7,
    "m008_push_leases": 8,
}


def applied(db: sqlite_utils.Database) -> list[int]:
    """Versions of the migrations already applied to `db`, in the order they were applied."""
    with connection_lock(db):
        if not db["_migrations"].exists() or "version" not in db["_migrations"].columns_dict:
            return []
        return [row[0] for row in db.execute("SELECT version FROM _migrations ORDER BY rowid").fetchall()]


def migrate(db: sqlite_utils.Database, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply every pending migration in order; return the versions applied by this call.

    Raises `SchemaTooNew` (applying nothing) when `db` records a version newer than `migrations` know.
    """
    versions = [migration.version for migration in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"migration versions must increase: {versions}")
    _incremental_vacuum_if_new(db)
    with transaction(db):
        _key_by_version(db)
        _refuse_newer(db, max(versions, default=0))
    done: list[int] = []
    for migration in migrations:
        with transaction(db):
            # Checked inside the write transaction: two processes opening a fresh file both get here.
            if db.execute("SELECT 1 FROM _migrations WHERE version = ?", [migration.version]).fetchone():
                continue
            migration.apply(db)
            db.execute(
                "INSERT INTO _migrations (version, name, applied_at) VALUES (?, ?, ?)",
                [migration.version, migration.name, datetime.now(UTC).isoformat(timespec="seconds")],
            )
        done.append(migration.version)
    return done


def _incremental_vacuum_if_new(db: sqlite_utils.Database) -> None:
    """A new file gets `auto_vacuum=INCREMENTAL`, so retention can hand freed pages back to the volume.

    It can only be switched on before the first table exists (or by a VACUUM, which rewrites the whole
    file under an exclusive lock): here the file is empty, so the VACUUM that applies it costs nothing.
    An older box's file keeps `NONE`; its freed pages are reused by new turns instead (README, Retention).
    """
    with connection_lock(db):
        if db.conn.in_transaction or db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            return
        if db.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
            db.execute(f"PRAGMA auto_vacuum={INCREMENTAL}")
            # WAL mode already wrote the header: the setting takes effect through a VACUUM. Another process
            # holding the lock past busy_timeout leaves the file at NONE, which is no reason not to start.
            with contextlib.suppress(sqlite3.OperationalError):
                db.execute("VACUUM")


def _key_by_version(db: sqlite_utils.Database) -> None:
    """`_migrations` as it stands, with a `version` per row. Databases from releases that keyed migrations by
    name get the column and their names mapped to numbers, in the caller's transaction (all or nothing)."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    if "version" not in {row[1] for row in db.execute("PRAGMA table_info(_migrations)").fetchall()}:
        db.execute("ALTER TABLE _migrations ADD COLUMN version INTEGER")
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS idx_migrations_version ON _migrations (version)")
    # Every start: an older release rolled back onto this file records names only. An UPDATE that
    # matches nothing writes nothing, so a current file is not written to at start (a full volume must
    # not stop the server from starting).
    for name, version in NAMED_VERSIONS.items():
        db.execute("UPDATE _migrations SET version = ? WHERE name = ? AND version IS NULL", [version, name])


def _refuse_newer(db: sqlite_utils.Database, known: int) -> None:
    unknown = [row[0] for row in db.execute("SELECT name FROM _migrations WHERE version IS NULL").fetchall()]
    found = db.execute("SELECT max(version) FROM _migrations").fetchone()[0] or 0
    if found > known or unknown:
        path = db.execute("PRAGMA database_list").fetchone()[2] or ":memory:"
        what = f"schema version {found}" if found > known else f"migrations named {', '.join(unknown)}"
        raise SchemaTooNew(
            f"{path} has {what}, newer than this release knows (schema version {known}): a newer release "
            "migrated it, and an older one cannot run on it; roll forward to that release (or a newer one)"
        )
