"""`quantize llm`: checkpoint → F16 GGUF → k-quants → measured table → recommended variant → bundle."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantize.bundle import NotPublished, keep_rejected_reports, publish, staging_dir, write_component, write_json
from quantize.llm.convert import convert_checkpoint
from quantize.llm.import_gguf import IMPORT_RECORD
from quantize.llm.measure import MeasureError, MeasureSpec, measure_variant
from quantize.llm.quantize_gguf import DEFAULT_TYPES, check_types, quantize_gguf, tensor_census
from quantize.llm.recommend import Budget, recommend
from quantize.llm.report import render_llm_report
from quantize.sources import describe_hf_model

log = logging.getLogger(__name__)
MODEL_FILE = "model.gguf"
CONFIG_FILE = "llm.json"
REFERENCE = "F16"


class NoVariantFits(NotPublished):
    """No variant meets the budget; nothing was published."""


@dataclass(frozen=True)
class LlmOptions:
    checkpoint: Path
    out: Path
    eval_text: Path
    types: tuple[str, ...] = DEFAULT_TYPES
    threads: tuple[int, ...] = (1, 2)
    repeats: int = 3
    max_eval_tokens: int = 1024
    budget: Budget = field(default_factory=Budget)
    include_f32: bool = False
    tokenizer_pre: str | None = None
    keep_dir: Path | None = None
    context_length: int = 2048
    progress: bool = True


def load_eval_text(path: Path) -> str:
    """Held-out text: a CSV's `answer` (or `text`) column, or a plain text file as is."""
    path = Path(path)
    if not path.is_file():
        raise MeasureError(f"held-out text {path} does not exist")
    content = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".csv":
        return content
    reader = csv.DictReader(io.StringIO(content))
    column = next((c for c in ("answer", "text") if c in (reader.fieldnames or [])), None)
    if column is None:
        raise MeasureError(f"{path} needs an `answer` or `text` column")
    return "\n\n".join(row[column] for row in reader if row.get(column))


def build_llm(options: LlmOptions, on_row: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the pipeline and publish the recommended GGUF to `options.out`; returns the report."""
    from tqdm.auto import tqdm

    types = check_types(list(options.types))
    eval_text = load_eval_text(options.eval_text)
    source = describe_hf_model(options.checkpoint)
    import_record_path = Path(options.checkpoint) / IMPORT_RECORD
    imported = json.loads(import_record_path.read_text()) if import_record_path.exists() else None
    keep = options.keep_dir
    with tempfile.TemporaryDirectory(prefix="quantize-llm-") as tmp_name, staging_dir(options.out) as staging:
        work = Path(keep) if keep else Path(tmp_name)
        work.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}
        log.info("converting %s to GGUF", options.checkpoint)
        conversion = convert_checkpoint(
            options.checkpoint, work / "model.F16.gguf", out_type="f16", tokenizer_pre=options.tokenizer_pre
        )
        files[REFERENCE] = work / "model.F16.gguf"
        if options.include_f32:
            convert_checkpoint(
                options.checkpoint, work / "model.F32.gguf", out_type="f32", tokenizer_pre=options.tokenizer_pre
            )
            files["F32"] = work / "model.F32.gguf"
        for quant in tqdm(types, desc="quantizing", unit="variant", disable=not options.progress):
            files[quant] = quantize_gguf(files[REFERENCE], work / f"model.{quant}.gguf", quant)

        reference_logprobs = Path(tmp_name) / "reference-logprobs.npy"
        measured: dict[str, dict[str, Any]] = {}
        order = [REFERENCE, *[name for name in files if name != REFERENCE]]
        for name in tqdm(order, desc="measuring", unit="variant", disable=not options.progress):
            spec = MeasureSpec(
                gguf=str(files[name]),
                eval_text=eval_text,
                threads=list(options.threads),
                repeats=options.repeats,
                max_eval_tokens=options.max_eval_tokens,
                save_logprobs=str(reference_logprobs) if name == REFERENCE else None,
                reference_logprobs=None if name == REFERENCE else str(reference_logprobs),
            )
            figures = measure_variant(spec)
            if name == REFERENCE:
                figures.update(kl_mean=0.0, top1_agreement=1.0)
            figures["tensor_types"] = tensor_census(files[name])
            measured[name] = figures
            if on_row:
                on_row(name, figures)
        verdict = recommend(measured, options.budget)
        report: dict[str, Any] = {
            "kind": "llm",
            "source": source,
            "imported_from": imported,
            "conversion": conversion,
            "eval_text": {"path": str(options.eval_text), "tokens": measured[REFERENCE]["eval_tokens"]},
            "reference": REFERENCE,
            "budget": {
                "max_mb": options.budget.max_mb,
                "min_tok_s": options.budget.min_tok_s,
                "threads": options.budget.threads,
            },
            "variants": measured,
            "chosen": verdict.chosen,
            "reasons": verdict.reasons,
        }
        write_json(staging / "report.json", report)
        (staging / "report.md").write_text(render_llm_report(report), encoding="utf-8")
        if verdict.chosen is None:
            rejected = keep_rejected_reports(staging, options.out)
            raise NoVariantFits(
                "no variant fits the budget: " + "; ".join(f"{k}: {v}" for k, v in verdict.reasons.items()), rejected
            )
        shutil.copyfile(files[verdict.chosen], staging / MODEL_FILE)
        write_json(staging / CONFIG_FILE, {"context_length": options.context_length, "quant_type": verdict.chosen})
        chosen = measured[verdict.chosen]
        write_component(
            staging,
            "llm",
            [MODEL_FILE, CONFIG_FILE, "report.json", "report.md"],
            source={**source, "imported_from": imported},
            quantization={
                "type": verdict.chosen,
                "tool": "llama.cpp (llama-cpp-python)",
                "tensor_types": chosen["tensor_types"],
            },
            metrics={k: chosen.get(k) for k in ("perplexity", "kl_mean", "top1_agreement")},
            speed={
                "load_seconds": chosen["load_seconds"],
                "rss_mb": chosen["rss_mb"],
                **{f"threads_{t}": v for t, v in chosen["speed"].items()},
            },
        )
        publish(staging, options.out)
    shutil.rmtree(options.out.with_name(options.out.name + ".rejected"), ignore_errors=True)
    return report
