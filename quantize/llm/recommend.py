"""Pick the GGUF variant to ship: the best fidelity that fits the RAM budget and speed floor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Budget:
    max_mb: float | None = None
    min_tok_s: float | None = None
    threads: int = 1  # the thread count whose generation speed must meet min_tok_s


@dataclass(frozen=True)
class Verdict:
    chosen: str | None
    reasons: dict[str, str]  # variant → why it won or lost


def _fidelity_key(figures: dict[str, Any]) -> tuple[float, float, float]:
    # lower KL first, then higher top-1 agreement, then smaller file
    return (figures.get("kl_mean", 0.0), -figures.get("top1_agreement", 1.0), figures["size_bytes"])


def recommend(variants: dict[str, dict[str, Any]], budget: Budget) -> Verdict:
    """`variants` maps a name (F16, Q8_0, …) to its measured figures."""
    reasons: dict[str, str] = {}
    fitting: list[str] = []
    for name, figures in variants.items():
        size_mb = figures["size_bytes"] / 1e6
        speed = figures["speed"].get(str(budget.threads), {}).get("gen_tok_s", 0.0)
        if budget.max_mb is not None and size_mb > budget.max_mb:
            reasons[name] = f"too large: {size_mb:.0f} MB > budget {budget.max_mb:.0f} MB"
        elif budget.min_tok_s is not None and speed < budget.min_tok_s:
            reasons[name] = f"too slow: {speed:.0f} tok/s at {budget.threads} thread(s) < {budget.min_tok_s:.0f}"
        else:
            fitting.append(name)
    if not fitting:
        return Verdict(None, reasons)
    ranked = sorted(fitting, key=lambda n: _fidelity_key(variants[n]))
    best = ranked[0]
    best_figures = variants[best]
    reasons[best] = (
        f"chosen: best fidelity within budget (KL {best_figures.get('kl_mean', 0.0):.4f}, "
        f"top-1 {best_figures.get('top1_agreement', 1.0):.1%}, {best_figures['size_bytes'] / 1e6:.0f} MB)"
    )
    for name in ranked[1:]:
        figures = variants[name]
        reasons[name] = (
            f"fits, but lower fidelity: KL {figures.get('kl_mean', 0.0):.4f} vs {best_figures.get('kl_mean', 0.0):.4f}"
        )
    return Verdict(best, reasons)
