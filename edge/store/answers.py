"""Curated answers: fixed replies keyed by intent label, seeded from a CSV and editable later.

Seeding never overwrites: a store manager's edit (or a synced annotation) must survive the next
boot, when the bundled CSV is offered again.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from edge.store.db import connection_lock, transaction
from edge.store.errors import InvalidParam

SEED_SOURCE = "seed"


class CuratedAnswers:
    """The `curated_answers` table."""

    def __init__(self, db: sqlite_utils.Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def seed_from_csv(self, path: Path) -> int:
        """Insert the labels in `path` (header `label,answer`) that are not stored yet; return how many.

        A malformed file inserts nothing: a half-seeded box would answer some intents and not others.
        """
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not {"label", "answer"} <= set(reader.fieldnames or []):
                raise InvalidParam(f"{path}: the header must name the columns label and answer")
            rows = []
            for row in reader:
                label, answer = (row.get("label") or "").strip(), (row.get("answer") or "").strip()
                if not label or not answer:
                    raise InvalidParam(f"{path}:{reader.line_num}: label and answer must both be non-empty")
                rows.append((label, answer))
        now, inserted = int(self.clock()), 0
        with transaction(self.db):
            for label, answer in rows:
                cursor = self.db.execute(
                    "INSERT INTO curated_answers (label, answer, source, updated_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (label) DO NOTHING",
                    [label, answer, SEED_SOURCE, now],
                )
                inserted += cursor.rowcount
        return inserted

    def get(self, label: str) -> str | None:
        """The answer for `label`, or None when there is none."""
        with connection_lock(self.db):
            row = self.db.execute("SELECT answer FROM curated_answers WHERE label = ?", [label]).fetchone()
        return row[0] if row else None

    def upsert(self, label: str, answer: str, source: str) -> None:
        """Set the answer for `label`, recording where it came from (e.g. 'admin', 'dify-annotation')."""
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO curated_answers (label, answer, source, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (label) DO UPDATE SET answer = excluded.answer, source = excluded.source,"
                " updated_at = excluded.updated_at",
                [label, answer, source, int(self.clock())],
            )

    def all(self) -> dict[str, str]:
        """Every label and its answer, ordered by label."""
        with connection_lock(self.db):
            rows = self.db.execute("SELECT label, answer FROM curated_answers ORDER BY label").fetchall()
        return dict(rows)
