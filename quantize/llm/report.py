"""The markdown report of `quantize llm`, rendered from the same dict saved as report.json."""

from __future__ import annotations

from typing import Any

from quantize.report import table


def _types(census: dict[str, int]) -> str:
    return ", ".join(f"{name}×{count}" for name, count in sorted(census.items(), key=lambda kv: -kv[1]))


def variant_row(name: str, figures: dict[str, Any], threads: list[str]) -> list[str]:
    speed = figures["speed"]
    return [
        name,
        f"{figures['size_bytes'] / 1e6:.1f}",
        _types(figures.get("tensor_types", {})),
        f"{figures['load_seconds']:.2f}",
        f"{figures['rss_mb']:.0f}",
        *[f"{speed[t]['prompt_tok_s']:.0f}" for t in threads],
        *[
            f"{speed[t]['gen_tok_s']:.0f} ({speed[t]['gen_tok_s_min']:.0f}–{speed[t]['gen_tok_s_max']:.0f})"
            for t in threads
        ],
        f"{figures['perplexity']:.2f}",
        f"{figures.get('kl_mean', 0.0):.4f}",
        f"{figures.get('top1_agreement', 1.0):.1%}",
    ]


def variant_headers(threads: list[str]) -> list[str]:
    return [
        "variant",
        "MB",
        "weight tensor types",
        "load s",
        "RSS MB",
        *[f"prompt tok/s {t}thr" for t in threads],
        *[f"gen tok/s {t}thr (min–max)" for t in threads],
        "PPL",
        "KL vs F16",
        "top-1 vs F16",
    ]


def render_llm_report(report: dict[str, Any]) -> str:
    variants = report["variants"]
    threads = list(next(iter(variants.values()))["speed"])
    budget = report["budget"]
    lines = [
        f"# LLM quantization report — {'chose ' + report['chosen'] if report['chosen'] else 'NOTHING FITS'}",
        "",
        f"Source checkpoint `{report['source']['name']}` ({report['conversion']['architecture']}, "
        f"tokenizer {report['conversion']['tokenizer']['model']}/{report['conversion']['tokenizer']['pre']}); "
        f"perplexity and fidelity over {report['eval_text']['tokens']} held-out tokens "
        f"of `{report['eval_text']['path']}`.",
    ]
    if report.get("imported_from"):
        source = report["imported_from"]
        lines += [
            "",
            f"Note: this checkpoint was imported from `{source['source_gguf']}` (tensor types "
            f"{_types(source['source_tensor_types'])}). Fidelity is measured against that checkpoint, which "
            "already carries the source GGUF's quantization rounding; it says nothing about the original "
            "full-precision weights.",
        ]
    lines += [
        "",
        table(variant_headers(threads), [variant_row(name, figures, threads) for name, figures in variants.items()]),
        "",
        f"Budget: max {budget['max_mb'] or '∞'} MB of weights, min {budget['min_tok_s'] or 0} generated tok/s "
        f"at {budget['threads']} thread(s). Generation speed is the median of repeated runs (spread in brackets).",
        "",
        "## Verdict",
        *[f"- **{name}**: {reason}" for name, reason in report["reasons"].items()],
        "",
        "Weight tensors that a k-quant could not take (rows not a multiple of 256) fall back to other types; the "
        "tensor-type column shows what each file really holds.",
        "",
        "## Chat answer of each variant (greedy, through the GGUF's chat template)",
        *[f"- {name}: {figures.get('chat_answer', '')!r}" for name, figures in variants.items()],
        "",
    ]
    return "\n".join(lines)
