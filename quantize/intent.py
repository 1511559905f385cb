"""`quantize intent`: labelled utterances → fine-tuned encoder → INT8 ONNX component, gated on accuracy."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.bundle import sha256_file
from edge.inference.intent import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, IntentClassifier, IntentConfig
from quantize import evaluate
from quantize.bundle import NotPublished, keep_rejected_reports, publish, staging_dir, write_component, write_json
from quantize.calibrate import calibrate_threshold
from quantize.data import CleaningReport, DataError, Example, check_label_counts, fingerprint, load_files
from quantize.export import export_onnx, quantization_record, quantize_int8
from quantize.report import render_intent_report
from quantize.sources import default_encoder, describe_hf_model
from quantize.split import remove_overlap, stratified_split
from quantize.train import TrainConfig, train_classifier

log = logging.getLogger(__name__)
REPORT_JSON = "report.json"
REPORT_MD = "report.md"


class GateFailed(NotPublished):
    """The INT8 model is not good enough to publish; the report says why."""


@dataclass(frozen=True)
class IntentOptions:
    data: Path | Sequence[Path]  # several files are read as one data set (e.g. in-scope + `oos` rows)
    out: Path
    eval_data: Path | Sequence[Path] | None = None
    base_model: Path | None = None
    held_out: float = 0.1
    split_seed: int = 13
    min_examples: int = 5
    drop_rare_labels: bool = False
    max_accuracy_drop: float = 0.5
    min_accuracy: float | None = None
    oos_label: str = "oos"  # rows with this label train as their own class; the box treats it as out of scope
    target_oos_recall: float = 0.9
    target_coverage: float = 0.99
    train: TrainConfig = field(default_factory=TrainConfig)
    progress: bool = True
    keep_fp32: Path | None = None  # where to keep the FP32 ONNX baseline (for bench/), if anywhere


@dataclass
class PreparedData:
    train: list[Example]
    held_out: list[Example]
    held_out_from: str
    cleaning: list[CleaningReport]
    dropped_labels: dict[str, int]
    held_out_removed: int

    @property
    def labels(self) -> list[str]:
        return sorted({example.label for example in self.train})


def data_files(value: Path | Sequence[Path]) -> list[Path]:
    return [Path(value)] if isinstance(value, (str, Path)) else [Path(path) for path in value]


def prepare_data(options: IntentOptions) -> PreparedData:
    """Clean, check and split the data; raises DataError with a readable message."""
    examples, reports = load_files(data_files(options.data))
    examples, dropped = check_label_counts(examples, options.min_examples, drop_rare=options.drop_rare_labels)
    if options.eval_data is not None:
        held_out, eval_reports = load_files(data_files(options.eval_data))
        reports += eval_reports
        known = {example.label for example in examples}
        unknown = [example for example in held_out if example.label not in known]
        held_out = [example for example in held_out if example.label in known]
        held_out, overlap = remove_overlap(examples, held_out)
        source = " + ".join(str(path) for path in data_files(options.eval_data))
        train, removed = examples, overlap + len(unknown)
    else:
        train, held_out = stratified_split(examples, options.held_out, options.split_seed)
        source = f"stratified {options.held_out:.0%} split, seed {options.split_seed}"
        removed = 0
    if not held_out:
        raise DataError("no held-out examples are left to evaluate on")
    return PreparedData(train, held_out, source, reports, dropped, removed)


def _measure(
    name: str, model: Path, tokenizer: Path, config: IntentConfig, data: PreparedData, progress: bool
) -> tuple[evaluate.Scored, dict[str, Any]]:
    classifier = IntentClassifier.from_files(model, tokenizer, config, threads=1)
    log.info("evaluating %s on %d held-out rows", name, len(data.held_out))
    scored = evaluate.score(classifier, data.held_out, progress=progress)
    gold = [example.label for example in data.held_out]
    texts = [example.text for example in data.held_out]
    measured: dict[str, Any] = {
        "quality": evaluate.quality(gold, scored.predicted),
        "latency": evaluate.latency(scored.latencies_ms),
        "batch32_per_second": evaluate.batch_throughput(model, tokenizer, config, texts),
        "size_bytes": model.stat().st_size,
    }
    if config.oos_label is not None and config.oos_label in gold:
        measured["scope"] = evaluate.scope(gold, scored.predicted, config.oos_label)
    return scored, measured


def unknown_token_rate(tokenizer_file: Path, texts: list[str], max_length: int) -> float:
    """Share of tokens the base vocabulary cannot represent: high means the encoder does not suit the language."""
    from edge.inference.onnx import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_file, max_length)
    unk = tokenizer.token_to_id("[UNK]")
    if unk is None:
        model = json.loads(tokenizer.to_str()).get("model", {})
        unk = tokenizer.token_to_id(str(model.get("unk_token", ""))) if model.get("unk_token") else None
    if unk is None:
        return 0.0
    encodings = tokenizer.encode_batch(texts)
    total = sum(len(e.ids) - 2 for e in encodings) or 1
    return sum(e.ids.count(unk) for e in encodings) / total


def gate(fp32: dict[str, Any], int8: dict[str, Any], options: IntentOptions) -> tuple[bool, str]:
    """Pass only when INT8 stays within the margin of FP32 and above the absolute floor.

    Without out-of-scope rows in the held-out data both checks use the accuracy over all of it.
    With them, `oos` is one more class the model must keep predicting, so the margin applies both
    to the accuracy over all rows and to the in-scope accuracy; the floor applies to the in-scope
    accuracy alone, so that it means the same with or without `oos` rows (how hard the `oos` rows
    are would otherwise move it). Out-of-scope recall is what the threshold is calibrated to reach.
    """
    checks = [("accuracy", fp32["quality"]["accuracy"], int8["quality"]["accuracy"])]
    if "scope" in int8:
        checks.append(("in-scope accuracy", fp32["scope"]["in_scope_accuracy"], int8["scope"]["in_scope_accuracy"]))
    floored_name, _, floored = checks[-1]
    passed_parts = []
    for name, fp32_accuracy, int8_accuracy in checks:
        drop = (fp32_accuracy - int8_accuracy) * 100
        if drop > options.max_accuracy_drop:
            return False, (
                f"INT8 {name} {int8_accuracy:.2%} is {drop:.2f} points below FP32 {fp32_accuracy:.2%} "
                f"(allowed: {options.max_accuracy_drop} points)"
            )
        passed_parts.append(f"INT8 {name} {int8_accuracy:.2%}, {drop:.2f} points from FP32 {fp32_accuracy:.2%}")
    if options.min_accuracy is not None and floored < options.min_accuracy:
        return False, f"INT8 {floored_name} {floored:.2%} is below --min-accuracy {options.min_accuracy:.2%}"
    return True, (
        "passed: "
        + "; ".join(passed_parts)
        + f" (allowed {options.max_accuracy_drop})"
        + (f", floor on {floored_name} {options.min_accuracy:.2%}" if options.min_accuracy is not None else "")
    )


def build_intent(options: IntentOptions) -> dict[str, Any]:
    """Run the whole pipeline; publish to `options.out` or raise GateFailed. Returns the report."""
    data = prepare_data(options)
    base = Path(options.base_model) if options.base_model else default_encoder()
    source = describe_hf_model(base)
    labels = data.labels
    with tempfile.TemporaryDirectory(prefix="quantize-intent-") as tmp_name, staging_dir(options.out) as staging:
        tmp = Path(tmp_name)
        stats = train_classifier(base, data.train, labels, options.train, tmp / "hf", progress=options.progress)
        log.info("exporting to ONNX (optimum) and quantizing to INT8 (onnxruntime)")
        fp32_file = export_onnx(tmp / "hf", tmp / "fp32.onnx", "text-classification")
        int8_file = quantize_int8(fp32_file, staging / MODEL_FILE)
        shutil.copyfile(tmp / "hf" / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        tokenizer = staging / TOKENIZER_FILE

        provisional = IntentConfig(
            tuple(labels), options.train.max_length, 0.0, options.oos_label if options.oos_label in labels else None
        )
        fp32_scored, fp32 = _measure("FP32", fp32_file, tokenizer, provisional, data, options.progress)
        int8_scored, int8 = _measure("INT8", int8_file, tokenizer, provisional, data, options.progress)
        gold = [example.label for example in data.held_out]
        threshold = calibrate_threshold(
            gold,
            int8_scored.predicted,
            int8_scored.confidence,
            oos_label=provisional.oos_label,
            target_oos_recall=options.target_oos_recall,
            target_coverage=options.target_coverage,
        )
        config = IntentConfig(provisional.labels, provisional.max_length, threshold["threshold"], provisional.oos_label)
        write_json(staging / CONFIG_FILE, config.to_dict())
        passed, reason = gate(fp32, int8, options)
        report: dict[str, Any] = {
            "kind": "intent",
            "labels": len(labels),
            "source": source,
            "data": {
                "train_files": [{"path": str(path), "sha256": sha256_file(path)} for path in data_files(options.data)],
                "train_rows": len(data.train),
                "held_out_rows": len(data.held_out),
                "held_out_from": data.held_out_from,
                "fingerprint": fingerprint(data.train + data.held_out),
                "cleaning": [c.to_dict() for c in data.cleaning],
                "dropped_labels": data.dropped_labels,
                "held_out_removed": data.held_out_removed,
                "unknown_token_rate": unknown_token_rate(
                    tokenizer, [e.text for e in data.train + data.held_out], options.train.max_length
                ),
            },
            "training": {
                "config": options.train.to_dict(),
                "steps": stats.steps,
                "seconds": stats.seconds,
                "examples_per_second": stats.examples_per_second,
                "final_loss": stats.final_loss,
            },
            "quantization": quantization_record(),
            "fp32": fp32,
            "int8": int8,
            "agreement": evaluate.agreement(int8_scored, fp32_scored),
            "threshold": threshold,
            "gate": {
                "passed": passed,
                "reason": reason,
                "max_accuracy_drop_points": options.max_accuracy_drop,
                "min_accuracy": options.min_accuracy,
            },
        }
        write_json(staging / REPORT_JSON, report)
        (staging / REPORT_MD).write_text(render_intent_report(report), encoding="utf-8")
        if options.keep_fp32 is not None:
            options.keep_fp32.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fp32_file, options.keep_fp32)
        if not passed:
            raise GateFailed(reason, keep_rejected_reports(staging, options.out))
        write_component(
            staging,
            "intent",
            [MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE, REPORT_JSON, REPORT_MD],
            source=source,
            data={k: report["data"][k] for k in ("train_files", "train_rows", "held_out_rows", "fingerprint")},
            quantization=report["quantization"],
            metrics={
                "accuracy_int8": int8["quality"]["accuracy"],
                "accuracy_fp32": fp32["quality"]["accuracy"],
                "macro_f1_int8": int8["quality"]["macro_f1"],
                "top1_agreement": report["agreement"]["top1_agreement"],
                "threshold": threshold["threshold"],
                **_scope_metrics(int8, threshold),
            },
            speed={
                "p50_ms_int8": int8["latency"]["p50_ms"],
                "p99_ms_int8": int8["latency"]["p99_ms"],
                "p50_ms_fp32": fp32["latency"]["p50_ms"],
                "batch32_per_second_int8": int8["batch32_per_second"],
            },
        )
        publish(staging, options.out)
    stale = options.out.with_name(options.out.name + ".rejected")
    if stale.exists():
        shutil.rmtree(stale)
    return report


def _scope_metrics(int8: dict[str, Any], threshold: dict[str, Any]) -> dict[str, float]:
    """In-scope accuracy and out-of-scope recall for the manifest, when the held-out data has `oos` rows."""
    if "scope" not in int8:
        return {}
    return {
        "in_scope_accuracy_int8": int8["scope"]["in_scope_accuracy"],
        "oos_recall_int8": int8["scope"]["oos_recall"],
        "oos_recall_at_threshold": threshold["achieved"]["oos_recall"],
        "in_scope_coverage_at_threshold": threshold["achieved"]["in_scope_coverage"],
    }
