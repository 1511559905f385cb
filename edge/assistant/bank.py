"""The bank of verbatim answers as the server holds it in memory, kept in step with the database.

Curated answers (label → language → answer) and central's annotations (exact question → segment)
are read once and reloaded only when the sync agent changed knowledge; a change of the answers
themselves empties the hot-answer cache, which may hold a replaced answer.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool

from edge.assistant.cache import AnswerCache, cache_key
from edge.assistant.policy import Variables, slots
from edge.language import LANGUAGES, pick
from edge.store.answers import CuratedAnswers
from edge.store.knowledge import ANNOTATIONS_DATASET, ANNOTATIONS_NAME, KnowledgeStore

log = logging.getLogger(__name__)


def missing_variables(bank: Mapping[str, Mapping[str, str]], variables: Variables) -> dict[str, list[str]]:
    """Slot → the languages in which answers use it and the settings give it no value."""
    missing: dict[str, set[str]] = {}
    for answers in bank.values():
        for language, answer in answers.items():
            for slot in slots(answer):
                value = variables.get(slot)
                if value is None or not pick(value, language):
                    missing.setdefault(slot, set()).add(language)
    return {slot: sorted(languages, key=LANGUAGES.index) for slot, languages in sorted(missing.items())}


class BankView:
    """Curated answers and annotations in memory; `refresh()` follows the database every few seconds."""

    def __init__(
        self,
        curated: CuratedAnswers,
        knowledge: KnowledgeStore | None,
        cache: AnswerCache[Any],
        refresh_s: float,
    ) -> None:
        self._store = curated
        self._knowledge = knowledge
        self._cache = cache
        self._refresh_s = refresh_s
        self.answers: dict[str, dict[str, str]] = curated.all()
        self.annotations: dict[str, dict[str, Any]] = {}  # cache_key(question) → segment
        self._version: int | None = None
        self._checked = -math.inf

    async def refresh(self) -> None:
        if self._knowledge is None:
            return
        now = time.monotonic()
        if now - self._checked < self._refresh_s:
            return
        self._checked = now
        version = await run_in_threadpool(self._knowledge.version)
        if version == self._version:
            return
        pairs = await run_in_threadpool(self._knowledge.qa_pairs, ANNOTATIONS_DATASET)
        annotations = {
            cache_key(question): {
                "id": segment_id,
                "dataset_id": ANNOTATIONS_DATASET,
                "dataset_name": ANNOTATIONS_NAME,
                "document_id": ANNOTATIONS_DATASET,
                "document_name": ANNOTATIONS_NAME,
                "content": question,
                "answer": answer,
            }
            for segment_id, question, answer in pairs
        }
        answers = await run_in_threadpool(self._store.all)
        if annotations != self.annotations or answers != self.answers:
            # Only a change of the answers themselves empties the cache: segments being embedded or
            # edited move the version too, and must not cost the cache its hits.
            self._cache.clear()
        self.annotations, self.answers = annotations, answers
        self._version = version

    def annotation(self, query: str) -> dict[str, Any] | None:
        """Central's annotation for exactly this question (normalised), if there is one."""
        return self.annotations.get(cache_key(query))
