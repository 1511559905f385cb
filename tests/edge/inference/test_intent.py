"""The runtime classifier on a real INT8 component (built once per session)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import BundleError, load_component
from edge.inference.intent import IntentClassifier

pytestmark = pytest.mark.slow

QUERIES = [
    "I want to cancel my order",
    "where is my refund",
    "how long does delivery take",
    "which payment methods do you accept",
    "delete my account please",
    "I need to change the shipping address",
    "ok",
    "this is a much longer question about something that is not really related to any of the intents at all",
]


@pytest.fixture(scope="module")
def classifier(intent_build: tuple[Path, dict]) -> IntentClassifier:
    loaded = IntentClassifier.from_component(load_component(intent_build[0]), workers=2)
    yield loaded
    loaded.close()


def test_answer_does_not_depend_on_who_else_is_asking(classifier: IntentClassifier) -> None:
    alone = {text: classifier.predict([text])[0] for text in QUERIES}
    together = classifier.predict(QUERIES * 3)
    for text, prediction in zip(QUERIES * 3, together, strict=True):
        assert prediction == alone[text]  # bit-identical confidence, not just the same label
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda t: classifier.predict([t, *QUERIES])[0], QUERIES))
    assert [p.confidence for p in concurrent] == [alone[t].confidence for t in QUERIES]


def test_mixed_batches_would_not_be_invariant(intent_build: tuple[Path, dict], classifier: IntentClassifier) -> None:
    """Why the runtime never batches: a padded INT8 batch changes a query's logits."""
    from edge.inference.onnx import make_session

    session = make_session(intent_build[0] / "model.onnx", 1)
    tokenizer = classifier._tokenizer
    tokenizer.enable_padding()
    try:
        encodings = tokenizer.encode_batch(QUERIES)
    finally:
        tokenizer.no_padding()
    feeds = {
        "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
    }
    batched = session.run(None, feeds)[0]
    single = np.stack([classifier.logits(text) for text in QUERIES])
    assert not np.array_equal(batched, single)


def test_prediction_fields(classifier: IntentClassifier) -> None:
    prediction = classifier.predict(["I want to cancel my order"])[0]
    assert prediction.label == "order.cancel_order" and prediction.domain == "order"
    assert prediction.top_k[0] == (prediction.label, prediction.confidence)
    assert len(prediction.top_k) == 3
    assert sum(p for _, p in prediction.top_k) <= 1.0 + 1e-9
    assert prediction.out_of_scope == (prediction.confidence < classifier.config.threshold)


def test_messy_input_is_normalised_before_classifying(classifier: IntentClassifier) -> None:
    clean = classifier.predict(["I want to cancel my order"])[0]
    messy = classifier.predict(["  I want\u200b to\tcancel my  order\ud800 "])[0]
    assert messy == clean
    assert classifier.predict([""])[0].label in classifier.config.labels


def test_checksum_mismatch_is_refused(intent_build: tuple[Path, dict], tmp_path: Path) -> None:
    copy = shutil.copytree(intent_build[0], tmp_path / "intent")
    with (copy / "model.onnx").open("r+b") as handle:
        handle.seek(-100, 2)
        handle.write(b"\x00" * 10)
    with pytest.raises(BundleError, match=r"model\.onnx fails its checksum"):
        load_component(copy)
