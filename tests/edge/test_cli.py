from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.cli import main
from quantize.bundle import write_manifest


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, intent_build, embedder_build) -> Path:
    root = tmp_path_factory.mktemp("b") / "bundle"
    shutil.copytree(intent_build[0], root / "intent")
    shutil.copytree(embedder_build[0], root / "embedder")
    write_manifest(root, "test", {"intent": "intent", "embedder": "embedder"})
    return root


@pytest.mark.slow
def test_verify_and_classify(bundle: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(bundle)])
    assert result.exit_code == 0 and "verified" in result.output
    result = runner.invoke(main, ["classify", "--bundle", str(bundle), "cancel my order", "where is my refund"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["label"] for line in lines] == ["order.cancel_order", "refund.get_refund"]


@pytest.mark.slow
def test_verify_refuses_a_tampered_bundle(bundle: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(bundle, tmp_path / "copy")
    (copy / "intent" / "intent.json").write_text("{}")
    result = CliRunner().invoke(main, ["verify", str(copy)])
    assert result.exit_code == 1 and "intent.json" in result.output and "Traceback" not in result.output


def test_missing_bundle_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["classify", "--bundle", str(tmp_path / "none"), "hi"])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_config_prints_effective_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIOSK_INTENT_THREADS", "2")
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 0
    assert json.loads(result.output)["intent_threads"] == 2
    monkeypatch.setenv("KIOSK_INTENT_THREADS", "zero")
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 1 and "intent_threads" in result.output


def test_config_warns_about_store_variables_the_answers_need(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled answers use {{Store Name}} and {{Opening Hours}}; a value missing in one language is named."""
    monkeypatch.setenv("KIOSK_STORE_VARIABLES", '{"Store Name": {"en": "Harbour Mall"}}')
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["store_variables"] == {"Store Name": {"en": "Harbour Mall"}}
    assert "{{Opening Hours}}, which has no value for: en, zh" in result.stderr
    assert "{{Store Name}}, which has no value for: zh" in result.stderr
    monkeypatch.setenv("KIOSK_STORE_VARIABLES", '{"Store Name": "Harbour Mall", "Opening Hours": "10-22"}')
    assert CliRunner().invoke(main, ["config"]).stderr == ""


def test_env_file_is_read_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "kiosk.env"
    env_file.write_text("KIOSK_INTENT_THREADS=3\nKIOSK_APP_NAME=Shop 7\n")
    monkeypatch.setenv("KIOSK_APP_NAME", "Shop 9")
    result = CliRunner().invoke(main, ["--env-file", str(env_file), "config"])
    settings = json.loads(result.output)
    assert settings["intent_threads"] == 3 and settings["app_name"] == "Shop 9"


def test_config_redacts_app_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIOSK_APP_KEYS", '["app-very-secret-key-123"]')
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 0 and "very-secret" not in result.output and "**********" in result.output


def test_placeholder_keys_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIOSK_APP_KEYS", '["change-me-before-deploying"]')
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 1 and "placeholder" in result.output


@pytest.mark.parametrize("name", ["KIOSK_CENTRAL_APP_KEY", "KIOSK_CENTRAL_DATASET_KEY", "KIOSK_CENTRAL_INGEST_KEY"])
def test_placeholder_central_keys_are_refused(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "app-CHANGE-ME-before-deploying")
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 1 and "placeholder" in result.output
    monkeypatch.setenv(name, "app-xFUbEctT2NLLzPkkGoaXmI63")
    assert CliRunner().invoke(main, ["config"]).exit_code == 0


def test_every_setting_is_described() -> None:
    from edge.settings import Settings

    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undocumented == []
