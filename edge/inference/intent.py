"""The intent classifier of a bundle: INT8 ONNX + tokenizer + labels + out-of-scope threshold.

Every query runs alone at batch 1. Dynamic INT8 quantization computes its activation scale over
the whole input tensor, so in a mixed batch one customer's prediction would depend on who else
was asking; concurrent batch-1 runs on a small thread pool use the cores instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from edge.bundle import BundleError, Component
from edge.inference.onnx import load_tokenizer, make_session
from edge.text import normalise

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "intent.json"


@dataclass(frozen=True)
class IntentPrediction:
    label: str
    confidence: float
    top_k: tuple[tuple[str, float], ...]
    out_of_scope: bool

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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntentConfig:
        try:
            labels = tuple(str(label) for label in data["labels"])
            config = cls(
                labels=labels,
                max_length=int(data["max_length"]),
                threshold=float(data["threshold"]),
                oos_label=data.get("oos_label"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"intent config is incomplete or malformed: {exc!r}") from exc
        if not labels or len(set(labels)) != len(labels):
            raise BundleError("intent config must list distinct labels")
        return config

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "max_length": self.max_length,
            "threshold": self.threshold,
            "oos_label": self.oos_label,
        }


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
    ) -> None:
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
        cls, model: Path, tokenizer: Path, config: IntentConfig, *, threads: int = 1, workers: int = 1
    ) -> IntentClassifier:
        return cls(make_session(model, threads), load_tokenizer(tokenizer, config.max_length), config, workers=workers)

    @classmethod
    def from_component(cls, component: Component, *, threads: int = 1, workers: int = 1) -> IntentClassifier:
        """Load a verified component (see `edge.bundle`)."""
        config = IntentConfig.from_dict(component.config(CONFIG_FILE))
        return cls.from_files(
            component.file(MODEL_FILE), component.file(TOKENIZER_FILE), config, threads=threads, workers=workers
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
        probabilities = softmax(self.logits(normalise(text)))
        order = np.argsort(-probabilities, kind="stable")
        labels = self.config.labels
        best = int(order[0])
        confidence = float(probabilities[best])
        label = labels[best]
        top = tuple((labels[int(i)], float(probabilities[int(i)])) for i in order[: self._top_k])
        out_of_scope = confidence < self.config.threshold or label == self.config.oos_label
        return IntentPrediction(label=label, confidence=confidence, top_k=top, out_of_scope=out_of_scope)

    def submit(self, text: str) -> Future[IntentPrediction]:
        """Classify one text on the worker pool: at most `workers` ONNX runs at once, whoever calls."""
        if self._pool is None:
            future: Future[IntentPrediction] = Future()
            try:
                future.set_result(self._predict_one(text))
            except Exception as exc:  # hand any failure to the awaiting caller
                future.set_exception(exc)
            return future
        return self._pool.submit(self._predict_one, text)

    def predict(self, texts: Sequence[str]) -> list[IntentPrediction]:
        """Classify each text on its own; the result for a text never depends on the others."""
        if self._pool is None or len(texts) < 2:
            return [self._predict_one(text) for text in texts]
        return list(self._pool.map(self._predict_one, texts))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
