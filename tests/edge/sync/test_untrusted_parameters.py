"""Central is untrusted input (item 15): `/parameters` is validated before it is stored, and the box's own
`GET /v1/parameters` survives whatever an older agent stored."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edge.api.dify import parameters as box_parameters
from edge.settings import Settings
from edge.store.db import open_database, transaction
from edge.store.parameters import CentralParameters
from tests.edge.sync.test_untrusted_listing import Box, box, first_pass

__all__ = ["box"]
PARAMETERS = "/v1/parameters"


def box_answer(settings: Settings, store: CentralParameters) -> dict[str, Any]:
    """The box's `GET /v1/parameters` handler, called as the route calls it (no model needed)."""
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(central_parameters=store)))
    return asyncio.run(box_parameters(None, settings, request))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        ["What can you do?"],  # a JSON list where the object belongs
        "Hello",
        {"opening_statement": ["Hello"]},
        {"suggested_questions": "Where is my refund?"},
        {"suggested_questions": [{"q": 1}]},
        {"user_input_form": {"text-input": {}}},
    ],
    ids=["list", "string", "opening-list", "suggested-string", "suggested-objects", "form-object"],
)
def test_malformed_parameters_are_refused_and_the_last_good_ones_kept(box: Box, body: Any) -> None:
    first_pass(box)
    good = box.agent.parameters.get()
    assert good is not None and good["opening_statement"].startswith("Hello!")
    box.fake.faults.reshape_body(PARAMETERS, {"body": body}, times=None)
    result = box.run()
    assert result.outcomes["parameters"] == "failed"
    assert result.outcomes["knowledge"] == "ok" and result.outcomes["push"] == "ok"
    assert "does not follow the spec" in box.stream("parameters")["last_error"]
    assert box.agent.parameters.get() == good
    assert box_answer(box.agent.settings, box.agent.parameters)["opening_statement"] == good["opening_statement"]


@pytest.mark.parametrize("stored", ['["What can you do?"]', '"Hello"', "null", "not json"])
def test_the_box_answers_whatever_an_older_agent_stored(tmp_path: Path, stored: str) -> None:
    db = open_database(tmp_path / "edge.db")
    with transaction(db):
        db.execute("INSERT INTO central_parameters (id, body, fetched_at) VALUES (1, ?, 0)", [stored])
    store = CentralParameters(db)
    settings = Settings(data_dir=tmp_path)
    answer = box_answer(settings, store)
    assert answer["opening_statement"] == settings.text("opening_statement", settings.ui_language)
    assert store.get() is None
