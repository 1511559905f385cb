"""`quantize embedder`: the base encoder as a mean-pooled INT8 sentence embedder for retrieval."""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.inference.embedder import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, Embedder, EmbedderConfig
from quantize import evaluate
from quantize.bundle import publish, staging_dir, write_component, write_json
from quantize.data import load_examples
from quantize.export import export_onnx, quantization_record, quantize_int8
from quantize.report import render_embedder_report
from quantize.sources import default_encoder, describe_hf_model

log = logging.getLogger(__name__)


class FidelityError(Exception):
    """The INT8 embedder drifts too far from FP32 to publish."""


@dataclass(frozen=True)
class EmbedderOptions:
    out: Path
    samples: Path
    base_model: Path | None = None
    max_length: int = 256
    sample_count: int = 200
    min_cosine: float = 0.95
    seed: int = 13
    prefix: str = ""  # put before every text (E5 encoders: "query: ")
    keep_fp32: Path | None = None  # where to keep the FP32 ONNX baseline (for bench/), if anywhere
    samples_extra: tuple[Path, ...] = ()  # more sample files (e.g. the other language's rows)


def _time_each(embedder: Embedder, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    vectors, latencies = [], []
    for text in texts:
        started = time.perf_counter()
        vectors.append(embedder.embed([text])[0])
        latencies.append((time.perf_counter() - started) * 1000.0)
    return np.stack(vectors), np.asarray(latencies)


def fidelity(fp32: np.ndarray, int8: np.ndarray) -> dict[str, float]:
    """Cosine of each INT8 vector to its FP32 twin, and whether nearest neighbours stay the same."""
    cosines = (fp32 * int8).sum(axis=1)

    def neighbours(vectors: np.ndarray) -> np.ndarray:
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        return similarity.argmax(axis=1)

    return {
        "sentences": len(cosines),
        "mean_cosine": float(cosines.mean()),
        "min_cosine": float(cosines.min()),
        "neighbour_agreement": float((neighbours(fp32) == neighbours(int8)).mean()),
    }


def build_embedder(options: EmbedderOptions) -> dict[str, Any]:
    base = Path(options.base_model) if options.base_model else default_encoder()
    source = describe_hf_model(base)
    texts: list[str] = []
    for path in (options.samples, *options.samples_extra):
        examples, _ = load_examples(path)
        chosen = sorted({example.text for example in examples})
        random.Random(options.seed).shuffle(chosen)
        texts += chosen[: options.sample_count]
    with tempfile.TemporaryDirectory(prefix="quantize-embedder-") as tmp_name, staging_dir(options.out) as staging:
        tmp = Path(tmp_name)
        fp32_file = export_onnx(base, tmp / "fp32.onnx", "feature-extraction")
        int8_file = quantize_int8(fp32_file, staging / MODEL_FILE)
        shutil.copyfile(base / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        probe_config = EmbedderConfig(options.max_length, 1, options.prefix)
        probe = Embedder.from_files(fp32_file, staging / TOKENIZER_FILE, probe_config)
        dimension = int(probe.embed(["dimension probe"]).shape[1])
        config = EmbedderConfig(options.max_length, dimension, options.prefix)
        write_json(staging / CONFIG_FILE, config.to_dict())
        fp32_vectors, fp32_latency = _time_each(Embedder.from_files(fp32_file, staging / TOKENIZER_FILE, config), texts)
        int8_vectors, int8_latency = _time_each(Embedder.from_files(int8_file, staging / TOKENIZER_FILE, config), texts)
        report = {
            "kind": "embedder",
            "source": source,
            "dimension": dimension,
            "samples": str(options.samples),
            "quantization": quantization_record(),
            "fp32": {"latency": evaluate.latency(fp32_latency), "size_bytes": fp32_file.stat().st_size},
            "int8": {"latency": evaluate.latency(int8_latency), "size_bytes": int8_file.stat().st_size},
            "fidelity": fidelity(fp32_vectors, int8_vectors),
        }
        write_json(staging / "report.json", report)
        (staging / "report.md").write_text(render_embedder_report(report), encoding="utf-8")
        if options.keep_fp32 is not None:
            options.keep_fp32.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fp32_file, options.keep_fp32)
        if report["fidelity"]["mean_cosine"] < options.min_cosine:
            raise FidelityError(
                f"INT8 embeddings have mean cosine {report['fidelity']['mean_cosine']:.4f} to FP32, "
                f"below the floor {options.min_cosine}"
            )
        write_component(
            staging,
            "embedder",
            [MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE, "report.json", "report.md"],
            source=source,
            quantization=report["quantization"],
            metrics=report["fidelity"],
            speed={
                "p50_ms_int8": report["int8"]["latency"]["p50_ms"],
                "p50_ms_fp32": report["fp32"]["latency"]["p50_ms"],
            },
        )
        publish(staging, options.out)
    return report
