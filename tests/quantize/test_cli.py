"""The `quantize` CLI: help, documentation, clear errors and the gate's failure path."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edge.cli import main as edge_main
from quantize.cli import EXIT_GATE
from quantize.cli import main as quantize_main
from tests.conftest import ROOT, SHARED_DATA, write_csv


def commands(group: click.Group) -> list[str]:
    return sorted(group.commands)


@pytest.mark.parametrize(("program", "group"), [("quantize", quantize_main), ("edge", edge_main)])
def test_every_command_has_help_and_is_documented(program: str, group: click.Group) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(group, ["--help"]).exit_code == 0
    for name in commands(group):
        result = runner.invoke(group, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert (group.commands[name].help or "").split("\n")[0][:30] in result.output
        assert f"{program} {name}" in readme, f"`{program} {name}` is not documented in README.md"


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(quantize_main, args)
    return result.exit_code, result.output


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    code, output = run(["intent", "--data", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")])
    assert code == 1
    assert "error:" in output and "no such file" in output
    assert "Traceback" not in output


def test_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("utterance,intent\nhello,greet\n")
    code, output = run(["intent", "--data", str(path), "--out", str(tmp_path / "o")])
    assert code == 1 and "missing column(s) text, label" in output


def test_too_few_examples_is_a_clear_error(tmp_path: Path) -> None:
    rows = [(f"cancel order {i}", "order.cancel") for i in range(10)] + [("refund", "refund.get")]
    path = write_csv(tmp_path / "d.csv", rows)
    code, output = run(["intent", "--data", str(path), "--out", str(tmp_path / "o")])
    assert code == 1 and "refund.get (1)" in output and "--drop-rare-labels" in output
    assert not (tmp_path / "o").exists()


def test_bad_option_values_are_usage_errors(tmp_path: Path) -> None:
    code, output = run(["intent", "--data", "x.csv", "--held-out", "2"])
    assert code == 2 and "--held-out" in output


@pytest.mark.slow
def test_gate_failure_publishes_nothing(tmp_path: Path, slice_data: tuple[Path, Path]) -> None:
    out = tmp_path / "intent"
    train, dev = slice_data
    code, output = run(
        [
            "intent",
            "--data",
            str(train),
            "--eval-data",
            str(dev),
            "--out",
            str(out),
            "--max-steps",
            "2",
            "--min-accuracy",
            "1.0",
            "--no-progress",
        ]
    )
    assert code == EXIT_GATE, output
    assert "gate failed, nothing published" in output
    assert not out.exists()
    rejected = out.with_name("intent.rejected")
    assert sorted(p.name for p in rejected.iterdir()) == ["report.json", "report.md"]
    assert "REJECTED" in (rejected / "report.md").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["intent.rejected"]  # no staging left behind


@pytest.mark.slow
def test_chinese_smoke_run_goes_through_the_same_path(tmp_path: Path) -> None:
    data = SHARED_DATA / "xsid_zh" / "train.csv"
    if not data.exists():
        pytest.skip("../shared/data is not beside this checkout")
    out = tmp_path / "zh"
    code, output = run(
        [
            "intent",
            "--data",
            str(data),
            "--out",
            str(out),
            "--drop-rare-labels",
            "--min-examples",
            "4",
            "--max-steps",
            "30",
            "--max-accuracy-drop",
            "100",
            "--held-out",
            "0.2",
            "--no-progress",
        ]
    )
    assert code == 0, output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["data"]["dropped_labels"]  # xSID has labels with 1-3 examples
    assert report["labels"] >= 10
    from edge.bundle import load_component
    from edge.inference.intent import IntentClassifier

    classifier = IntentClassifier.from_component(load_component(out))
    ids = classifier.encode("明天会下雨吗")["input_ids"][0].tolist()
    assert ids[1:5] == [1865, 1811, 1763, 1743]  # 明天会下: one token per character, as in training
    # MiniLM's uncased vocabulary lacks some common characters (雨, 吗): the report must say so
    assert report["data"]["unknown_token_rate"] > 0.01
    assert "may not suit this language" in (out / "report.md").read_text(encoding="utf-8")
    assert classifier.predict(["明天会下雨吗"])[0].label in classifier.config.labels
