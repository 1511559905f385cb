import pytest

from quantize.evaluate import scope


def test_scope_separates_in_scope_accuracy_from_oos_recall() -> None:
    gold = ["a", "a", "b", "b", "oos", "oos", "oos", "oos"]
    predicted = ["a", "oos", "b", "a", "oos", "oos", "b", "oos"]
    result = scope(gold, predicted, "oos")
    assert result["in_scope_examples"] == 4 and result["oos_examples"] == 4
    assert result["in_scope_accuracy"] == 0.5  # an in-scope row predicted `oos` is wrong
    assert result["oos_recall"] == 0.75
    assert result["oos_precision"] == pytest.approx(3 / 4)
