"""Intent from a linear head over the bundle's sentence encoder: one forward pass per question.

The encoder's mean-pooled embedding serves retrieval and question matching; the same vector times a
small weight matrix gives the intent. Two encoders of this size would not fit a 4 GB box beside the
LLM, and one pass halves the cost of every question.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from edge.bundle import BundleError, Component
from edge.inference.embedder import Embedder
from edge.inference.intent import (
    CONFIG_FILE,
    IntentConfig,
    IntentPrediction,
    Understanding,
    predict_from_probabilities,
    softmax,
    submit_on,
)
from edge.language import detect
from edge.text import normalise

HEAD_FILE = "head.npz"
HEAD_KIND = "linear"


def is_head_component(component: Component) -> bool:
    return HEAD_FILE in component.fragment.get("files", {})


class HeadClassifier:
    """Answers `understand(text)` (language, intent and embedding); safe to call from several threads."""

    def __init__(
        self,
        embedder: Embedder,
        weight: np.ndarray,
        bias: np.ndarray,
        config: IntentConfig,
        *,
        workers: int = 1,
        top_k: int = 3,
        threshold: float | None = None,
    ) -> None:
        if weight.shape != (len(config.labels), embedder.config.dimension) or bias.shape != (len(config.labels),):
            raise BundleError(
                f"intent head is {weight.shape} + {bias.shape}, expected ({len(config.labels)}, "
                f"{embedder.config.dimension}) for {len(config.labels)} labels over the encoder"
            )
        self.embedder = embedder
        self.config = config
        self.threshold = threshold
        self._weight = weight.astype(np.float32)
        self._bias = bias.astype(np.float32)
        self._top_k = top_k
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="intent") if workers > 1 else None

    @classmethod
    def from_component(
        cls,
        component: Component,
        embedder: Embedder,
        embedder_id: str,
        *,
        workers: int = 1,
        threshold: float | None = None,
    ) -> HeadClassifier:
        data = component.config(CONFIG_FILE)
        if data.get("encoder") != embedder_id:
            raise BundleError(
                f"intent head {component.path} was trained over another encoder than the bundle's embedder "
                "(its `encoder` id differs): rebuild the bundle"
            )
        try:
            with np.load(component.file(HEAD_FILE), allow_pickle=False) as arrays:
                weight, bias = np.asarray(arrays["weight"]), np.asarray(arrays["bias"])
        except (OSError, KeyError, ValueError) as exc:
            raise BundleError(f"{component.file(HEAD_FILE)} is not a readable intent head: {exc}") from exc
        config = IntentConfig.from_dict(data)
        return cls(embedder, weight, bias, config, workers=workers, threshold=threshold)

    def classify_vector(self, vector: np.ndarray, language: str) -> IntentPrediction:
        probabilities = softmax(self._weight @ vector + self._bias)
        return predict_from_probabilities(probabilities, self.config, language, self._top_k, self.threshold)

    def understand(self, text: str) -> Understanding:
        text = normalise(text)
        vector = self.embedder.embed([text])[0]
        language = detect(text)
        return Understanding(language, self.classify_vector(vector, language), vector)

    def submit_understand(self, text: str) -> Future[Understanding]:
        return submit_on(self._pool, self.understand, text)

    def submit(self, text: str) -> Future[IntentPrediction]:
        return submit_on(self._pool, lambda t: self.understand(t).prediction, text)

    def predict(self, texts: Sequence[str]) -> list[IntentPrediction]:
        """Each text on its own (batch 1), so a text's result never depends on the others."""
        if self._pool is None or len(texts) < 2:
            return [self.understand(text).prediction for text in texts]
        return [result.prediction for result in self._pool.map(self.understand, texts)]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
