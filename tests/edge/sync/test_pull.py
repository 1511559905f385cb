"""The knowledge diff: only what changed is embedded and written, deletions and disabling mirror central."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edge.store.db import open_database
from edge.store.knowledge import ANNOTATIONS_DATASET, KnowledgeStore, Segment
from edge.sync.pull import annotation_segment, apply_diff


class CountingEmbedder:
    """Deterministic vectors from the text's hash; counts what it was asked to embed."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.seen.extend(texts)
        rows = [
            np.frombuffer(hashlib.sha256(t.encode()).digest()[:16], dtype=np.uint8).astype(np.float32) for t in texts
        ]
        matrix = np.stack(rows) + 1.0
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def seg(segment_id: str, content: str, updated_at: int = 1, enabled: bool = True) -> Segment:
    return Segment(
        id=segment_id,
        dataset_id="ds",
        document_id="doc",
        content=content,
        updated_at=updated_at,
        index_node_hash=hashlib.md5(content.encode()).hexdigest(),
        enabled=enabled,
    )


@pytest.fixture
def store(tmp_path: Path) -> KnowledgeStore:
    return KnowledgeStore(open_database(tmp_path / "k.db"))


def test_second_pull_touches_only_what_changed(store: KnowledgeStore) -> None:
    embedder = CountingEmbedder()
    central = [seg(f"s{i}", f"text {i}") for i in range(100)]
    assert apply_diff(store, "ds", central, embedder, "e") == (100, 0)
    embedder.seen.clear()
    version = store.version()
    assert apply_diff(store, "ds", central, embedder, "e") == (0, 0)
    assert embedder.seen == [] and store.version() == version  # nothing changed, nothing written
    central[3] = seg("s3", "text 3 edited", updated_at=2)
    central[7] = seg("s7", "text 7", updated_at=1, enabled=False)
    del central[50]
    assert apply_diff(store, "ds", central, embedder, "e") == (1, 1)
    assert embedder.seen == ["text 3 edited"]  # a disabled segment costs no embedding
    assert store.search_text("edited", 5) == ["s3"]
    assert store.search_text("7", 5) == []  # disabled: not searched
    assert "s50" not in store.fingerprints("ds") and store.fingerprints("ds")["s7"][2] is False
    assert store.missing_vectors("e") == [] and "s7" not in store.vector_index("e", 16).ids


def test_still_indexing_documents_are_kept(store: KnowledgeStore) -> None:
    embedder = CountingEmbedder()
    apply_diff(store, "ds", [seg("a", "alpha"), seg("b", "beta")], embedder, "e")
    assert apply_diff(store, "ds", [seg("a", "alpha")], embedder, "e", keep={"b"}) == (0, 0)
    assert set(store.fingerprints("ds")) == {"a", "b"}


def test_annotations_diff_on_question_and_answer() -> None:
    first = annotation_segment({"id": "n1", "question": "Do you open on Sunday?", "answer": "Yes, 10-16."})
    same = annotation_segment({"id": "n1", "question": "Do you open on Sunday?", "answer": "Yes, 10-16."})
    edited = annotation_segment({"id": "n1", "question": "Do you open on Sunday?", "answer": "No."})
    assert first.fingerprint() == same.fingerprint() != edited.fingerprint()
    assert first.dataset_id == ANNOTATIONS_DATASET and first.answer == "Yes, 10-16."
