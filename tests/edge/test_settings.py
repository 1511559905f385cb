"""Settings read from KIOSK_* env vars: JSON values, and the one line an operator gets when one is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.cli import main

SECRET = "app-abcdefghijklmnopqrstuv"


def config_error(result: object) -> str:
    """stderr of a refused `edge config`: it must have exited 1 on purpose, not with an exception."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception  # type: ignore[attr-defined]
    return result.stderr  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "value", "form"),
    [
        ("KIOSK_APP_KEYS", SECRET, "JSON list"),
        ("KIOSK_CENTRAL_DATASET_IDS", "6f1c0a52-dataset", "JSON list"),
        ("KIOSK_KNOWLEDGE_SEED_CSVS", "faq.csv", "JSON list"),
        ("KIOSK_LLM_LANGUAGES", "en", "JSON list"),
        ("KIOSK_FEW_SHOT", "hi", "JSON list"),
        ("KIOSK_STORE_VARIABLES", "Harbour Mall", "JSON object"),
        ("KIOSK_SUGGESTED_QUESTIONS", "Where is my refund?", "JSON object"),
        ("KIOSK_STORE_VARIABLES", "42", "JSON object"),
    ],
)
def test_plain_value_in_a_json_setting_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, form: str
) -> None:
    monkeypatch.setenv(name, value)
    stderr = config_error(CliRunner().invoke(main, ["config"]))
    assert stderr.count("\n") == 1 and stderr.startswith("error: ")
    assert name in stderr and form in stderr and "not a plain value" in stderr
    assert value not in stderr  # never echoed: it may be a secret


def test_plain_value_in_the_env_file_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIOSK_APP_KEYS", raising=False)
    env_file = tmp_path / "kiosk.env"
    env_file.write_text(f"KIOSK_APP_KEYS={SECRET}\n")
    stderr = config_error(CliRunner().invoke(main, ["--env-file", str(env_file), "config"]))
    assert stderr.count("\n") == 1 and "KIOSK_APP_KEYS" in stderr and SECRET not in stderr


def test_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "KIOSK_APP_KEYS": SECRET, "KIOSK_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "edge"), "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        'error: invalid setting app_keys (KIOSK_APP_KEYS): expected a JSON list, e.g. ["first", "second"], '
        "not a plain value"
    ]


def test_json_values_and_plain_text_messages_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.settings import Settings

    monkeypatch.setenv("KIOSK_APP_KEYS", f'["{SECRET}"]')
    monkeypatch.setenv("KIOSK_CENTRAL_DATASET_IDS", '["a", "b"]')
    monkeypatch.setenv("KIOSK_STORE_VARIABLES", '{"Store Name": {"en": "Harbour Mall"}}')
    monkeypatch.setenv("KIOSK_SUGGESTED_QUESTIONS", '["Where is my refund?"]')
    monkeypatch.setenv("KIOSK_HANDOFF_MESSAGE", '{"en": "One moment."}')
    monkeypatch.setenv("KIOSK_OPENING_STATEMENT", "Hello!")  # a plain string serves every language
    settings = Settings()
    assert [key.get_secret_value() for key in settings.app_keys] == [SECRET]
    assert settings.central_dataset_ids == ["a", "b"]
    assert settings.store_variables == {"Store Name": {"en": "Harbour Mall"}}
    assert settings.suggested_questions["zh"] == ["Where is my refund?"]
    assert settings.handoff_message == {"en": "One moment."}
    assert set(settings.opening_statement.values()) == {"Hello!"}


def test_other_bad_settings_are_one_line_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIOSK_APP_KEYS", '["short"]')
    monkeypatch.setenv("KIOSK_PORT", "eighty")
    stderr = config_error(CliRunner().invoke(main, ["config"]))
    assert stderr.count("\n") == 1 and "KIOSK_PORT" in stderr and "KIOSK_APP_KEYS" in stderr
    assert "short" not in stderr and "eighty" not in stderr
