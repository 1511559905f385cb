"""The default recipe's intent data: retail rows plus out-of-scope rows, split without leakage."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from quantize.data import load_examples
from quantize.default import OOS_DATA, RETAIL_DATA, DefaultRecipe, default_intent_options
from quantize.intent import data_files, prepare_data


def test_default_recipe_trains_and_evaluates_on_retail_and_oos_rows(tmp_path: Path) -> None:
    options = default_intent_options(DefaultRecipe(out=tmp_path / "default"), tmp_path / "intent")
    assert data_files(options.data) == [RETAIL_DATA / "train.csv", OOS_DATA / "train.csv"]
    assert data_files(options.eval_data) == [RETAIL_DATA / "dev.csv", OOS_DATA / "dev.csv"]
    assert options.oos_label == "oos" and options.min_accuracy == 0.97

    data = prepare_data(options)
    train, held_out = Counter(e.label for e in data.train), Counter(e.label for e in data.held_out)
    assert "oos" in data.labels and len(data.labels) == 28
    assert 0.05 <= train["oos"] / (train.total() - train["oos"]) <= 0.10
    assert held_out.total() - held_out["oos"] >= 800
    # every oos dev row is held out: none is also a training text (of either source) or contradicts one
    assert held_out["oos"] == len(load_examples(OOS_DATA / "dev.csv")[0]) >= 150
    assert train["oos"] == len(load_examples(OOS_DATA / "train.csv")[0])
    assert [r.source for r in data.cleaning if r.dropped.get("same text under several labels")] == []
    assert not {e.text for e in data.train} & {e.text for e in data.held_out}
