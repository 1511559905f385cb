"""The committed out-of-scope rows (`models/data/oos/`): what they hold, where they come from, and that
`build.py` still makes them."""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT, SHARED_DATA

OOS = ROOT / "models" / "data" / "oos"
CLINC = SHARED_DATA / "clinc150"


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oos_build", OOS / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["text", "label"]
        return list(reader)


def key(text: str) -> str:
    """The text as build.py compares it: lower case, without the `?` it may have appended."""
    return text.lower().rstrip("?")


@pytest.fixture(scope="module")
def build() -> ModuleType:
    return load_build()


def test_every_row_is_oos_and_no_text_is_in_both_splits() -> None:
    train, dev = rows(OOS / "train.csv"), rows(OOS / "dev.csv")
    assert {row["label"] for row in train + dev} == {"oos"}
    assert len({key(row["text"]) for row in train}) == len(train)
    assert not {key(row["text"]) for row in train} & {key(row["text"]) for row in dev}


def test_share_of_training_data_is_modest() -> None:
    retail = rows(ROOT / "models" / "data" / "bitext_retail" / "train.csv")
    assert 0.05 <= len(rows(OOS / "train.csv")) / len(retail) <= 0.10


def test_no_row_names_a_retail_topic(build: ModuleType) -> None:
    named = [
        row["text"]
        for row in rows(OOS / "train.csv") + rows(OOS / "dev.csv")
        if build.RETAIL_TERMS.search(row["text"].lower())
    ]
    assert named == []


def test_source_lists_every_exclusion_and_the_origin(build: ModuleType) -> None:
    source = (OOS / "SOURCE.md").read_text(encoding="utf-8")
    for domain in build.EXCLUDED_DOMAINS:
        assert f"`{domain}`" in source
    for label in build.EXCLUDED_INTENTS:
        assert f"`{label}`" in source, label
    assert "828f8093932c8fe6ca7936c3d2e52903b1c523de" in source and "CC BY 3.0" in source
    assert "Larson" in source
    counts = {name: len(rows(OOS / f"{name}.csv")) for name in ("train", "dev")}
    assert f"`train.csv`: {counts['train']} rows" in source and f"`dev.csv`: {counts['dev']} rows" in source


@pytest.mark.skipif(not CLINC.is_dir(), reason="../shared/data is not beside this checkout")
def test_build_reproduces_the_committed_files(build: ModuleType, tmp_path: Path) -> None:
    build.build(CLINC, tmp_path)
    for name in ("train.csv", "dev.csv"):
        assert (tmp_path / name).read_bytes() == (OOS / name).read_bytes(), name


@pytest.mark.skipif(not CLINC.is_dir(), reason="../shared/data is not beside this checkout")
def test_rows_come_from_the_same_clinc_split_and_no_excluded_intent(build: ModuleType) -> None:
    for split in ("train", "dev"):
        label_of = {key(row["text"].strip()): row["label"] for row in rows(CLINC / f"{split}.csv")}
        sources = [label_of.get(key(row["text"])) for row in rows(OOS / f"{split}.csv")]
        assert None not in sources, f"{split}: a row that is not in CLINC's {split} split"
        assert not [label for label in sources if build.excluded(label)]
        assert sum(label == "oos" for label in sources) >= 90
        per_intent = {label: sources.count(label) for label in set(sources) - {"oos"}}
        expected = build.TRAIN_PER_INTENT if split == "train" else build.DEV_PER_INTENT
        assert set(per_intent.values()) == {expected} and len(per_intent) == 71


def test_question_marks_follow_the_retail_data() -> None:
    texts = [row["text"] for row in rows(OOS / "train.csv")]
    asked = [text for text in texts if re.match(r"(what|how|when|where|who|why|is|are|do|does|can)\b", text)]
    share = sum(text.endswith("?") for text in asked) / len(asked)
    assert 0.45 <= share <= 0.75
