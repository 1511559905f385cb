"""Cross-check on Chinese that is not retail: xSID's Chinese rows (../shared/data/xsid_zh, CC BY-SA 4.0).

1. The default bundle's intent model on them: every row is outside a store's work, so the box should
   decline or hand off nearly all of them (the share it would answer is the share it gets wrong).
2. The bundle's encoder on a task of its own: a linear head trained on xSID's labels (the same
   `quantize head` recipe), 5-fold cross-validated, against a bag-of-characters baseline on the same
   folds -- how well the frozen multilingual encoder carries Chinese beyond the retail data.

    .venv/bin/python bench/xsid.py --bundle models/default
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.assistant.routing import thresholds_from  # noqa: E402
from edge.bundle import load_bundle  # noqa: E402
from edge.inference.intent import softmax  # noqa: E402
from edge.inference.loader import load_models  # noqa: E402
from quantize.head import train_head  # noqa: E402

XSID = ROOT.parent / "shared" / "data" / "xsid_zh" / "train.csv"


def folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [np.asarray(order[i::k]) for i in range(k)]


def char_baseline(texts: list[str], labels: list[str], train: np.ndarray, test: np.ndarray) -> float:
    """Nearest class centroid over character counts: what the encoder should clearly beat."""
    vocab = {ch: i for i, ch in enumerate(sorted({ch for text in texts for ch in text}))}
    counts = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for row, text in enumerate(texts):
        for ch in text:
            counts[row, vocab[ch]] += 1
    counts /= np.clip(np.linalg.norm(counts, axis=1, keepdims=True), 1e-9, None)
    classes = sorted({labels[i] for i in train})
    centroids = np.stack([counts[[i for i in train if labels[i] == c]].mean(axis=0) for c in classes])
    predicted = [classes[j] for j in (counts[test] @ centroids.T).argmax(axis=1)]
    return float(np.mean([p == labels[i] for p, i in zip(predicted, test, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--data", type=Path, default=XSID)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data} is missing (it comes with ../shared/data)")
    with args.data.open(encoding="utf-8") as handle:
        rows = [(row["text"], row["label"]) for row in csv.DictReader(handle)]
    texts, labels = [text for text, _ in rows], [label for _, label in rows]
    models = load_models(load_bundle(args.bundle))
    classifier = models.classifier
    if models.embedder is None or not hasattr(classifier, "understand"):
        raise SystemExit("the bundle has no shared encoder (an intent head over its embedder)")
    thresholds = thresholds_from(classifier.config)
    started = time.perf_counter()
    understood = [classifier.understand(text) for text in texts]
    seconds = time.perf_counter() - started
    answered = [
        u.prediction.label
        for u in understood
        if not u.prediction.abstains and u.prediction.confidence >= thresholds[u.language].intent
    ]
    print(f"xSID zh: {len(rows)} rows, {len(set(labels))} intents (weather, alarms, music, …: none of them retail)")
    print()
    print("1. The default intent model on them (every row is out of a store's scope)")
    print(f"   declined or handed off: {1 - len(answered) / len(rows):.1%}")
    print(f"   answered (each one wrong): {len(answered) / len(rows):.1%}  {Counter(answered).most_common(5)}")
    print(f"   {seconds / len(rows) * 1000:.1f} ms a question (INT8 encoder + head, batch 1, one thread)")
    vectors = np.stack([u.vector for u in understood])
    label_set = sorted(set(labels))
    head_scores, base_scores = [], []
    for test in folds(len(rows), args.folds, seed=13):
        train = np.setdiff1d(np.arange(len(rows)), test)
        weight, bias = train_head(
            vectors[train], [labels[i] for i in train], ["zh"] * len(train), label_set, l2=1e-7, epochs=500, seed=13
        )
        predicted = (softmax(vectors[test] @ weight.T + bias)).argmax(axis=1)
        head_scores.append(float(np.mean([label_set[p] == labels[i] for p, i in zip(predicted, test, strict=True)])))
        base_scores.append(char_baseline(texts, labels, train, test))
    print()
    print(f"2. A linear head on the bundle's encoder, trained on xSID's own labels ({args.folds}-fold CV)")
    print(f"   {'method':<38} accuracy (mean ± sd over folds)")
    print(f"   {'encoder + linear head':<38} {np.mean(head_scores):.1%} ± {np.std(head_scores):.1%}")
    print(f"   {'bag of characters, nearest centroid':<38} {np.mean(base_scores):.1%} ± {np.std(base_scores):.1%}")
    print(f"   ratio: {np.mean(head_scores) / max(np.mean(base_scores), 1e-9):.2f}x the baseline")


if __name__ == "__main__":
    main()
