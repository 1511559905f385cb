"""Local knowledge: Dify-shaped segments with their vectors and an FTS5 index, changed atomically.

Central Dify is authoritative; the sync agent diffs it against `fingerprints()` and calls `apply()`
with the changed segments already embedded, so one transaction swaps text, vector and full-text
index together and a question never sees half a segment. A large change is applied `CHUNK_ROWS`
rows a transaction, so the server's turns (the same file, another process) never wait long for the
write lock; a question may then see a large change half applied, and a crash between two chunks
leaves whole rows that the next diff completes. `version` moves on every change, so the server
reloads its in-memory vector matrix only when something changed.
"""

from __future__ import annotations

import csv
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from edge.store.db import connection_lock, transaction
from edge.store.errors import InvalidParam

SEED_DATASET = uuid.UUID("6f1c2a52-4f5e-4d59-9b3c-6a0d1e3c7b10")  # the box's own seed knowledge
SEED_DATASET_NAME = "Store seed knowledge"
# Central's annotations, pulled by the sync agent, are kept as Q&A segments of their own dataset.
ANNOTATIONS_DATASET = str(uuid.uuid5(uuid.NAMESPACE_URL, "kiosk-edge:dify-annotations"))
ANNOTATIONS_NAME = "Annotations"
_FTS_TERM = re.compile(r"\w+", re.UNICODE)
_FTS_MAX_TERMS = 32
CHUNK_ROWS = 256  # rows written per transaction by a large change: milliseconds, far below the busy timeout
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff]+")


def _bigrams(run: str) -> list[str]:
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


def index_text(text: str) -> str:
    """Text as the full-text index sees it: each run of CJK characters becomes its overlapping bigrams.

    FTS5's word tokenizers make a whole run of Chinese characters one token, so "退款" would never
    match "我的退款什么时候到账"; bigrams match any two-character word inside the run, the usual
    length of a Chinese word, and a query is split the same way.
    """
    return _CJK_RUN.sub(lambda match: " " + " ".join(_bigrams(match.group(0))) + " ", text)


@dataclass(frozen=True)
class Segment:
    """One Dify segment as the box keeps it; `content` is what is embedded and searched."""

    id: str
    dataset_id: str
    document_id: str
    content: str
    answer: str | None = None
    dataset_name: str = ""
    document_name: str = ""
    position: int = 0
    keywords: tuple[str, ...] = ()
    enabled: bool = True
    index_node_hash: str = ""
    updated_at: int = 0

    def fingerprint(self) -> tuple[int, str, bool]:
        """What Dify changes when a segment changes (spec §4): `updated_at`, content hash, `enabled`."""
        return (self.updated_at, self.index_node_hash, self.enabled)


@dataclass
class VectorIndex:
    """Enabled segments that have a vector from one embedder, as a matrix for cosine search."""

    version: int
    ids: list[str] = field(default_factory=list)
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))


def fts_query(text: str) -> str | None:
    """A safe FTS5 query: every word (or CJK bigram) of `text` quoted and OR-ed (FTS5 syntax in user text
    is inert)."""
    terms = list(dict.fromkeys(term.casefold() for term in _FTS_TERM.findall(index_text(text))))[:_FTS_MAX_TERMS]
    if not terms:
        return None
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


class KnowledgeStore:
    """The `knowledge_segments` table, its FTS5 index and its version counter."""

    def __init__(self, db: sqlite_utils.Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._lock = connection_lock(db)

    def version(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT version FROM knowledge_state WHERE id = 1").fetchone()[0])

    def count(self, *, enabled_only: bool = False) -> int:
        sql = "SELECT count(*) FROM knowledge_segments" + (" WHERE enabled = 1" if enabled_only else "")
        with self._lock:
            return int(self.db.execute(sql).fetchone()[0])

    def _bump(self) -> None:
        self.db.execute("UPDATE knowledge_state SET version = version + 1 WHERE id = 1")

    def apply(
        self,
        upserts: Sequence[Segment],
        vectors: np.ndarray | None,
        embedder: str | None,
        deletes: Iterable[str] = (),
    ) -> None:
        """Insert or replace `upserts` (row i gets `vectors[i]`, made by `embedder`) and delete `deletes`,
        in one transaction. Without vectors the rows wait for `missing_vectors` to be indexed."""
        if vectors is not None and len(vectors) != len(upserts):
            raise ValueError(f"{len(upserts)} segments but {len(vectors)} vectors")
        deletes = list(deletes)
        with transaction(self.db):
            for index, segment in enumerate(upserts):
                blob = None if vectors is None else np.asarray(vectors[index], dtype=np.float32).tobytes()
                self._upsert(segment, blob, embedder if blob is not None else None)
            for segment_id in deletes:
                self._unindex("id = ?", [segment_id])
                self.db.execute("DELETE FROM knowledge_segments WHERE id = ?", [segment_id])
            if upserts or deletes:
                self._bump()

    def _upsert(self, segment: Segment, vector: bytes | None, embedder: str | None) -> None:
        # UPSERT, not INSERT OR REPLACE: REPLACE would give the row a new rowid under its index entry.
        self._unindex("id = ?", [segment.id])
        self.db.execute(
            """INSERT INTO knowledge_segments (id, dataset_id, dataset_name, document_id, document_name, position,
                content, answer, keywords, enabled, index_node_hash, updated_at, word_count, vector, embedder)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET dataset_id = excluded.dataset_id, dataset_name = excluded.dataset_name,
                document_id = excluded.document_id, document_name = excluded.document_name,
                position = excluded.position, content = excluded.content, answer = excluded.answer,
                keywords = excluded.keywords, enabled = excluded.enabled,
                index_node_hash = excluded.index_node_hash, updated_at = excluded.updated_at,
                word_count = excluded.word_count, vector = excluded.vector, embedder = excluded.embedder""",
            [
                segment.id,
                segment.dataset_id,
                segment.dataset_name,
                segment.document_id,
                segment.document_name,
                segment.position,
                segment.content,
                segment.answer,
                json.dumps(list(segment.keywords), ensure_ascii=False),
                int(segment.enabled),
                segment.index_node_hash,
                segment.updated_at,
                len((segment.content + " " + (segment.answer or "")).split()),
                vector,
                embedder,
            ],
        )
        self.db.execute(
            "INSERT INTO knowledge_fts (rowid, content, answer, keywords)"
            " SELECT rowid, ?, ?, ? FROM knowledge_segments WHERE id = ?",
            [
                index_text(segment.content),
                index_text(segment.answer or ""),
                index_text(" ".join(segment.keywords)),
                segment.id,
            ],
        )

    def _unindex(self, where: str, params: list[Any]) -> None:
        """Drop the full-text entries of the segments `where` selects (kept in step here, not by triggers,
        because the indexed text is the CJK-split form, which SQL cannot compute)."""
        self.db.execute(
            f"DELETE FROM knowledge_fts WHERE rowid IN (SELECT rowid FROM knowledge_segments WHERE {where})", params
        )

    def delete_dataset(self, dataset_id: str, chunk: int = CHUNK_ROWS, pause_s: float = 0.0) -> int:
        """Delete one dataset's segments, `chunk` rows a transaction, `pause_s` apart (another process waiting
        for the write lock gets it in between); returns how many went."""
        where = "rowid IN (SELECT rowid FROM knowledge_segments WHERE dataset_id = ? ORDER BY rowid LIMIT ?)"
        removed = 0
        while True:
            if removed:
                time.sleep(pause_s)
            with transaction(self.db):
                self._unindex(where, [dataset_id, chunk])
                count = self.db.execute(f"DELETE FROM knowledge_segments WHERE {where}", [dataset_id, chunk]).rowcount
                if count:
                    self._bump()
            removed += count
            if count < chunk:
                return removed

    def fingerprints(self, dataset_id: str) -> dict[str, tuple[int, str, bool]]:
        """Segment id → fingerprint for one dataset, what the sync agent diffs central's listing against."""
        with self._lock:
            rows = self.db.execute(
                "SELECT id, updated_at, index_node_hash, enabled FROM knowledge_segments WHERE dataset_id = ?",
                [dataset_id],
            ).fetchall()
        return {row[0]: (row[1] or 0, row[2] or "", bool(row[3])) for row in rows}

    def dataset_ids(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self.db.execute("SELECT DISTINCT dataset_id FROM knowledge_segments")}

    def ids_by_document(self, dataset_id: str) -> dict[str, set[str]]:
        """Segment ids of one dataset, grouped by document (the sync agent keeps those still indexing)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT document_id, id FROM knowledge_segments WHERE dataset_id = ?", [dataset_id]
            ).fetchall()
        grouped: dict[str, set[str]] = {}
        for document_id, segment_id in rows:
            grouped.setdefault(document_id, set()).add(segment_id)
        return grouped

    def missing_vectors(self, embedder: str, limit: int = 256) -> list[tuple[str, str]]:
        """(id, content) of enabled segments with no vector from `embedder` (new seeds, a changed embedder)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT id, content FROM knowledge_segments WHERE enabled = 1 AND (vector IS NULL OR embedder IS NOT ?)"
                " ORDER BY rowid LIMIT ?",
                [embedder, limit],
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray, embedder: str, contents: Sequence[str]) -> int:
        """Store vectors made for `contents`; a row whose content changed meanwhile keeps waiting."""
        updated = 0
        with transaction(self.db):
            for segment_id, vector, content in zip(ids, vectors, contents, strict=True):
                updated += self.db.execute(
                    "UPDATE knowledge_segments SET vector = ?, embedder = ? WHERE id = ? AND content = ?",
                    [np.asarray(vector, dtype=np.float32).tobytes(), embedder, segment_id, content],
                ).rowcount
            if updated:
                self._bump()
        return updated

    def vector_index(self, embedder: str, dimension: int) -> VectorIndex:
        """The enabled, embedded segments as one matrix; read with the version in one snapshot."""
        with self._lock:
            version = self.version()
            rows = self.db.execute(
                "SELECT id, vector FROM knowledge_segments WHERE enabled = 1 AND embedder = ? AND vector IS NOT NULL"
                " ORDER BY rowid",
                [embedder],
            ).fetchall()
        rows = [row for row in rows if len(row[1]) == dimension * 4]
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), dimension)
        return VectorIndex(version, [row[0] for row in rows], matrix)

    def search_text(self, text: str, limit: int) -> list[str]:
        """Ids of enabled segments matching any word of `text`, best BM25 first."""
        query = fts_query(text)
        if query is None:
            return []
        with self._lock:
            rows = self.db.execute(
                """SELECT s.id FROM knowledge_fts f JOIN knowledge_segments s ON s.rowid = f.rowid
                WHERE knowledge_fts MATCH ? AND s.enabled = 1 ORDER BY bm25(knowledge_fts) LIMIT ?""",
                [query, limit],
            ).fetchall()
        return [row[0] for row in rows]

    def qa_pairs(self, dataset_id: str) -> list[tuple[str, str, str]]:
        """(id, question, answer) of the enabled Q&A segments of one dataset (the annotations)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT id, content, answer FROM knowledge_segments"
                " WHERE dataset_id = ? AND enabled = 1 AND answer IS NOT NULL ORDER BY rowid",
                [dataset_id],
            ).fetchall()
        return [(row[0], row[1], row[2]) for row in rows]

    def get_many(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = list(
                self.db.query(
                    f"SELECT id, dataset_id, dataset_name, document_id, document_name, position, content, answer,"
                    f" index_node_hash, word_count, updated_at FROM knowledge_segments WHERE id IN ({marks})",
                    list(ids),
                )
            )
        return {row["id"]: row for row in rows}

    def _has_document(self, document_id: str) -> bool:
        with self._lock:
            query = "SELECT 1 FROM knowledge_segments WHERE document_id = ? LIMIT 1"
            return self.db.execute(query, [document_id]).fetchone() is not None

    def seed_from_csv(self, path: Path) -> int:
        """Add the `question,answer` rows of `path` as one Q&A document of the seed dataset, unless it
        is there already (a synced or edited copy survives the next boot); returns rows inserted."""
        document_name = path.stem
        document_id = str(uuid.uuid5(SEED_DATASET, document_name))
        if self._has_document(document_id):
            return 0  # seeded on an earlier start: not even read again
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not {"question", "answer"} <= set(reader.fieldnames or []):
                raise InvalidParam(f"{path}: the header must name the columns question and answer")
            rows = []
            for row in reader:
                question, answer = (row.get("question") or "").strip(), (row.get("answer") or "").strip()
                if not question or not answer:
                    raise InvalidParam(f"{path}:{reader.line_num}: question and answer must both be non-empty")
                rows.append((question, answer))
        now = int(self.clock())
        segments = [
            Segment(
                id=str(uuid.uuid5(uuid.UUID(document_id), question)),
                dataset_id=str(SEED_DATASET),
                dataset_name=SEED_DATASET_NAME,
                document_id=document_id,
                document_name=document_name,
                position=position,
                content=question,
                answer=answer,
                index_node_hash=uuid.uuid5(SEED_DATASET, question + "\n" + answer).hex,
                updated_at=now,
            )
            for position, (question, answer) in enumerate(rows, start=1)
        ]
        with transaction(self.db):
            if self._has_document(document_id):
                return 0  # another process seeded it meanwhile
            self.apply(segments, None, None)
        return len(segments)
