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
