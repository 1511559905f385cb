"""`quantize llm` end to end on a tiny random LLaMA: convert, quantize, measure, choose, publish."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.bundle import load_component
from quantize.cli import EXIT_GATE
from quantize.cli import main as quantize_main
from quantize.llm.pipeline import LlmOptions, NoVariantFits, build_llm
from quantize.llm.recommend import Budget

pytestmark = pytest.mark.slow


def options(model: Path, out: Path, **overrides) -> LlmOptions:
    base = dict(
        checkpoint=model,
        out=out,
        eval_text=Path("models/data/bitext_retail/intent_responses.csv"),
        types=("Q8_0", "Q4_0"),
        threads=(1,),
        repeats=1,
        max_eval_tokens=96,
        progress=False,
    )
    return LlmOptions(**{**base, **overrides})


def test_pipeline_publishes_the_best_variant_that_fits(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "llm"
    rows: list[str] = []
    report = build_llm(options(tiny_llama, out), on_row=lambda name, _: rows.append(name))
    assert rows == ["F16", "Q8_0", "Q4_0"]  # the reference is measured first
    assert set(report["variants"]) == {"F16", "Q8_0", "Q4_0"}
    for figures in report["variants"].values():
        assert figures["perplexity"] > 1 and figures["speed"]["1"]["gen_tok_s"] > 0
        assert figures["eval_tokens"] == 95 and figures["rss_mb"] > 0
    assert report["variants"]["F16"]["kl_mean"] == 0.0
    assert report["variants"]["Q8_0"]["kl_mean"] < report["variants"]["Q4_0"]["kl_mean"]
    assert report["chosen"] == "F16"  # no budget: the reference wins
    component = load_component(out)
    assert component.fragment["quantization"]["type"] == "F16"
    assert set(component.fragment["files"]) == {"model.gguf", "llm.json", "report.json", "report.md"}
    assert "| F16 |" in (out / "report.md").read_text()


def test_budget_picks_a_quantized_variant(tiny_llama: Path, tmp_path: Path) -> None:
    report = build_llm(options(tiny_llama, tmp_path / "a", budget=Budget(max_mb=10**6)))
    f16_size = report["variants"]["F16"]["size_bytes"] / 1e6
    q8_size = report["variants"]["Q8_0"]["size_bytes"] / 1e6
    report = build_llm(options(tiny_llama, tmp_path / "b", budget=Budget(max_mb=(f16_size + q8_size) / 2)))
    assert report["chosen"] == "Q8_0"
    assert report["reasons"]["F16"].startswith("too large")
    assert json.loads((tmp_path / "b" / "llm.json").read_text())["quant_type"] == "Q8_0"


def test_nothing_fits_publishes_nothing(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "llm"
    with pytest.raises(NoVariantFits) as caught:
        build_llm(options(tiny_llama, out, types=("Q4_0",), budget=Budget(max_mb=0.001)))
    assert not out.exists()
    assert (caught.value.report_dir / "report.md").exists()


def test_cli_errors_are_clear(tmp_path: Path, tiny_llama: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        quantize_main, ["llm", "--checkpoint", str(tiny_llama), "--types", "Q9_9", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "unknown quant type" in result.output and "Traceback" not in result.output
    result = runner.invoke(quantize_main, ["llm", "--checkpoint", str(tiny_llama), "--threads", "0"])
    assert result.exit_code == 2
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 20)
    result = runner.invoke(quantize_main, ["import-gguf", str(bad), "--out", str(tmp_path / "hf")])
    assert result.exit_code == 1 and "not a readable GGUF" in result.output
    assert not (tmp_path / "hf").exists()


def test_cli_exit_code_when_nothing_fits(tiny_llama: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        quantize_main,
        [
            "llm",
            "--checkpoint",
            str(tiny_llama),
            "--types",
            "Q4_0",
            "--threads",
            "1",
            "--repeats",
            "1",
            "--max-eval-tokens",
            "64",
            "--max-mb",
            "0.001",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ],
    )
    assert result.exit_code == EXIT_GATE, result.output
    assert "nothing published" in result.output
