"""The sentence embedder of a bundle: mean-pooled, L2-normalised INT8 encoder for retrieval."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
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
CONFIG_FILE = "embedder.json"


@dataclass(frozen=True)
class EmbedderConfig:
    max_length: int
    dimension: int
    # Put before every text: E5 models are trained with "query: " (symmetric matching of questions).
    prefix: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedderConfig:
        try:
            return cls(
                max_length=int(data["max_length"]), dimension=int(data["dimension"]), prefix=str(data.get("prefix", ""))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"embedder config is incomplete or malformed: {exc!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "dimension": self.dimension,
            "pooling": "mean",
            "normalized": True,
            "prefix": self.prefix,
        }


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors that the attention mask keeps, L2-normalised."""
    weights = mask[..., None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    pooled = summed / counts
    norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    return (pooled / norms).astype(np.float32)


def embedder_id(component: Component) -> str:
    """Names the vector space: vectors from different model or tokenizer files must never be compared."""
    files = component.fragment.get("files", {})
    digest = hashlib.sha256()
    for name in (MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE):
        digest.update(str(files.get(name, {}).get("sha256", "")).encode())
    return digest.hexdigest()


class Embedder:
    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer, config: EmbedderConfig) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self.config = config
        self._inputs = {item.name for item in session.get_inputs()}
        self._output = session.get_outputs()[0].name

    @classmethod
    def from_files(cls, model: Path, tokenizer: Path, config: EmbedderConfig, *, threads: int = 1) -> Embedder:
        return cls(make_session(model, threads), load_tokenizer(tokenizer, config.max_length), config)

    @classmethod
    def from_component(cls, component: Component, *, threads: int = 1) -> Embedder:
        config = EmbedderConfig.from_dict(component.config(CONFIG_FILE))
        return cls.from_files(component.file(MODEL_FILE), component.file(TOKENIZER_FILE), config, threads=threads)

    def _embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        prefix = self.config.prefix
        encodings = self._tokenizer.encode_batch([prefix + normalise(text) for text in texts])
        width = max(len(encoding.ids) for encoding in encodings)

        def padded(rows: list[list[int]]) -> np.ndarray:
            return np.asarray([row + [0] * (width - len(row)) for row in rows], dtype=np.int64)

        feeds = {
            "input_ids": padded([e.ids for e in encodings]),
            "attention_mask": padded([e.attention_mask for e in encodings]),
            "token_type_ids": padded([e.type_ids for e in encodings]),
        }
        feeds = {name: value for name, value in feeds.items() if name in self._inputs}
        (hidden,) = self._session.run([self._output], feeds)
        return mean_pool(np.asarray(hidden), feeds["attention_mask"])

    def embed(self, texts: Sequence[str], *, batch_size: int = 1) -> np.ndarray:
        """Unit vectors, shape (len(texts), dimension).

        The default batch size of 1 makes a text's vector independent of its neighbours (dynamic
        INT8 is not batch-invariant); bulk indexing may trade that for speed with a larger batch.
        """
        if not texts:
            return np.zeros((0, self.config.dimension), dtype=np.float32)
        if batch_size <= 1:
            return np.concatenate([self._embed_batch([text]) for text in texts])
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.zeros((len(texts), self.config.dimension), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            vectors[chunk] = self._embed_batch([texts[i] for i in chunk])
        return vectors
