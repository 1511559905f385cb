"""Dify's app API on the real app: answers, streaming, history, feedback and every error's shape."""

from __future__ import annotations

import asyncio
import csv
import json
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edge.app import create_app
from tests.conftest import RETAIL
from tests.edge.api.conftest import AUTH, make_settings

pytestmark = pytest.mark.slow
CANCEL = "I want to cancel my order"


def curated(label: str) -> str:
    with (RETAIL / "intent_responses.csv").open(encoding="utf-8") as handle:
        return next(row["answer"] for row in csv.DictReader(handle) if row["label"] == label)


def chat(client: TestClient, query: str, user: str = "kiosk-1", **extra: object) -> dict:
    response = client.post(
        "/v1/chat-messages", headers=AUTH, json={"query": query, "user": user, "inputs": {}, **extra}
    )
    assert response.status_code == 200, response.text
    return response.json()


def sse_events(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            events.append(json.loads(block[len("data: ") :]))
    return events


def test_curated_answer_blocking(client: TestClient) -> None:
    body = chat(client, CANCEL)
    assert body["event"] == "message" and body["mode"] == "chat"
    assert body["answer"] == curated("order.cancel_order")
    assert body["id"] == body["message_id"]
    uuid.UUID(body["conversation_id"])
    uuid.UUID(body["task_id"])
    assert body["metadata"]["route"] == "curated"
    assert body["metadata"]["usage"]["total_tokens"] == 0
    again = chat(client, CANCEL.upper() + "  ")
    assert again["metadata"]["route"] == "cache" and again["answer"] == body["answer"]


def test_streaming_frames_and_history(client: TestClient) -> None:
    first = chat(client, CANCEL)
    with client.stream(
        "POST",
        "/v1/chat-messages",
        headers=AUTH,
        json={
            "query": "how long does delivery take",
            "user": "kiosk-1",
            "response_mode": "streaming",
            "conversation_id": first["conversation_id"],
            "inputs": {},
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = sse_events(text)
    assert events[0]["conversation_id"] == first["conversation_id"] and events[0]["message_id"]
    assert events[-1]["event"] == "message_end"
    assert "usage" in events[-1]["metadata"] and "retriever_resources" in events[-1]["metadata"]
    streamed = "".join(e["answer"] for e in events if e["event"] == "message")
    history = client.get(
        "/v1/messages", headers=AUTH, params={"conversation_id": first["conversation_id"], "user": "kiosk-1"}
    ).json()
    assert [m["query"] for m in history["data"]] == [CANCEL, "how long does delivery take"]
    assert history["data"][1]["answer"] == streamed and history["has_more"] is False


@pytest.fixture
def llm_client(api_bundle: Path, tmp_path: Path) -> TestClient:
    """Curated answers without `order.cancel_order`, and a floor of 0: cancelling goes to the LLM."""
    answers = tmp_path / "answers.csv"
    with (RETAIL / "intent_responses.csv").open(encoding="utf-8") as source, answers.open("w", encoding="utf-8") as out:
        rows = [row for row in csv.DictReader(source) if row["label"] != "order.cancel_order"]
        writer = csv.DictWriter(out, fieldnames=["label", "answer"])
        writer.writeheader()
        writer.writerows(rows)
    settings = make_settings(api_bundle, tmp_path / "data", curated_answers_csv=answers, llm_floor=0.0)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_llm_route_streams_and_records_tokens(llm_client: TestClient) -> None:
    with llm_client.stream(
        "POST",
        "/v1/chat-messages",
        headers=AUTH,
        json={"query": CANCEL, "user": "u", "response_mode": "streaming", "inputs": {}},
    ) as response:
        events = sse_events("".join(response.iter_text()))
    deltas = [e for e in events if e["event"] == "message"]
    end = events[-1]
    assert end["event"] == "message_end" and end["metadata"]["route"] == "llm"
    assert len(deltas) > 1  # streamed token by token, not in one piece
    assert end["metadata"]["usage"]["completion_tokens"] > 0
    assert end["metadata"]["retriever_resources"]  # grounded on curated answers of nearby intents
    messages = llm_client.get(
        "/v1/messages", headers=AUTH, params={"conversation_id": end["conversation_id"], "user": "u"}
    )
    assert messages.json()["data"][0]["answer"] == "".join(d["answer"] for d in deltas)


def test_handoff_when_nothing_is_relevant(api_bundle: Path, tmp_path: Path) -> None:
    answers = tmp_path / "answers.csv"
    answers.write_text("label,answer\n")
    settings = make_settings(
        api_bundle, tmp_path / "data", curated_answers_csv=answers, llm_floor=1.0, knowledge_seed_csvs=[]
    )
    with TestClient(create_app(settings)) as client:
        body = chat(client, CANCEL)
    assert body["metadata"]["route"] == "handoff" and body["answer"] == settings.handoff_message["en"]


def wait_for_index(client: TestClient) -> None:
    retriever = client.app.state.retriever
    deadline = time.monotonic() + 60
    while retriever.store.missing_vectors(retriever.embedder_id, 1):
        assert time.monotonic() < deadline, "the seed knowledge was never indexed"
        time.sleep(0.05)


def test_knowledge_grounds_the_llm_and_is_cited(client: TestClient) -> None:
    wait_for_index(client)
    body = chat(client, "are dogs allowed inside?")
    metadata = body["metadata"]
    assert metadata["route"] == "llm" and body["answer"]
    cited = [r for r in metadata["retriever_resources"] if r["data_source_type"] == "knowledge"]
    assert cited and cited[0]["document_name"] == "store_faq"
    assert cited[0]["content"].startswith("Q: Are dogs allowed in the store?")
    assert 0.5 <= cited[0]["score"] <= 1.0
    page = client.get(
        "/v1/messages", headers=AUTH, params={"conversation_id": body["conversation_id"], "user": "kiosk-1"}
    ).json()
    assert page["data"][0]["retriever_resources"] == metadata["retriever_resources"]


def test_unrelated_question_is_handed_off(client: TestClient) -> None:
    wait_for_index(client)
    body = chat(client, "What is the capital of France?")
    assert body["metadata"]["route"] in {"handoff", "llm"}
    assert all(r["data_source_type"] != "knowledge" for r in body["metadata"]["retriever_resources"])


@pytest.mark.parametrize("flag", [True, "true", 1])
def test_handoff_input_records_a_handoff_whatever_the_query(client: TestClient, flag: object) -> None:
    first = chat(client, CANCEL)
    body = chat(client, CANCEL, conversation_id=first["conversation_id"], inputs={"handoff": flag})
    assert body["metadata"]["route"] == "handoff"
    assert body["answer"] != first["answer"]
    page = client.get(
        "/v1/messages", headers=AUTH, params={"conversation_id": first["conversation_id"], "user": "kiosk-1"}
    ).json()
    assert [item["route"] for item in page["data"]] == ["curated", "handoff"]


def test_handoff_input_false_answers_normally(client: TestClient) -> None:
    assert chat(client, CANCEL, inputs={"handoff": "no"})["metadata"]["route"] in {"curated", "cache"}


def test_conversations_feedback_rename_delete(client: TestClient) -> None:
    ids = [chat(client, CANCEL, user="alice")["conversation_id"] for _ in range(3)]
    listed = client.get("/v1/conversations", headers=AUTH, params={"user": "alice", "limit": 2}).json()
    rest = client.get(
        "/v1/conversations", headers=AUTH, params={"user": "alice", "limit": 2, "last_id": listed["data"][-1]["id"]}
    ).json()
    # created within one second: equal timestamps, yet the two pages hold each conversation exactly once
    assert listed["has_more"] is True and rest["has_more"] is False
    assert sorted(c["id"] for c in listed["data"] + rest["data"]) == sorted(ids)
    assert client.get("/v1/conversations", headers=AUTH, params={"user": "bob"}).json()["data"] == []

    message_id = client.get("/v1/messages", headers=AUTH, params={"conversation_id": ids[0], "user": "alice"}).json()[
        "data"
    ][0]["id"]
    ok = client.post(f"/v1/messages/{message_id}/feedbacks", headers=AUTH, json={"rating": "like", "user": "alice"})
    assert ok.json() == {"result": "success"}
    history = client.get("/v1/messages", headers=AUTH, params={"conversation_id": ids[0], "user": "alice"}).json()
    assert history["data"][0]["feedback"] == {"rating": "like"}
    foreign = client.post(f"/v1/messages/{message_id}/feedbacks", headers=AUTH, json={"rating": "like", "user": "bob"})
    assert foreign.status_code == 404

    renamed = client.post(f"/v1/conversations/{ids[0]}/name", headers=AUTH, json={"name": "Refund", "user": "alice"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Refund"
    deleted = client.request("DELETE", f"/v1/conversations/{ids[0]}", headers=AUTH, json={"user": "alice"})
    assert deleted.status_code == 204 and deleted.content == b""
    gone = client.get("/v1/messages", headers=AUTH, params={"conversation_id": ids[0], "user": "alice"})
    assert gone.status_code == 404 and gone.json()["message"] == "Conversation Not Exists."


def test_app_metadata(client: TestClient, settings) -> None:
    assert client.get("/v1/").json()["welcome"] == "Dify OpenAPI"
    params = client.get("/v1/parameters", headers=AUTH).json()
    assert params["opening_statement"] == settings.opening_statement["en"]
    assert params["suggested_questions"] == settings.suggested_questions["en"]
    assert client.get("/v1/info", headers=AUTH).json()["mode"] == "chat"
    assert client.get("/v1/meta", headers=AUTH).json() == {"tool_icons": {}}


def assert_dify_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"code", "message", "status"} and body["status"] == status and body["code"] == code
    return body


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"query": "hi", "inputs": {}}, "invalid_param"),  # no user
        ({"user": "u", "inputs": {}}, "invalid_param"),  # no query
        ({"query": 123, "user": "u"}, "invalid_param"),
        ({"query": "hi", "user": "u", "conversation_id": "not-a-uuid"}, "invalid_param"),
        ({"query": "hi", "user": "u", "response_mode": "sometimes"}, "invalid_param"),
        ({"query": "   \u200b ", "user": "u"}, "invalid_param"),
    ],
)
def test_bad_input_is_a_clear_400(client: TestClient, payload: dict, code: str) -> None:
    assert_dify_error(client.post("/v1/chat-messages", headers=AUTH, json=payload), 400, code)


def test_lone_surrogates_and_junk_are_cleaned(client: TestClient) -> None:
    raw = '{"query": "I want to cancel my order\\ud800", "user": "u", "inputs": {}}'
    response = client.post("/v1/chat-messages", headers={**AUTH, "Content-Type": "application/json"}, content=raw)
    assert response.status_code == 200 and response.json()["answer"] == curated("order.cancel_order")


def test_auth_errors(client: TestClient) -> None:
    body = {"query": "hi", "user": "u"}
    missing = assert_dify_error(client.post("/v1/chat-messages", json=body), 401, "unauthorized")
    assert "Bearer" in missing["message"]
    wrong = client.post("/v1/chat-messages", json=body, headers={"Authorization": "Bearer app-wrong-key-123456789"})
    assert assert_dify_error(wrong, 401, "unauthorized")["message"] == "Access token is invalid"
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    scheme = client.post("/v1/chat-messages", json=body, headers={"Authorization": "Basic abc"})
    assert_dify_error(scheme, 401, "unauthorized")
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_unknown_and_foreign_conversations_are_404(client: TestClient) -> None:
    owned = chat(client, CANCEL, user="alice")["conversation_id"]
    for conversation, user in ((str(uuid.uuid4()), "alice"), (owned, "mallory")):
        response = client.post(
            "/v1/chat-messages", headers=AUTH, json={"query": "hi", "user": user, "conversation_id": conversation}
        )
        assert assert_dify_error(response, 404, "not_found")["message"] == "Conversation Not Exists."


def test_huge_body_and_bad_json(client: TestClient) -> None:
    huge = client.post("/v1/chat-messages", headers=AUTH, json={"query": "x" * 1_000_000, "user": "u"})
    assert_dify_error(huge, 413, "request_entity_too_large")
    broken = client.post("/v1/chat-messages", headers={**AUTH, "Content-Type": "application/json"}, content="{oops")
    assert_dify_error(broken, 400, "invalid_param")
    form = client.post("/v1/chat-messages", headers=AUTH, data={"query": "hi", "user": "u"})
    assert_dify_error(form, 415, "unsupported_media_type")
    text = client.post("/v1/chat-messages", headers={**AUTH, "Content-Type": "text/plain"}, content='{"query": "x"}')
    assert_dify_error(text, 415, "unsupported_media_type")
    schema = client.app.openapi()
    chat_responses = schema["paths"]["/v1/chat-messages"]["post"]["responses"]
    assert "422" not in chat_responses and "400" in chat_responses  # the document says what the app sends
    assert_dify_error(client.get("/v1/nothing-here", headers=AUTH), 404, "not_found")


def test_rate_limit_answers_429_with_retry_after(api_bundle: Path, tmp_path: Path) -> None:
    settings = make_settings(api_bundle, tmp_path / "d", rate_limit_per_s=0.01, rate_limit_burst=2)
    with TestClient(create_app(settings)) as client:
        codes = [client.get("/v1/info", headers=AUTH).status_code for _ in range(3)]
        limited = client.get("/v1/info", headers=AUTH)
    assert codes[:2] == [200, 200] and codes[2] == 429
    assert_dify_error(limited, 429, "too_many_requests")
    assert int(limited.headers["Retry-After"]) >= 1


def test_restart_keeps_every_conversation(settings) -> None:
    with TestClient(create_app(settings)) as client:
        conversation = chat(client, CANCEL, user="carol")["conversation_id"]
    with TestClient(create_app(settings)) as client:
        history = client.get("/v1/messages", headers=AUTH, params={"conversation_id": conversation, "user": "carol"})
    assert history.status_code == 200 and history.json()["data"][0]["query"] == CANCEL


def test_central_annotations_answer_first_and_changes_reach_the_next_question(api_bundle: Path, tmp_path: Path) -> None:
    from edge.sync.pull import annotation_segment

    settings = make_settings(api_bundle, tmp_path / "data", knowledge_refresh_s=0.01)
    with TestClient(create_app(settings)) as client:
        before = chat(client, CANCEL)
        assert before["metadata"]["route"] == "curated" and "annotation_reply" not in before["metadata"]
        knowledge = client.app.state.knowledge
        note = {"id": str(uuid.uuid4()), "question": "I want to cancel my order", "answer": "Ask at the till."}
        knowledge.apply([annotation_segment(note)], None, None)
        time.sleep(0.05)
        body = chat(client, "  i want to CANCEL my order ")  # the same question, normalised
        assert body["answer"] == "Ask at the till." and body["metadata"]["route"] == "curated"
        assert body["metadata"]["annotation_reply"]["id"] == note["id"]
        knowledge.apply([annotation_segment({**note, "answer": "Orders cancel at the kiosk now."})], None, None)
        time.sleep(0.05)
        assert chat(client, CANCEL)["answer"] == "Orders cancel at the kiosk now."
        knowledge.apply([], None, None, deletes=[note["id"]])
        time.sleep(0.05)
        assert chat(client, CANCEL)["answer"] == before["answer"]  # the hot-answer cache did not keep it


def test_recorded_latency_counts_the_routing(client: TestClient) -> None:
    """A turn's `latency_ms` runs from the question's arrival, so the encoder and retrieval (routing) count,
    not only the time after the route was known. The router is made to take at least 0.2 s."""
    router = client.app.state.assistant.router
    route = router.route

    async def slow_route(*args: object, **kwargs: object) -> object:
        await asyncio.sleep(0.2)
        return await route(*args, **kwargs)

    router.route = slow_route
    body = client.post("/v1/chat-messages", headers=AUTH, json={"query": "I want to cancel my order", "user": "u"})
    assert body.status_code == 200
    db = client.app.state.conversations.db
    [latency] = db.execute("SELECT latency_ms FROM messages WHERE id = ?", [body.json()["message_id"]]).fetchone()
    assert latency >= 200.0
