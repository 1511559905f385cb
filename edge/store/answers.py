"""The bank's curated answers: a fixed reply per label and language, seeded from a CSV, editable later.

Seeding never overwrites: a store manager's edit (or a synced annotation) must survive the next
boot, when the bundled CSV is offered again. A label may have an answer in some languages only; the
assistant then hands a shopper of another language to staff rather than answer in the wrong one.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from edge.language import LANGUAGES
from edge.store.db import connection_lock, transaction
from edge.store.errors import InvalidParam

SEED_SOURCE = "seed"


AnswerRow = tuple[str, str, str | None, str]  # label, language, question, answer


def read_answers_csv(path: Path) -> list[AnswerRow]:
    """The rows of an answers CSV: `label,language,question,answer` (`question` optional), or the older
    `label,answer`, read as English. Raises InvalidParam on the first bad row."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"label", "answer"} <= set(reader.fieldnames or []):
            raise InvalidParam(f"{path}: the header must name the columns label and answer (and language)")
        rows: list[AnswerRow] = []
        for row in reader:
            label, answer = (row.get("label") or "").strip(), (row.get("answer") or "").strip()
            language = (row.get("language") or "en").strip()
            if not label or not answer:
                raise InvalidParam(f"{path}:{reader.line_num}: label and answer must both be non-empty")
            if language not in LANGUAGES:
                raise InvalidParam(f"{path}:{reader.line_num}: language must be one of {', '.join(LANGUAGES)}")
            rows.append((label, language, (row.get("question") or "").strip() or None, answer))
    return rows


def bank_of(rows: list[AnswerRow]) -> dict[str, dict[str, str]]:
    """label → language → answer (the first row of a pair wins, as in seeding)."""
    bank: dict[str, dict[str, str]] = {}
    for label, language, _, answer in rows:
        bank.setdefault(label, {}).setdefault(language, answer)
    return bank


class CuratedAnswers:
    """The `bank_answers` table: (label, language) → answer, with the canonical question."""

    def __init__(self, db: sqlite_utils.Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def seed_from_csv(self, path: Path) -> int:
        """Insert the (label, language) answers of `path` not stored yet; return how many.
        A malformed file inserts nothing: a half-seeded box would answer some intents and not others."""
        rows = read_answers_csv(path)
        now, inserted = int(self.clock()), 0
        with transaction(self.db):
            for label, language, question, answer in rows:
                cursor = self.db.execute(
                    "INSERT INTO bank_answers (label, language, question, answer, source, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (label, language) DO NOTHING",
                    [label, language, question, answer, SEED_SOURCE, now],
                )
                inserted += cursor.rowcount
        return inserted

    def get(self, label: str, language: str = "en") -> str | None:
        """The answer for `label` in `language`, or None when there is none."""
        with connection_lock(self.db):
            row = self.db.execute(
                "SELECT answer FROM bank_answers WHERE label = ? AND language = ?", [label, language]
            ).fetchone()
        return row[0] if row else None

    def upsert(self, label: str, answer: str, source: str, language: str = "en", question: str | None = None) -> None:
        """Set the answer for `label` in `language`, recording where it came from (e.g. 'admin')."""
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO bank_answers (label, language, question, answer, source, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (label, language) DO UPDATE SET answer = excluded.answer,"
                " question = coalesce(excluded.question, question), source = excluded.source,"
                " updated_at = excluded.updated_at",
                [label, language, question, answer, source, int(self.clock())],
            )

    def all(self) -> dict[str, dict[str, str]]:
        """Every label with its answer per language, ordered by label."""
        with connection_lock(self.db):
            rows = self.db.execute("SELECT label, language, answer FROM bank_answers ORDER BY label, language")
            bank: dict[str, dict[str, str]] = {}
            for label, language, answer in rows.fetchall():
                bank.setdefault(label, {})[language] = answer
        return bank
