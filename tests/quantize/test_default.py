"""The default recipe's intent data: retail, the project's bilingual rows and out-of-scope rows, held out
without leakage, in both languages; Q&A matching calibrated on the bank's own questions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from edge.language import detect
from quantize.default import ANSWERS_DATA, OOS_DATA, RETAIL_DATA, DefaultRecipe, default_head_options, match_items
from quantize.head import _split


def test_default_recipe_trains_and_calibrates_on_both_languages(tmp_path: Path) -> None:
    options = default_head_options(DefaultRecipe(out=tmp_path / "default"), tmp_path / "embedder", tmp_path / "intent")
    assert list(options.data) == [RETAIL_DATA / "train.csv", ANSWERS_DATA / "train.csv", OOS_DATA / "train.csv"]
    assert list(options.eval_data) == [RETAIL_DATA / "dev.csv", ANSWERS_DATA / "dev.csv", OOS_DATA / "dev.csv"]
    assert options.min_accuracy == {"en": 0.95, "zh": 0.85}

    train, held_out, _ = _split(options)
    labels = {example.label for example in train}
    assert "oos" in labels and len(labels) == 53  # 27 intents, 25 in-store topics, out of scope
    assert not {e.text for e in train} & {e.text for e in held_out}
    by_language = Counter((detect(e.text), e.label == "oos") for e in held_out)
    # both languages are held out with answerable and out-of-scope rows, so both are calibrated
    assert by_language[("en", False)] >= 800 and by_language[("zh", False)] >= 300
    assert by_language[("en", True)] >= 150 and by_language[("zh", True)] >= 40
    zh_labels = {e.label for e in train if detect(e.text) == "zh"}
    assert labels <= zh_labels  # every label has Chinese training rows


def test_matching_is_calibrated_on_every_labels_canonical_question_in_both_languages() -> None:
    items = match_items(ANSWERS_DATA / "answers.csv")
    assert len(items) == 52 and all(set(questions) == {"en", "zh"} for questions in items.values())
    assert items["store.toilets"]["zh"] and detect(items["store.toilets"]["zh"]) == "zh"
