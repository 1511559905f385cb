"""Hybrid retrieval over the box's knowledge: embedder cosine and SQLite FTS5, fused by rank.

Vector search finds paraphrases ("parcel" for "delivery"); full-text search finds rare exact words
(a product name, an order-page label) that a small encoder blurs. Reciprocal-rank fusion orders the
union without calibrating BM25 against cosine; relevance is then gated on cosine alone, the one
score comparable across questions, so "nothing relevant" can end in a hand-off.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.inference.embedder import Embedder
from edge.store.knowledge import KnowledgeStore, VectorIndex

log = logging.getLogger(__name__)
RRF_K = 60  # the constant of Cormack et al. (2009); damps the head of each ranking


@dataclass(frozen=True)
class RetrievalConfig:
    top_k: int = 2
    candidates: int = 20
    min_score: float = 0.5
    text_weight: float = 0.25  # full-text rank's share of the fused score (vector rank counts 1)


@dataclass(frozen=True)
class Hit:
    segment: dict[str, Any]
    score: float  # cosine between the question and the segment's content
    rank_score: float  # fused reciprocal-rank score, what hits are ordered by


class Retriever:
    """Searches a KnowledgeStore; keeps its vectors in memory and reloads them when the store changes."""

    def __init__(self, store: KnowledgeStore, embedder: Embedder, embedder_id: str, config: RetrievalConfig) -> None:
        self.store = store
        self.embedder = embedder
        self.embedder_id = embedder_id
        self.config = config
        self._index: VectorIndex | None = None
        self._lock = threading.Lock()

    def _current(self) -> VectorIndex:
        version = self.store.version()
        with self._lock:
            if self._index is None or self._index.version != version:
                self._index = self.store.vector_index(self.embedder_id, self.embedder.config.dimension)
            return self._index

    def search(self, query: str, vector: np.ndarray | None = None) -> list[Hit]:
        """The most relevant enabled segments, best first; empty when nothing reaches `min_score`.
        `vector`: the question's embedding when the caller already has it (one encoder pass a question)."""
        index = self._current()
        if not index.ids:
            return []
        if vector is None:
            vector = self.embedder.embed([query])[0]
        cosine = index.matrix @ vector
        position = {segment_id: i for i, segment_id in enumerate(index.ids)}
        limit = min(self.config.candidates, len(index.ids))
        by_vector = np.argpartition(-cosine, limit - 1)[:limit]
        by_vector = by_vector[np.argsort(-cosine[by_vector], kind="stable")]
        by_text = [position[i] for i in self.store.search_text(query, self.config.candidates) if i in position]
        fused: dict[int, float] = {}
        for ranking, weight in ((by_vector.tolist(), 1.0), (by_text, self.config.text_weight)):
            for rank, row in enumerate(ranking):
                fused[row] = fused.get(row, 0.0) + weight / (RRF_K + rank + 1)
        relevant = [row for row in fused if cosine[row] >= self.config.min_score]
        relevant.sort(key=lambda row: (-fused[row], -cosine[row]))
        chosen = relevant[: self.config.top_k]
        segments = self.store.get_many([index.ids[row] for row in chosen])
        return [
            Hit(segments[index.ids[row]], float(cosine[row]), fused[row])
            for row in chosen
            if index.ids[row] in segments
        ]

    def index_missing(self, batch: int = 64, stop: threading.Event | None = None) -> int:
        """Embed every segment that has no vector from this embedder yet; returns how many were stored.
        Each batch commits on its own, so an interrupted run resumes where it stopped."""
        stored = 0
        while stop is None or not stop.is_set():
            pending = self.store.missing_vectors(self.embedder_id, batch)
            if not pending:
                return stored
            ids, contents = [p[0] for p in pending], [p[1] for p in pending]
            vectors = self.embedder.embed(contents)
            written = self.store.set_vectors(ids, vectors, self.embedder_id, contents)
            stored += written
            if written == 0:  # every row changed under us; the next listing has the new content
                continue
            log.debug("indexed knowledge", extra={"segments": stored})
        return stored
