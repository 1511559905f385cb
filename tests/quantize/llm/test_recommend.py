from quantize.llm.recommend import Budget, recommend


def figures(mb: float, kl: float, top1: float, tok_s: float) -> dict:
    return {"size_bytes": mb * 1e6, "kl_mean": kl, "top1_agreement": top1, "speed": {"1": {"gen_tok_s": tok_s}}}


VARIANTS = {
    "F16": figures(270, 0.0, 1.0, 60),
    "Q8_0": figures(145, 0.003, 0.97, 95),
    "Q5_K_M": figures(120, 0.03, 0.91, 90),
    "Q4_0": figures(85, 0.08, 0.86, 120),
}


def test_best_fidelity_within_the_ram_budget() -> None:
    verdict = recommend(VARIANTS, Budget(max_mb=200))
    assert verdict.chosen == "Q8_0"
    assert verdict.reasons["F16"].startswith("too large")
    assert "lower fidelity" in verdict.reasons["Q4_0"]


def test_speed_floor_excludes_slow_variants() -> None:
    verdict = recommend(VARIANTS, Budget(max_mb=1000, min_tok_s=100))
    assert verdict.chosen == "Q4_0"
    assert verdict.reasons["F16"].startswith("too slow") and verdict.reasons["Q8_0"].startswith("too slow")


def test_no_budget_means_reference_quality_wins() -> None:
    assert recommend(VARIANTS, Budget()).chosen == "F16"


def test_nothing_fits() -> None:
    verdict = recommend(VARIANTS, Budget(max_mb=10))
    assert verdict.chosen is None and len(verdict.reasons) == 4
