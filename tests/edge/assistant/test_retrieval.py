"""Hybrid retrieval: the real INT8 embedder over the shipped store FAQ, and the fusion rules on fixed vectors."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from edge.assistant.retrieval import RetrievalConfig, Retriever
from edge.bundle import load_component
from edge.inference.embedder import Embedder, EmbedderConfig, embedder_id
from edge.store.db import open_database
from edge.store.knowledge import KnowledgeStore, Segment

STORE_FAQ = Path(__file__).resolve().parents[3] / "models" / "data" / "knowledge" / "store_faq.csv"


@pytest.fixture(scope="module")
def embedder_component(embedder_build: tuple[Path, dict]):
    return load_component(embedder_build[0])


@pytest.fixture
def seeded(tmp_path: Path, embedder_component) -> Retriever:
    store = KnowledgeStore(open_database(tmp_path / "k.db"))
    store.seed_from_csv(STORE_FAQ)
    embedder = Embedder.from_component(embedder_component)
    return Retriever(store, embedder, embedder_id(embedder_component), RetrievalConfig(top_k=2, min_score=0.5))


@pytest.mark.slow
def test_seed_is_indexed_then_found_by_paraphrase(seeded: Retriever) -> None:
    assert seeded.search("Is there parking at the store?") == []  # nothing has a vector yet
    assert seeded.index_missing(batch=7) == seeded.store.count() == 30
    assert seeded.index_missing() == 0
    hits = seeded.search("do you allow pets")
    assert hits and hits[0].segment["content"] == "Are dogs allowed in the store?"
    assert 0.5 <= hits[0].score <= 1.0 and len(hits) <= 2
    assert seeded.search("What is the capital of France?") == []


@pytest.mark.slow
def test_changes_are_seen_at_the_next_question(seeded: Retriever) -> None:
    seeded.index_missing()
    target = seeded.search("do you allow pets")[0].segment
    changed = Segment(
        id=target["id"],
        dataset_id=target["dataset_id"],
        document_id=target["document_id"],
        content="Are dogs allowed in the store?",
        answer="No animals at all, sorry.",
        enabled=False,
    )
    seeded.store.apply([changed], seeded.embedder.embed([changed.content]), seeded.embedder_id)
    assert all(hit.segment["id"] != target["id"] for hit in seeded.search("do you allow pets"))
    seeded.store.apply([Segment(**{**changed.__dict__, "enabled": True})], None, None)
    seeded.index_missing()
    assert seeded.search("do you allow pets")[0].segment["answer"] == "No animals at all, sorry."


@pytest.mark.slow
def test_indexing_stops_when_asked(seeded: Retriever) -> None:
    stop = threading.Event()
    stop.set()
    assert seeded.index_missing(stop=stop) == 0


@dataclass
class FixedEmbedder:
    """Vectors chosen by the test, so the fusion rule itself is what is checked."""

    vectors: dict[str, np.ndarray]
    config: EmbedderConfig = field(default_factory=lambda: EmbedderConfig(max_length=16, dimension=3))

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vectors[text] for text in texts])


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_full_text_match_lifts_an_exact_word_above_a_slightly_closer_vector(tmp_path: Path) -> None:
    vectors = {
        "returns desk": unit(1.0, 0.0, 0.0),
        "the ZX-81 charger is sold at the electronics counter": unit(0.9, 0.3, 0.0),
        "garden furniture": unit(0.0, 0.0, 1.0),
        "ZX-81 charger": unit(1.0, 0.1, 0.0),
    }
    store = KnowledgeStore(open_database(tmp_path / "k.db"))
    texts = list(vectors)[:3]
    store.apply(
        [Segment(id=f"s{i}", dataset_id="d", document_id="doc", content=t) for i, t in enumerate(texts)],
        np.stack([vectors[t] for t in texts]),
        "fixed",
    )
    retriever = Retriever(store, FixedEmbedder(vectors), "fixed", RetrievalConfig(top_k=3, min_score=0.5))  # type: ignore[arg-type]
    hits = retriever.search("ZX-81 charger")
    assert [hit.segment["id"] for hit in hits] == ["s1", "s0"]  # garden furniture is under min_score
    assert hits[1].score > hits[0].score  # the vector alone preferred s0; the exact words decided
