"""Helpers of the kiosk page's tests (the session's `api_bundle` fixture comes from tests/conftest.py)."""

from __future__ import annotations

import csv
from pathlib import Path

from tests.conftest import RETAIL

__all__ = ["answers_without"]


def answers_without(folder: Path, label: str) -> Path:
    """The curated answers less one label, so a question of that intent goes to the LLM (with llm_floor 0)."""
    path = folder / "answers.csv"
    with (RETAIL / "intent_responses.csv").open(encoding="utf-8") as source, path.open("w", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=["label", "answer"])
        writer.writeheader()
        writer.writerows(row for row in csv.DictReader(source) if row["label"] != label)
    return path
