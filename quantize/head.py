"""`quantize intent --head linear`: a frozen sentence encoder with a trained linear head, per-language
calibration of when to abstain, published as an intent component that shares the bundle's embedder.

One INT8 encoder pass per question then serves retrieval, question matching and the intent. Training
takes seconds after embedding (logistic regression over the embeddings, each (label, language) group
weighted alike so a language with fewer examples counts as much), and the encoder keeps what it knows
of every language instead of being tuned towards the one with the most rows.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import load_component
from edge.inference.embedder import Embedder, embedder_id
from edge.inference.head import HEAD_FILE, HEAD_KIND
from edge.inference.intent import CONFIG_FILE, IntentConfig, softmax
from edge.language import LANGUAGES, detect
from quantize import evaluate
from quantize.abstain import calibrate, nearest_items
from quantize.bundle import NotPublished, keep_rejected_reports, publish, staging_dir, write_component, write_json
from quantize.data import Example, check_label_counts, fingerprint, load_files
from quantize.report import render_head_report
from quantize.split import remove_overlap, stratified_split

log = logging.getLogger(__name__)


class HeadGateFailed(NotPublished):
    """The head answers too few held-out questions right in some language to publish."""


@dataclass(frozen=True)
class HeadOptions:
    data: Sequence[Path]
    embedder: Path  # a published embedder component: the encoder the head sits on
    out: Path
    eval_data: Sequence[Path] = ()
    held_out: float = 0.1
    split_seed: int = 13
    min_examples: int = 5
    oos_label: str = "oos"
    # Wrong answers allowed, as a share of each language's held-out questions (near-domain ones included).
    max_error: float = 0.015
    min_threshold: float = 0.4
    min_accuracy: dict[str, float] = field(default_factory=dict)  # per language, top-1 on in-scope rows
    # Q&A items for calibrating question matching: label → language → canonical question.
    match_items: dict[str, dict[str, str]] = field(default_factory=dict)
    l2: float = 1e-7  # weak: the classes differ by small angles on the unit sphere; held-out rows calibrate
    epochs: int = 500
    seed: int = 13
    progress: bool = True


def _embed(embedder: Embedder, texts: list[str], *, batch: bool) -> np.ndarray:
    """Training rows go in batches of 32 (fast); evaluation rows one at a time, exactly as the box runs."""
    return embedder.embed(texts, batch_size=32 if batch else 1)


def train_head(
    vectors: np.ndarray,
    labels: list[str],
    groups: list[str],
    label_set: list[str],
    *,
    l2: float,
    epochs: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression with each (label, language) group weighted alike."""
    import torch

    torch.manual_seed(seed)
    index = {label: i for i, label in enumerate(label_set)}
    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    y = torch.tensor([index[label] for label in labels])
    counts = Counter(zip(labels, groups, strict=True))
    weights = torch.tensor([1.0 / counts[(label, group)] for label, group in zip(labels, groups, strict=True)])
    weights = weights / weights.sum()
    layer = torch.nn.Linear(x.shape[1], len(label_set))
    optimizer = torch.optim.LBFGS(
        layer.parameters(), lr=1.0, max_iter=epochs, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        losses = torch.nn.functional.cross_entropy(layer(x), y, reduction="none")
        loss = (losses * weights).sum() + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()


def _split(options: HeadOptions) -> tuple[list[Example], list[Example], str]:
    examples, _ = load_files(list(options.data))
    examples, _ = check_label_counts(examples, options.min_examples, drop_rare=True)
    if options.eval_data:
        held_out, _ = load_files(list(options.eval_data))
        known = {example.label for example in examples}
        held_out = [example for example in held_out if example.label in known]
        held_out, _ = remove_overlap(examples, held_out)
        return examples, held_out, " + ".join(str(path) for path in options.eval_data)
    train, held_out = stratified_split(examples, options.held_out, options.split_seed)
    return train, held_out, f"stratified {options.held_out:.0%} split, seed {options.split_seed}"


def build_head(options: HeadOptions) -> dict[str, Any]:
    component = load_component(options.embedder)
    embedder = Embedder.from_component(component, threads=1)  # held-out rows run as the box runs them
    bulk = Embedder.from_component(component, threads=os.cpu_count() or 1)  # training rows: every core
    train, held_out, held_out_from = _split(options)
    label_set = sorted({example.label for example in train})
    started = time.perf_counter()
    log.info("embedding %d training rows", len(train))
    train_vectors = _embed(bulk, [example.text for example in train], batch=True)
    del bulk
    embed_s = time.perf_counter() - started
    weight, bias = train_head(
        train_vectors,
        [example.label for example in train],
        [detect(example.text) for example in train],
        label_set,
        l2=options.l2,
        epochs=options.epochs,
        seed=options.seed,
    )
    train_s = time.perf_counter() - started - embed_s
    config = IntentConfig(
        tuple(label_set), embedder.config.max_length, 0.5, options.oos_label if options.oos_label in label_set else None
    )
    log.info("evaluating on %d held-out rows, one at a time", len(held_out))
    eval_started = time.perf_counter()
    held_vectors = _embed(embedder, [example.text for example in held_out], batch=False)
    latencies = (time.perf_counter() - eval_started) * 1000.0 / max(1, len(held_out))
    probabilities = softmax(held_vectors @ weight.T + bias)
    languages = [detect(example.text) for example in held_out]
    report: dict[str, Any] = {
        "kind": "intent",
        "head": HEAD_KIND,
        "encoder": embedder_id(component),
        "labels": len(label_set),
        "train_rows": len(train),
        "train_rows_by_language": dict(Counter(detect(example.text) for example in train)),
        "held_out_rows": len(held_out),
        "held_out_from": held_out_from,
        "data_fingerprint": fingerprint(train),
        "seconds": {"embed_train": round(embed_s, 1), "train_head": round(train_s, 1)},
        "latency_ms_per_question": round(latencies, 2),
        "languages": {},
    }
    thresholds: dict[str, float] = {}
    match_thresholds: dict[str, float] = {}
    passage_thresholds: dict[str, float] = {}
    failures = []
    for language in LANGUAGES:
        rows = [i for i, lang in enumerate(languages) if lang == language]
        if not rows:
            continue
        gold = [held_out[i].label for i in rows]
        probs = probabilities[rows]
        predicted = [label_set[int(j)] for j in probs.argmax(axis=1)]
        confidence = probs.max(axis=1)
        in_scope = [i for i, label in enumerate(gold) if label != options.oos_label]
        quality = evaluate.quality([gold[i] for i in in_scope], [predicted[i] for i in in_scope])
        calibration = calibrate(
            gold, predicted, confidence, oos=options.oos_label, max_error=options.max_error, floor=options.min_threshold
        )
        thresholds[language] = calibration["threshold"]
        entry: dict[str, Any] = {
            "rows": len(rows),
            "in_scope_rows": len(in_scope),
            "out_of_scope_rows": len(rows) - len(in_scope),
            "in_scope_accuracy": quality["accuracy"],
            "in_scope_macro_f1": quality["macro_f1"],
            "most_confused": quality["confused_pairs"][:5],
            "calibration": calibration,
        }
        match = _match_calibration(embedder, options, held_vectors[rows], gold, language)
        if match is not None:
            entry["matching"] = match
            match_thresholds[language] = match["calibration"]["threshold"]
            passage_thresholds[language] = match["passage_threshold"]
        report["languages"][language] = entry
        floor = options.min_accuracy.get(language)
        if floor is not None and quality["accuracy"] < floor:
            failures.append(f"{language}: in-scope accuracy {quality['accuracy']:.1%} is under the gate {floor:.0%}")
    config = IntentConfig(
        config.labels,
        config.max_length,
        max(thresholds.values(), default=0.5),
        config.oos_label,
        thresholds,
        match_thresholds,
        passage_thresholds,
    )
    report["gate"] = {"min_accuracy": options.min_accuracy, "passed": not failures, "failures": failures}
    with staging_dir(options.out) as staging:
        np.savez(staging / HEAD_FILE, weight=weight.astype(np.float32), bias=bias.astype(np.float32))
        write_json(staging / CONFIG_FILE, {**config.to_dict(), "head": HEAD_KIND, "encoder": report["encoder"]})
        write_json(staging / "report.json", report)
        (staging / "report.md").write_text(render_head_report(report), encoding="utf-8")
        if failures:
            rejected = keep_rejected_reports(staging, options.out)
            raise HeadGateFailed("; ".join(failures), rejected)
        write_component(
            staging,
            "intent",
            [HEAD_FILE, CONFIG_FILE, "report.json", "report.md"],
            head=HEAD_KIND,
            encoder=report["encoder"],
            data_fingerprint=report["data_fingerprint"],
            metrics={lang: {"in_scope_accuracy": e["in_scope_accuracy"]} for lang, e in report["languages"].items()},
        )
        publish(staging, options.out)
    return report


def _match_calibration(
    embedder: Embedder, options: HeadOptions, vectors: np.ndarray, gold: list[str], language: str
) -> dict[str, Any] | None:
    """Calibrate the cosine at which a question matches a Q&A item, using the bank's own items as if they
    were central's Q&A segments: each held-out question against every canonical question in its language."""
    items = [(label, texts[language]) for label, texts in sorted(options.match_items.items()) if language in texts]
    if not items:
        return None
    rows = [i for i, label in enumerate(gold) if label in options.match_items or label == options.oos_label]
    if not rows:
        return None
    item_vectors = _embed(embedder, [text for _, text in items], batch=False)
    nearest, cosine = nearest_items(vectors[rows], item_vectors, [label for label, _ in items])
    subset = [gold[i] for i in rows]
    calibration = calibrate(subset, nearest, cosine, oos=options.oos_label, max_error=options.max_error, floor=0.0)
    negatives = np.asarray([c for c, g in zip(cosine, subset, strict=True) if g == options.oos_label])
    # A passage grounds the LLM when it is closer than nearly every off-topic question comes to any item.
    passage = float(np.quantile(negatives, 0.95)) if len(negatives) else calibration["threshold"]
    return {"items": len(items), "rows": len(rows), "calibration": calibration, "passage_threshold": round(passage, 4)}
