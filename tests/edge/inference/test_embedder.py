from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.bundle import load_component
from edge.inference.embedder import Embedder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder(embedder_build: tuple[Path, dict]) -> Embedder:
    return Embedder.from_component(load_component(embedder_build[0]))


def test_vectors_are_unit_length_and_meaningful(embedder: Embedder) -> None:
    vectors = embedder.embed(["How do I get my money back?", "I want a refund", "The weather is sunny today"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_bulk_batches_stay_close_to_single_runs(embedder: Embedder) -> None:
    texts = ["refund", "cancel my order please", "where is the store", "delivery took far too long, what now?"] * 5
    single = embedder.embed(texts)
    bulk = embedder.embed(texts, batch_size=8)
    assert ((single * bulk).sum(axis=1) > 0.98).all()
    assert embedder.embed([]).shape == (0, 384)


def test_report_shows_int8_fidelity(embedder_build: tuple[Path, dict]) -> None:
    _, report = embedder_build
    assert report["fidelity"]["mean_cosine"] > 0.95
    assert report["int8"]["size_bytes"] < report["fp32"]["size_bytes"] / 3
