"""Prompts longer than the LLM's context: history is trimmed and the turn recorded; a single message that
cannot fit is a 400 in the API family's envelope, never a 500."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edge.app import create_app
from tests.edge.api.conftest import AUTH, make_settings

pytestmark = pytest.mark.slow
DOGS = "are dogs allowed inside?"  # grounded by the seeded store FAQ: the LLM route


def wait_for_index(client: TestClient) -> None:
    retriever = client.app.state.retriever
    deadline = time.monotonic() + 60
    while retriever.store.missing_vectors(retriever.embedder_id, 1):
        assert time.monotonic() < deadline, "the seed knowledge was never indexed"
        time.sleep(0.05)


@pytest.fixture
def grounded(client: TestClient) -> TestClient:
    wait_for_index(client)
    return client


def long_turns(count: int, chars: int) -> list[dict[str, str]]:
    """`count` user/assistant pairs of about `chars` characters each: about 7 kB a pair for 35 kB in all."""
    messages = []
    for n in range(count):
        messages.append({"role": "user", "content": (f"Turn {n}: where is my parcel, it is late. " * 200)[:chars]})
        messages.append({"role": "assistant", "content": ("It is on its way and will arrive soon. " * 200)[:chars]})
    return messages


def dify_messages(client: TestClient, conversation_id: str, user: str) -> list[dict[str, Any]]:
    page = client.get("/v1/messages", headers=AUTH, params={"conversation_id": conversation_id, "user": user})
    assert page.status_code == 200, page.text
    return page.json()["data"]


def assert_openai_400(response: Any) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == "messages"
    assert body["error"]["code"] == "invalid_param" and "context holds" in body["error"]["message"]


def test_openai_model_with_a_35_kb_history_answers_from_the_recent_turns(grounded: TestClient) -> None:
    model = grounded.app.state.llm.model_id
    messages = [*long_turns(5, 3500), {"role": "user", "content": "Where is my parcel?"}]
    assert len(str(messages)) > 35_000
    response = grounded.post(
        "/v1/chat/completions", headers=AUTH, json={"model": model, "messages": messages, "max_tokens": 8}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] and body["usage"]["prompt_tokens"] < 2048


def test_openai_single_message_too_long_for_the_context_is_a_400(grounded: TestClient) -> None:
    model = grounded.app.state.llm.model_id
    messages = [{"role": "user", "content": "where is my parcel " * 1900}]  # 36 kB, about 7,600 tokens
    for stream in (False, True):
        response = grounded.post(
            "/v1/chat/completions", headers=AUTH, json={"model": model, "messages": messages, "stream": stream}
        )
        assert_openai_400(response)


def test_openai_assistant_with_a_35_kb_history_trims_it_and_records_the_turn(grounded: TestClient) -> None:
    messages = [*long_turns(5, 3500), {"role": "user", "content": DOGS}]
    response = grounded.post(
        "/v1/chat/completions",
        headers=AUTH,
        json={"model": "kiosk-assistant", "messages": messages, "user": "long-history"},
    )
    assert response.status_code == 200, response.text
    answer = response.json()["choices"][0]["message"]["content"]
    assert answer
    listed = grounded.get("/v1/conversations", headers=AUTH, params={"user": "long-history"}).json()["data"]
    assert len(listed) == 1
    [turn] = dify_messages(grounded, listed[0]["id"], "long-history")
    assert turn["route"] == "llm" and turn["query"] == DOGS and turn["answer"] == answer


def test_dify_long_questions_with_five_turns_of_history_trim_it_and_record_the_turn(grounded: TestClient) -> None:
    user, question = "long-dify", ("Please tell me where my parcel is, it is late again. " * 40)[:1990]
    conversation = None
    for n in range(5):  # five long turns, answered without the LLM (the hand-off button), so the test stays quick
        body = {"query": f"{n} {question}", "user": user, "inputs": {"handoff": True}}
        if conversation:
            body["conversation_id"] = conversation
        response = grounded.post("/v1/chat-messages", headers=AUTH, json=body)
        assert response.status_code == 200, response.text
        conversation = response.json()["conversation_id"]
    response = grounded.post(
        "/v1/chat-messages",
        headers=AUTH,
        json={"query": DOGS, "user": user, "inputs": {}, "conversation_id": conversation},
    )
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["route"] == "llm"
    turns = dify_messages(grounded, conversation, user)
    assert len(turns) == 6 and turns[-1]["query"] == DOGS and turns[-1]["answer"] == response.json()["answer"]


@pytest.fixture
def small_context(api_bundle: Path, tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(api_bundle, tmp_path / "data", llm_context=256)
    with TestClient(create_app(settings)) as client:
        wait_for_index(client)
        yield client


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
def test_dify_question_too_long_for_the_context_is_a_400(small_context: TestClient, mode: str) -> None:
    query = (DOGS + " ") * 55  # under max_query_chars, about 330 tokens: over a 256-token context
    response = small_context.post(
        "/v1/chat-messages", headers=AUTH, json={"query": query, "user": "u", "inputs": {}, "response_mode": mode}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_param" and body["status"] == 400 and "context holds 256" in body["message"]
    assert small_context.get("/v1/conversations", headers=AUTH, params={"user": "u"}).json()["data"] == []
