"""Human-readable reports (markdown) rendered from the same dict that is saved as report.json."""

from __future__ import annotations

from typing import Any


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cleaning_lines(cleaning: dict[str, Any]) -> list[str]:
    lines = [f"- `{cleaning['source']}`: read {cleaning['rows_read']} rows, kept {cleaning['rows_kept']}."]
    for reason, count in cleaning["dropped"].items():
        lines.append(f"  - dropped {count}: {reason}")
    for reason, count in cleaning["changed"].items():
        lines.append(f"  - changed {count}: {reason}")
    return lines


def _scope_lines(fp32: dict[str, Any], int8: dict[str, Any]) -> list[str]:
    """In-scope accuracy and out-of-scope recall, apart: the accuracy above mixes both kinds of row."""
    if "scope" not in int8:
        return []
    scope = int8["scope"]
    return [
        f"Held-out rows: {scope['in_scope_examples']} in scope, {scope['oos_examples']} out of scope. "
        "From the top-1 label alone (before the threshold):",
        "",
        table(
            ["model", "in-scope accuracy", "out-of-scope recall", "out-of-scope precision"],
            [
                [
                    name,
                    _pct(m["scope"]["in_scope_accuracy"]),
                    _pct(m["scope"]["oos_recall"]),
                    _pct(m["scope"]["oos_precision"]),
                ]
                for name, m in (("FP32 ONNX", fp32), ("INT8 ONNX", int8))
            ],
        ),
        "",
    ]


def render_intent_report(report: dict[str, Any]) -> str:
    fp32, int8 = report["fp32"], report["int8"]
    gate = report["gate"]
    lines = [
        f"# Intent model report — {'PUBLISHED' if gate['passed'] else 'REJECTED'}",
        "",
        f"Base model `{report['source']['name']}`; {report['labels']} labels; "
        f"trained on {report['data']['train_rows']} rows, evaluated on {report['data']['held_out_rows']} "
        f"held-out rows ({report['data']['held_out_from']}).",
        "",
        "## Gate",
        f"{gate['reason']}",
        "",
        "## FP32 vs INT8 (held-out split)",
        table(
            ["model", "accuracy", "macro-F1", "domain acc.", "p50 ms (b=1, 1 thr)", "p99 ms", "batch-32 q/s", "size"],
            [
                [
                    name,
                    _pct(m["quality"]["accuracy"]),
                    _pct(m["quality"]["macro_f1"]),
                    _pct(m["quality"]["domain_accuracy"]),
                    f"{m['latency']['p50_ms']:.2f}",
                    f"{m['latency']['p99_ms']:.2f}",
                    f"{m['batch32_per_second']:.0f}",
                    _mb(m["size_bytes"]),
                ]
                for name, m in (("FP32 ONNX", fp32), ("INT8 ONNX", int8))
            ],
        ),
        "",
        *_scope_lines(fp32, int8),
        f"INT8 agrees with FP32 on {_pct(report['agreement']['top1_agreement'])} of held-out predictions; "
        f"speed-up at batch 1: {fp32['latency']['p50_ms'] / max(int8['latency']['p50_ms'], 1e-9):.2f}×.",
        "",
        "## Out-of-scope threshold",
        f"threshold {report['threshold']['threshold']:.4f} ({report['threshold']['method']}); achieved: "
        + ", ".join(f"{k} {_pct(v)}" for k, v in report["threshold"]["achieved"].items()),
        "",
        "The box treats a question as out of scope when its confidence is under the threshold or its top label is "
        "the out-of-scope label (when the model has one); "
        "`in_scope_coverage` is the share of in-scope questions still answered, "
        "`accuracy_when_answered` the accuracy on those.",
        "",
        "## Most-confused label pairs (INT8)",
        table(
            ["gold", "predicted", "count"],
            [[c["gold"], c["predicted"], str(c["count"])] for c in int8["quality"]["confused_pairs"]]
            or [["—", "—", "0"]],
        ),
        "",
        "## Per-label scores (INT8)",
        table(
            ["label", "precision", "recall", "F1", "support"],
            [
                [label, _pct(s["precision"]), _pct(s["recall"]), _pct(s["f1"]), str(s["support"])]
                for label, s in int8["quality"]["per_label"].items()
            ],
        ),
        "",
        "## Training",
        f"{report['training']['steps']} steps in {report['training']['seconds']:.0f} s "
        f"({report['training']['examples_per_second']:.0f} examples/s); settings: "
        + ", ".join(f"{k}={v}" for k, v in report["training"]["config"].items()),
        "",
        "## Data cleaning",
        *[line for cleaning in report["data"]["cleaning"] for line in _cleaning_lines(cleaning)],
    ]
    unknown = report["data"].get("unknown_token_rate", 0.0)
    lines.append(f"- unknown-token rate of the base vocabulary over the data: {_pct(unknown)}")
    if unknown > 0.01:
        lines.append("  - WARNING: over 1% of tokens are unknown to the encoder; it may not suit this language")
    if report["data"].get("dropped_labels"):
        lines.append(f"- labels left out for too few examples: {report['data']['dropped_labels']}")
    if report["data"].get("held_out_removed"):
        lines.append(
            f"- held-out rows removed (text also in training, or label unknown): {report['data']['held_out_removed']}"
        )
    return "\n".join(lines) + "\n"


def render_embedder_report(report: dict[str, Any]) -> str:
    fidelity = report["fidelity"]
    return "\n".join(
        [
            "# Embedder report",
            "",
            f"Base model `{report['source']['name']}`, mean pooling, L2-normalised, dimension {report['dimension']}.",
            "",
            table(
                ["model", "p50 ms (b=1, 1 thr)", "size"],
                [
                    ["FP32 ONNX", f"{report['fp32']['latency']['p50_ms']:.2f}", _mb(report["fp32"]["size_bytes"])],
                    ["INT8 ONNX", f"{report['int8']['latency']['p50_ms']:.2f}", _mb(report["int8"]["size_bytes"])],
                ],
            ),
            "",
            f"Cosine similarity INT8 vs FP32 over {fidelity['sentences']} sample sentences: "
            f"mean {fidelity['mean_cosine']:.4f}, min {fidelity['min_cosine']:.4f}.",
            "Nearest-neighbour agreement (same top-1 neighbour among the samples): "
            f"{_pct(fidelity['neighbour_agreement'])}.",
            "",
        ]
    )


def render_head_report(report: dict[str, Any]) -> str:
    """The intent head's report: per-language accuracy and the calibration of when the box abstains."""
    lines = [
        "# Intent report (linear head over the bundle's encoder)",
        "",
        f"- labels: {report['labels']}, training rows: {report['train_rows']} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(report['train_rows_by_language'].items()))})",
        f"- held out: {report['held_out_rows']} rows ({report['held_out_from']})",
        f"- time: {report['seconds']['embed_train']} s embedding, {report['seconds']['train_head']} s training; "
        f"{report['latency_ms_per_question']} ms a held-out question (INT8, batch 1, one thread)",
        "",
        "## Calibration: when the box answers (per language)",
        "",
        "Thresholds are the lowest whose wrong answers (a wrong item, or any answer to a question labelled out "
        "of scope, near-domain ones included) stay within the allowed share of that language's held-out rows.",
        "",
        "| language | rows (in / out of scope) | in-scope top-1 | threshold | answered right (in scope) "
        "| wrong (all rows) | out-of-scope abstained |",
        "|---|---|---|---|---|---|---|",
    ]
    for language, entry in report["languages"].items():
        cal = entry["calibration"]
        lines.append(
            f"| {language} | {entry['in_scope_rows']} / {entry['out_of_scope_rows']} "
            f"| {entry['in_scope_accuracy']:.1%} "
            f"| {cal['threshold']:.3f} | {cal['answered_right_in_scope']:.1%} | {cal['wrong_share']:.1%} "
            f"| {cal['abstained_out_of_scope']:.1%} |"
        )
    matching = [(lang, e["matching"]) for lang, e in report["languages"].items() if "matching" in e]
    if matching:
        lines += [
            "",
            "## Calibration: question matching (central's annotations and Q&A segments)",
            "",
            "Simulated with the bank's canonical questions as the Q&A items; a passage grounds the LLM above the "
            "95th percentile of out-of-scope questions' best cosine.",
            "",
            "| language | items | rows | cosine threshold | matched right | wrong | passage threshold |",
            "|---|---|---|---|---|---|---|",
        ]
        for language, match in matching:
            cal = match["calibration"]
            lines.append(
                f"| {language} | {match['items']} | {match['rows']} | {cal['threshold']:.3f} "
                f"| {cal['answered_right_in_scope']:.1%} | {cal['wrong_share']:.1%} "
                f"| {match['passage_threshold']:.3f} |"
            )
    gate = report["gate"]
    lines += ["", f"Gate: {'passed' if gate['passed'] else 'FAILED: ' + '; '.join(gate['failures'])}", ""]
    return "\n".join(lines)
