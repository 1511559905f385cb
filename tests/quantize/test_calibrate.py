import numpy as np
import pytest

from quantize.calibrate import calibrate_threshold


def test_threshold_reaches_target_oos_recall() -> None:
    gold = ["a"] * 6 + ["oos"] * 4
    predicted = ["a"] * 6 + ["a", "a", "a", "oos"]
    confidence = np.array([0.9, 0.95, 0.8, 0.99, 0.2, 0.85, 0.3, 0.5, 0.6, 0.9])
    result = calibrate_threshold(gold, predicted, confidence, oos_label="oos", target_oos_recall=0.75)
    # one oos is predicted as oos; two more must fall under the threshold: 0.3 and 0.5. The coverage floor
    # (the lowest in-scope confidence, 0.2, at 99 % coverage of 6 rows) is lower, so recall decides.
    assert 0.5 < result["threshold"] <= 0.6
    assert result["achieved"]["oos_recall"] == pytest.approx(0.75)
    assert result["achieved"]["in_scope_coverage"] == pytest.approx(5 / 6)


def test_coverage_floor_holds_when_the_oos_class_alone_reaches_the_recall() -> None:
    rng = np.random.default_rng(1)
    in_scope = rng.uniform(0.3, 1.0, 200)
    gold = ["a"] * 200 + ["oos"] * 10
    predicted = ["a"] * 200 + ["oos"] * 10  # the class catches every oos row: the recall floor is 0
    confidence = np.concatenate([in_scope, np.full(10, 0.9)])
    result = calibrate_threshold(gold, predicted, confidence, oos_label="oos", target_coverage=0.95)
    assert result["threshold"] == pytest.approx(np.quantile(in_scope, 0.05, method="lower"))
    assert result["achieved"]["in_scope_coverage"] >= 0.95 and result["achieved"]["oos_recall"] == 1.0


def test_threshold_without_oos_keeps_target_coverage() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.2, 1.0, 1000)
    gold = ["a"] * 1000
    result = calibrate_threshold(gold, gold, confidence, oos_label="oos", target_coverage=0.95)
    assert result["achieved"]["in_scope_coverage"] >= 0.95
    assert (confidence >= result["threshold"]).mean() == pytest.approx(result["achieved"]["in_scope_coverage"])
    assert "in-scope" in result["method"]
