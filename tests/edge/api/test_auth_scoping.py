"""A caller learns nothing about another user's conversation: every route answers it as if it did not exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edge.app import create_app
from edge.settings import Settings
from tests.edge.api.conftest import AUTH, make_settings

CANCEL = "I want to cancel my order"


@pytest.fixture(scope="module")
def client(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings: Settings = make_settings(api_bundle, tmp_path_factory.mktemp("scoping") / "data", llm_floor=1.0)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def auto_name(client: TestClient, conversation_id: str, user: str):
    return client.post(
        f"/v1/conversations/{conversation_id}/name", headers=AUTH, json={"auto_generate": True, "user": user}
    )


def test_auto_naming_another_users_conversation_is_a_404_whether_or_not_it_has_turns(client: TestClient) -> None:
    # A conversation with no turn yet (as one is between its creation and its first recorded answer).
    empty = client.app.state.conversations.create("alice", {})["id"]
    answered = client.post("/v1/chat-messages", headers=AUTH, json={"query": CANCEL, "user": "alice", "inputs": {}})
    assert answered.status_code == 200, answered.text
    with_turns = answered.json()["conversation_id"]
    for conversation in (empty, with_turns):
        response = auto_name(client, conversation, "mallory")
        assert response.status_code == 404, response.text
        assert response.json() == {"code": "not_found", "message": "Conversation Not Exists.", "status": 404}
    # The owner gets the real answers.
    no_turns = auto_name(client, empty, "alice")
    assert no_turns.status_code == 400 and no_turns.json()["code"] == "invalid_param"
    named = auto_name(client, with_turns, "alice")
    assert named.status_code == 200 and named.json()["name"] == CANCEL[:40]
