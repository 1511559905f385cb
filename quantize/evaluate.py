"""Measure an intent model on held-out data: quality, latency and throughput.

Predictions go through the runtime's own classifier (`edge.inference.intent`), so what is measured
is what the box will run: same tokenizer settings, same batch-1 inference, same normaliser.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.inference.intent import IntentClassifier, IntentConfig, softmax
from edge.text import normalise
from quantize.data import Example


@dataclass(frozen=True)
class Scored:
    """Per-example outputs of one model on the held-out split."""

    predicted: list[str]
    confidence: np.ndarray
    logits: np.ndarray
    latencies_ms: np.ndarray


def score(classifier: IntentClassifier, examples: list[Example], *, progress: bool = False) -> Scored:
    """Run every example alone at batch 1 (as the box does), timing each run."""
    from tqdm.auto import tqdm

    labels = classifier.config.labels
    logits: list[np.ndarray] = []
    latencies: list[float] = []
    for example in tqdm(examples, desc="evaluating", unit="q", disable=not progress, leave=False):
        text = normalise(example.text)
        started = time.perf_counter()
        logits.append(classifier.logits(text))
        latencies.append((time.perf_counter() - started) * 1000.0)
    stacked = np.stack(logits) if logits else np.zeros((0, len(labels)))
    probabilities = softmax(stacked) if len(stacked) else stacked
    best = probabilities.argmax(axis=1) if len(stacked) else np.zeros(0, dtype=int)
    return Scored(
        predicted=[labels[int(i)] for i in best],
        confidence=probabilities.max(axis=1) if len(stacked) else np.zeros(0),
        logits=stacked,
        latencies_ms=np.asarray(latencies),
    )


def quality(gold: list[str], predicted: list[str], *, top_confusions: int = 10) -> dict[str, Any]:
    """Accuracy, macro-F1, per-label P/R/F1, domain accuracy and the most-confused pairs."""
    labels = sorted(set(gold) | set(predicted))
    pairs = list(zip(gold, predicted, strict=True))
    per_label: dict[str, dict[str, float]] = {}
    f1s: list[float] = []
    for label in sorted(set(gold)):
        tp = sum(1 for g, p in pairs if g == label and p == label)
        fp = sum(1 for g, p in pairs if g != label and p == label)
        fn = sum(1 for g, p in pairs if g == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
        f1s.append(f1)
    confusions = Counter((g, p) for g, p in pairs if g != p)
    correct = sum(1 for g, p in pairs if g == p)
    domain_correct = sum(1 for g, p in pairs if g.split(".", 1)[0] == p.split(".", 1)[0])
    total = max(1, len(gold))
    return {
        "examples": len(gold),
        "labels": len(labels),
        "accuracy": correct / total,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "domain_accuracy": domain_correct / total,
        "per_label": per_label,
        "confused_pairs": [
            {"gold": g, "predicted": p, "count": n} for (g, p), n in confusions.most_common(top_confusions)
        ],
    }


def scope(gold: list[str], predicted: list[str], oos_label: str) -> dict[str, float | int]:
    """Accuracy on the in-scope rows and recall/precision of the out-of-scope class, from the top-1 label alone.

    An in-scope row predicted `oos_label` counts as wrong. The confidence threshold is not applied
    here; `calibrate` reports what the box does with it.
    """
    pairs = list(zip(gold, predicted, strict=True))
    in_scope = [(g, p) for g, p in pairs if g != oos_label]
    oos_gold = sum(1 for g, _ in pairs if g == oos_label)
    oos_predicted = sum(1 for _, p in pairs if p == oos_label)
    oos_hits = sum(1 for g, p in pairs if g == oos_label and p == oos_label)
    return {
        "in_scope_examples": len(in_scope),
        "in_scope_accuracy": sum(1 for g, p in in_scope if g == p) / max(1, len(in_scope)),
        "oos_examples": oos_gold,
        "oos_recall": oos_hits / max(1, oos_gold),
        "oos_precision": oos_hits / oos_predicted if oos_predicted else 0.0,
    }


def latency(latencies_ms: np.ndarray) -> dict[str, float]:
    if not len(latencies_ms):
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    return {
        "p50_ms": float(np.percentile(latencies_ms, 50)),
        "p99_ms": float(np.percentile(latencies_ms, 99)),
        "mean_ms": float(latencies_ms.mean()),
    }


def batch_throughput(
    model: Path, tokenizer: Path, config: IntentConfig, texts: list[str], *, batch_size: int = 32, threads: int = 2
) -> float:
    """Queries/s when `texts` run in padded batches (offline scoring; the box does not batch)."""
    from edge.inference.onnx import load_tokenizer, make_session

    session = make_session(model, threads)
    tok = load_tokenizer(tokenizer, config.max_length)
    inputs = {item.name for item in session.get_inputs()}
    tok.enable_padding()
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        encodings = tok.encode_batch([normalise(t) for t in texts[start : start + batch_size]])
        feeds = {
            "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
        }
        session.run(None, {k: v for k, v in feeds.items() if k in inputs})
    return len(texts) / max(time.perf_counter() - started, 1e-9)


def agreement(a: Scored, b: Scored) -> dict[str, float]:
    """How closely two models agree example by example (INT8 vs FP32)."""
    same = sum(1 for x, y in zip(a.predicted, b.predicted, strict=True) if x == y)
    diff = np.abs(a.logits - b.logits) if len(a.logits) else np.zeros(1)
    return {"top1_agreement": same / max(1, len(a.predicted)), "max_abs_logit_diff": float(diff.max())}
