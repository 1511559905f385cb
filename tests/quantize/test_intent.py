"""The intent gate with and without out-of-scope rows, and a small build that learns an `oos` class."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge.bundle import load_component
from quantize.intent import IntentOptions, build_intent, gate
from quantize.train import TrainConfig
from tests.conftest import ROOT, retail_slice, write_csv


def measured(accuracy: float, in_scope: float | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"quality": {"accuracy": accuracy}}
    if in_scope is not None:
        result["scope"] = {"in_scope_accuracy": in_scope}
    return result


def options(**kwargs: Any) -> IntentOptions:
    return IntentOptions(data=Path("x.csv"), out=Path("out"), **kwargs)


def test_gate_without_oos_rows_uses_accuracy() -> None:
    assert gate(measured(0.99), measured(0.988), options(min_accuracy=0.97))[0] is True
    passed, reason = gate(measured(0.99), measured(0.98), options())
    assert not passed and "1.00 points below" in reason
    passed, reason = gate(measured(0.96), measured(0.96), options(min_accuracy=0.97))
    assert not passed and "INT8 accuracy 96.00% is below --min-accuracy" in reason


def test_gate_with_oos_rows_floors_in_scope_accuracy() -> None:
    # hard oos rows pull the accuracy over all rows under the floor; the retail answers are still good
    passed, reason = gate(measured(0.93, 0.99), measured(0.93, 0.99), options(min_accuracy=0.97))
    assert passed and "in-scope accuracy 99.00%" in reason and "floor on in-scope accuracy" in reason
    passed, reason = gate(measured(0.99, 0.96), measured(0.99, 0.96), options(min_accuracy=0.97))
    assert not passed and "in-scope accuracy 96.00% is below" in reason
    # INT8 must not lose against FP32 on either measure
    passed, reason = gate(measured(0.95, 0.99), measured(0.94, 0.99), options())
    assert not passed and "INT8 accuracy" in reason
    passed, reason = gate(measured(0.95, 0.99), measured(0.95, 0.98), options())
    assert not passed and "INT8 in-scope accuracy" in reason


@pytest.mark.slow
def test_oos_rows_become_a_class_the_config_names(tmp_path: Path) -> None:
    oos = ROOT / "models" / "data" / "oos"
    out = tmp_path / "intent"
    train = write_csv(tmp_path / "train.csv", retail_slice("train", 20))
    dev = write_csv(tmp_path / "dev.csv", retail_slice("dev", 5))
    report = build_intent(
        IntentOptions(
            data=(train, oos / "train.csv"),
            eval_data=(dev, oos / "dev.csv"),
            out=out,
            max_accuracy_drop=100.0,  # a few training steps: this test is about the plumbing, not quality
            train=TrainConfig(epochs=1, max_length=32, max_steps=6),
            progress=False,
        )
    )
    config = json.loads((out / "intent.json").read_text())
    assert config["oos_label"] == "oos" and "oos" in config["labels"]
    assert [Path(f["path"]).name for f in report["data"]["train_files"]] == ["train.csv", "train.csv"]
    assert report["int8"]["scope"]["oos_examples"] == report["int8"]["quality"]["per_label"]["oos"]["support"]
    assert report["int8"]["scope"]["in_scope_examples"] == 30
    assert "out-of-scope recall" in report["threshold"]["method"]
    assert "in-scope accuracy" in report["gate"]["reason"]
    metrics = load_component(out).fragment["metrics"]
    assert metrics["oos_recall_at_threshold"] == report["threshold"]["achieved"]["oos_recall"] >= 0.9
    text = (out / "report.md").read_text()
    assert "in-scope accuracy" in text and "out-of-scope recall" in text
