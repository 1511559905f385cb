"""The intent classifier of a bundle: INT8 ONNX + tokenizer + labels + out-of-scope threshold.

Every query runs alone at batch 1. Dynamic INT8 quantization computes its activation scale over
the whole input tensor, so in a mixed batch one customer's prediction would depend on who else
was asking; concurrent batch-1 runs on a small thread pool use the cores instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from edge.bundle import BundleError, Component
from edge.inference.onnx import load_tokenizer, make_session
from edge.language import detect
from edge.text import normalise

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "intent.json"


@dataclass(frozen=True)
class IntentPrediction:
    label: str
    confidence: float
    top_k: tuple[tuple[str, float], ...]
    out_of_scope: bool  # the model abstains, or is less confident than its threshold
    abstains: bool = False  # the label is the out-of-scope class itself

    @property
    def domain(self) -> str:
        """The first level of a hierarchical label (`order` of `order.cancel_order`)."""
        return self.label.split(".", 1)[0]


@dataclass(frozen=True)
class IntentConfig:
    labels: tuple[str, ...]
    max_length: int
    threshold: float
    oos_label: str | None = None
    # Calibrated per language where the held-out data had that language; `threshold` otherwise.
    thresholds: dict[str, float] = field(default_factory=dict)
    # Cosine thresholds for matching questions to Q&A items and passages, per language (see calibrate).
    match_thresholds: dict[str, float] = field(default_factory=dict)
    passage_thresholds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntentConfig:
        try:
            labels = tuple(str(label) for label in data["labels"])

            def floats(key: str) -> dict[str, float]:
                return {str(k): float(v) for k, v in (data.get(key) or {}).items()}

            config = cls(
                labels=labels,
                max_length=int(data["max_length"]),
                threshold=float(data["threshold"]),
                oos_label=data.get("oos_label"),
                thresholds=floats("thresholds"),
                match_thresholds=floats("match_thresholds"),
                passage_thresholds=floats("passage_thresholds"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"intent config is incomplete or malformed: {exc!r}") from exc
        if not labels or len(set(labels)) != len(labels):
            raise BundleError("intent config must list distinct labels")
        return config

    def threshold_for(self, language: str) -> float:
        return self.thresholds.get(language, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "max_length": self.max_length,
            "threshold": self.threshold,
            "oos_label": self.oos_label,
            "thresholds": self.thresholds,
            "match_thresholds": self.match_thresholds,
            "passage_thresholds": self.passage_thresholds,
        }


@dataclass(frozen=True)
class Understanding:
    """One question as the models see it: its language, its intent and (when computed) its embedding."""

    language: str
    prediction: IntentPrediction
    vector: np.ndarray | None = None


def predict_from_probabilities(
    probabilities: np.ndarray, config: IntentConfig, language: str, top_k: int, threshold: float | None = None
) -> IntentPrediction:
    order = np.argsort(-probabilities, kind="stable")
    labels = config.labels
    best = int(order[0])
    confidence = float(probabilities[best])
    label = labels[best]
    top = tuple((labels[int(i)], float(probabilities[int(i)])) for i in order[:top_k])
    floor = config.threshold_for(language) if threshold is None else threshold
    abstains = label == config.oos_label
    return IntentPrediction(label, confidence, top, confidence < floor or abstains, abstains)


T = TypeVar("T")


def submit_on(pool: ThreadPoolExecutor | None, work: Callable[[str], T], text: str) -> Future[T]:
    """Run `work` on the pool, or inline (still as a future) without one."""
    if pool is None:
        future: Future[T] = Future()
        try:
            future.set_result(work(text))
        except Exception as exc:  # hand any failure to the awaiting caller
            future.set_exception(exc)
        return future
    return pool.submit(work, text)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class IntentClassifier:
    """Answers `predict(texts)`; safe to call from several threads at once."""

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        config: IntentConfig,
        *,
        workers: int = 1,
        top_k: int = 3,
        threshold: float | None = None,
    ) -> None:
        self.threshold = threshold  # overrides the calibrated thresholds when set
        self._session = session
        self._tokenizer = tokenizer
        self.config = config
        self._top_k = top_k
        self._inputs = {item.name for item in session.get_inputs()}
        outputs = session.get_outputs()
        if not outputs:
            raise BundleError("intent model has no outputs")
        self._output = outputs[0].name
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="intent") if workers > 1 else None

    @classmethod
    def from_files(
        cls,
        model: Path,
        tokenizer: Path,
        config: IntentConfig,
        *,
        threads: int = 1,
        workers: int = 1,
        threshold: float | None = None,
    ) -> IntentClassifier:
        session, loaded = make_session(model, threads), load_tokenizer(tokenizer, config.max_length)
        return cls(session, loaded, config, workers=workers, threshold=threshold)

    @classmethod
    def from_component(
        cls, component: Component, *, threads: int = 1, workers: int = 1, threshold: float | None = None
    ) -> IntentClassifier:
        """Load a verified component (see `edge.bundle`)."""
        config = IntentConfig.from_dict(component.config(CONFIG_FILE))
        return cls.from_files(
            component.file(MODEL_FILE),
            component.file(TOKENIZER_FILE),
            config,
            threads=threads,
            workers=workers,
            threshold=threshold,
        )

    def encode(self, text: str) -> dict[str, np.ndarray]:
        """The model inputs of one normalised text, at batch 1 and without padding."""
        encoding = self._tokenizer.encode(text)
        feeds = {
            "input_ids": np.asarray([encoding.ids], dtype=np.int64),
            "attention_mask": np.asarray([encoding.attention_mask], dtype=np.int64),
            "token_type_ids": np.asarray([encoding.type_ids], dtype=np.int64),
        }
        return {name: value for name, value in feeds.items() if name in self._inputs}

    def logits(self, text: str) -> np.ndarray:
        """Raw logits of one text (already normalised), shape (num_labels,)."""
        (output,) = self._session.run([self._output], self.encode(text))
        return np.asarray(output[0])

    def _predict_one(self, text: str) -> IntentPrediction:
        return self.understand(text).prediction

    def understand(self, text: str) -> Understanding:
        """The intent of one text; this model computes no embedding (retrieval runs its own embedder)."""
        text = normalise(text)
        language = detect(text)
        probabilities = softmax(self.logits(text))
        prediction = predict_from_probabilities(probabilities, self.config, language, self._top_k, self.threshold)
        return Understanding(language, prediction)

    def submit_understand(self, text: str) -> Future[Understanding]:
        return submit_on(self._pool, self.understand, text)

    def submit(self, text: str) -> Future[IntentPrediction]:
        """Classify one text on the worker pool: at most `workers` ONNX runs at once, whoever calls."""
        return submit_on(self._pool, self._predict_one, text)

    def predict(self, texts: Sequence[str]) -> list[IntentPrediction]:
        """Classify each text on its own; the result for a text never depends on the others."""
        if self._pool is None or len(texts) < 2:
            return [self._predict_one(text) for text in texts]
        return list(self._pool.map(self._predict_one, texts))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
