"""Choose the confidence under which the box treats a question as out of scope.

With `oos` examples in the held-out data the threshold is the lowest one that catches the target
share of them (it keeps the most in-scope answers); without them, it is the one that keeps the
target share of in-scope questions answered. Either way it is calibrated on the INT8 model,
because that is the model the box runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _summary(
    gold: list[str], predicted: list[str], confidence: np.ndarray, threshold: float, oos: str | None
) -> dict[str, float]:
    gold_arr = np.asarray(gold, dtype=object)
    pred_arr = np.asarray(predicted, dtype=object)
    flagged = confidence < threshold
    if oos is not None:
        flagged |= pred_arr == oos
    in_scope = gold_arr != oos if oos is not None else np.ones(len(gold), dtype=bool)
    answered = in_scope & ~flagged
    result = {
        "in_scope_coverage": float(answered.sum() / max(1, in_scope.sum())),
        "accuracy_when_answered": float((pred_arr[answered] == gold_arr[answered]).mean()) if answered.any() else 0.0,
    }
    if oos is not None and (~in_scope).any():
        result["oos_recall"] = float(flagged[~in_scope].mean())
    return result


def calibrate_threshold(
    gold: list[str],
    predicted: list[str],
    confidence: np.ndarray,
    *,
    oos_label: str | None,
    target_oos_recall: float = 0.9,
    target_coverage: float = 0.99,
) -> dict[str, Any]:
    """Return the threshold, how it was chosen, and what it achieves on the held-out data."""
    has_oos = oos_label is not None and oos_label in gold
    if has_oos:
        is_oos = np.asarray([g == oos_label for g in gold])
        predicted_oos = np.asarray([p == oos_label for p in predicted])
        needed = int(np.ceil(target_oos_recall * is_oos.sum()))
        # Rows that only the threshold can catch, sorted by confidence: the needed-th one sets it.
        already = int((is_oos & predicted_oos).sum())
        remaining = np.sort(confidence[is_oos & ~predicted_oos])
        missing = max(0, needed - already)
        recall_floor = float(np.nextafter(remaining[missing - 1], 1.0)) if missing else 0.0
        # The oos class may reach the recall target on its own (threshold 0), but held-out oos rows are
        # one kind of stranger; the coverage floor keeps the box unsure of anything it is unsure of.
        in_scope = confidence[~is_oos]
        coverage_floor = float(np.quantile(in_scope, 1.0 - target_coverage, method="lower")) if len(in_scope) else 0.0
        threshold = max(recall_floor, coverage_floor)
        method = (
            f"the higher of the lowest threshold reaching {target_oos_recall:.0%} out-of-scope recall "
            f"({recall_floor:.3f}) and the one keeping {target_coverage:.0%} of in-scope questions answered "
            f"({coverage_floor:.3f})"
        )
        target = target_oos_recall
    else:
        threshold = float(np.quantile(confidence, 1.0 - target_coverage, method="lower")) if len(confidence) else 0.0
        method = f"keeps {target_coverage:.0%} of in-scope questions answered"
        target = target_coverage
    return {
        "threshold": threshold,
        "method": method,
        "target": target,
        "achieved": _summary(gold, predicted, confidence, threshold, oos_label if has_oos else None),
    }
