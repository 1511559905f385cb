"""Calibrate when the box answers and when it abstains, per language, on held-out questions.

A wrong answer costs more than a hand-off, so each threshold is the lowest one (the most answers)
whose wrong answers stay within `max_error` of that language's held-out questions -- counting as
wrong both the wrong item and any answer at all to a question the bank cannot answer (near-domain
and off-topic rows labelled `oos`). Calibrated on the INT8 encoder, the model the box runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

GRID = np.round(np.arange(0.20, 0.995, 0.005), 3)


def _outcomes(
    gold: Sequence[str], predicted: Sequence[str], scores: np.ndarray, threshold: float, oos: str
) -> dict[str, float]:
    gold_arr, pred_arr = np.asarray(gold, dtype=object), np.asarray(predicted, dtype=object)
    answered = (scores >= threshold) & (pred_arr != oos)
    in_scope = gold_arr != oos
    right = answered & (pred_arr == gold_arr)
    wrong = answered & ~right
    return {
        "threshold": float(threshold),
        "rows": len(gold_arr),
        "answered_right_in_scope": float(right[in_scope].mean()) if in_scope.any() else 0.0,
        "wrong_share": float(wrong.mean()) if len(gold_arr) else 0.0,
        "abstained_out_of_scope": float((~answered[~in_scope]).mean()) if (~in_scope).any() else 1.0,
        "accuracy_when_answered": float(right.sum() / answered.sum()) if answered.any() else 0.0,
    }


def calibrate(
    gold: Sequence[str], predicted: Sequence[str], scores: np.ndarray, *, oos: str, max_error: float, floor: float
) -> dict[str, Any]:
    """The lowest threshold ≥ `floor` whose wrong answers stay within `max_error` of all rows."""
    chosen = None
    for threshold in GRID:
        if threshold < floor:
            continue
        result = _outcomes(gold, predicted, scores, float(threshold), oos)
        if result["wrong_share"] <= max_error:
            chosen = result
            break
    if chosen is None:
        chosen = _outcomes(gold, predicted, scores, float(GRID[-1]), oos)
        chosen["note"] = f"no threshold keeps wrong answers within {max_error:.1%}; the highest is used"
    chosen["max_error"] = max_error
    return chosen


def nearest_items(
    vectors: np.ndarray, item_vectors: np.ndarray, item_labels: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """For each question, the label of the most similar item question and that cosine."""
    similarity = vectors @ item_vectors.T
    best = similarity.argmax(axis=1)
    return [item_labels[int(i)] for i in best], similarity[np.arange(len(vectors)), best]
