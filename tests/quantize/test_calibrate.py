import numpy as np
import pytest

from quantize.calibrate import calibrate_threshold


def test_threshold_reaches_target_oos_recall() -> None:
    gold = ["a"] * 6 + ["oos"] * 4
    predicted = ["a"] * 6 + ["a", "a", "a", "oos"]
    confidence = np.array([0.9, 0.95, 0.8, 0.99, 0.7, 0.85, 0.3, 0.5, 0.6, 0.9])
    result = calibrate_threshold(gold, predicted, confidence, oos_label="oos", target_oos_recall=0.75)
    # one oos is predicted as oos; two more must fall under the threshold: 0.3 and 0.5
    assert 0.5 < result["threshold"] <= 0.6
    assert result["achieved"]["oos_recall"] == pytest.approx(0.75)
    assert result["achieved"]["in_scope_coverage"] == 1.0


def test_threshold_without_oos_keeps_target_coverage() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.2, 1.0, 1000)
    gold = ["a"] * 1000
    result = calibrate_threshold(gold, gold, confidence, oos_label="oos", target_coverage=0.95)
    assert result["achieved"]["in_scope_coverage"] >= 0.95
    assert (confidence >= result["threshold"]).mean() == pytest.approx(result["achieved"]["in_scope_coverage"])
    assert "in-scope" in result["method"]
