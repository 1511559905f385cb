"""The fake against Dify's contract: every response in the OpenAPI document's schema, auth and errors
as §1.2–1.3 say, the pagination quirks, knowledge fingerprints, conversations and workflow runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.fake_dify import (
    Central,
    Clock,
    FakeDify,
    FakeDifyState,
    FakeDifyTransport,
    create_fake_dify,
    seed_demo,
)
from tests.fake_dify.conftest import auth
from tests.fake_dify.errors import NO_SUCH_URL
from tests.fake_dify.spec import DifySpec, dify_error_problems, sse_frames

EVERY_FIELD = pytest.mark.parametrize("every_field", [False, True], ids=["as-written", "every-field"])
NO_SUCH = "00000000-0000-4000-8000-000000000000"
SESSION = "edge:store-1:kiosk-2:0b5d2a8e-4c1f-4e8a-9a77-3f1f1f9c2d10"
TRANSCRIPT = {
    "store_id": "store-1",
    "kiosk_id": "kiosk-2",
    "edge_session_id": "0b5d2a8e-4c1f-4e8a-9a77-3f1f1f9c2d10",
    "transcript": "customer: where is my refund?\nassistant: within 5 to 10 business days",
}


class Api:
    """Shortcuts for the three keys of the demo central."""

    def __init__(self, client: httpx.Client, central: Central, state: FakeDifyState) -> None:
        self.client, self.central, self.state = client, central, state
        self.dataset = f"/datasets/{central.dataset_id}"

    def ds(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._send(self.central.dataset_key, method, path, **kwargs)

    def chat(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._send(self.central.chat_key, method, path, **kwargs)

    def wf(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._send(self.central.workflow_key, method, path, **kwargs)

    def _send(self, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**auth(key), **kwargs.pop("headers", {})}
        return self.client.request(method, "/v1" + path, headers=headers, **kwargs)

    def doc(self) -> str:
        return self.ds("GET", self.dataset + "/documents").json()["data"][0]["id"]

    def segment(self, doc: str) -> str:
        return self.ds("GET", f"{self.dataset}/documents/{doc}/segments").json()["data"][0]["id"]

    def ask(self, query: str = "Where is my refund?", user: str = "u1", **extra: Any) -> httpx.Response:
        return self.chat("POST", "/chat-messages", json={"query": query, "user": user, "inputs": {}, **extra})

    def run(self, user: str = SESSION, inputs: dict[str, Any] | None = None) -> httpx.Response:
        body = {"inputs": inputs or TRANSCRIPT, "user": user, "response_mode": "blocking"}
        return self.wf("POST", "/workflows/run", json=body)


@pytest.fixture
def api(client: httpx.Client, central: Central, state: FakeDifyState) -> Api:
    return Api(client, central, state)


# --- 1. every implemented endpoint's responses in the document's schema --------------------------


@dataclass(frozen=True)
class Call:
    method: str
    template: str  # as the document writes it
    run: Callable[[Api], httpx.Response]
    status: str = "200"


def _segments_url(api: Api) -> str:
    return f"{api.dataset}/documents/{api.doc()}/segments"


def _segment_url(api: Api) -> str:
    doc = api.doc()
    return f"{api.dataset}/documents/{doc}/segments/{api.segment(doc)}"


def _conversation(api: Api) -> str:
    return api.ask().json()["conversation_id"]


def _annotation(api: Api) -> str:
    return api.chat("GET", "/apps/annotations").json()["data"][0]["id"]


def _reply_job(api: Api) -> str:
    settings = {"score_threshold": 0.9, "embedding_provider_name": "openai", "embedding_model_name": "e3"}
    return api.chat("POST", "/apps/annotation-reply/enable", json=settings).json()["job_id"]


DOC = "/datasets/{dataset_id}/documents/{document_id}"
SEG = DOC + "/segments/{segment_id}"
CALLS: dict[str, Call] = {
    "datasets": Call("get", "/datasets", lambda a: a.ds("GET", "/datasets")),
    "dataset": Call("get", "/datasets/{dataset_id}", lambda a: a.ds("GET", a.dataset)),
    "documents": Call("get", "/datasets/{dataset_id}/documents", lambda a: a.ds("GET", a.dataset + "/documents")),
    "document": Call("get", DOC, lambda a: a.ds("GET", f"{a.dataset}/documents/{a.doc()}")),
    "create-by-text": Call(
        "post",
        "/datasets/{dataset_id}/document/create-by-text",
        lambda a: a.ds("POST", a.dataset + "/document/create-by-text", json={"name": "FAQ", "text": "One.\n\nTwo."}),
    ),
    "update-by-text": Call(
        "post",
        DOC + "/update-by-text",
        lambda a: a.ds("POST", f"{a.dataset}/documents/{a.doc()}/update-by-text", json={"name": "N", "text": "New."}),
    ),
    "indexing-status": Call(
        "get",
        "/datasets/{dataset_id}/documents/{batch}/indexing-status",
        lambda a: a.ds(
            "GET",
            f"{a.dataset}/documents/"
            f"{a.ds('POST', a.dataset + '/document/create-by-text', json={'name': 'B', 'text': 'x'}).json()['batch']}"
            "/indexing-status",
        ),
    ),
    "documents-status": Call(
        "patch",
        "/datasets/{dataset_id}/documents/status/{action}",
        lambda a: a.ds("PATCH", a.dataset + "/documents/status/disable", json={"document_ids": [a.doc()]}),
    ),
    "segments": Call("get", DOC + "/segments", lambda a: a.ds("GET", _segments_url(a))),
    "segments-create": Call(
        "post", DOC + "/segments", lambda a: a.ds("POST", _segments_url(a), json={"segments": [{"content": "New."}]})
    ),
    "segment": Call("get", SEG, lambda a: a.ds("GET", _segment_url(a))),
    "segment-update": Call("post", SEG, lambda a: a.ds("POST", _segment_url(a), json={"segment": {"content": "Edit"}})),
    "annotations": Call("get", "/apps/annotations", lambda a: a.chat("GET", "/apps/annotations")),
    "annotation-create": Call(
        "post",
        "/apps/annotations",
        lambda a: a.chat("POST", "/apps/annotations", json={"question": "Q", "answer": "A"}),
        "201",
    ),
    "annotation-update": Call(
        "put",
        "/apps/annotations/{annotation_id}",
        lambda a: a.chat("PUT", f"/apps/annotations/{_annotation(a)}", json={"question": "Q2", "answer": "A2"}),
    ),
    "annotation-reply": Call(
        "post",
        "/apps/annotation-reply/{action}",
        lambda a: a.chat("POST", "/apps/annotation-reply/disable", json={"score_threshold": 1, **_EMBEDDING}),
    ),
    "annotation-reply-status": Call(
        "get",
        "/apps/annotation-reply/{action}/status/{job_id}",
        lambda a: a.chat("GET", f"/apps/annotation-reply/enable/status/{_reply_job(a)}"),
    ),
    "parameters": Call("get", "/parameters", lambda a: a.chat("GET", "/parameters")),
    "info": Call("get", "/info", lambda a: a.chat("GET", "/info")),
    "meta": Call("get", "/meta", lambda a: a.chat("GET", "/meta")),
    "site": Call("get", "/site", lambda a: a.chat("GET", "/site")),
    "chat-blocking": Call("post", "/chat-messages", lambda a: a.ask("How long does standard delivery take?")),
    "chat-annotation": Call("post", "/chat-messages", lambda a: a.ask("Where is my refund?")),
    "stop": Call(
        "post",
        "/chat-messages/{task_id}/stop",
        lambda a: a.chat("POST", f"/chat-messages/{NO_SUCH}/stop", json={"user": "u"}),
    ),
    "messages": Call(
        "get",
        "/messages",
        lambda a: a.chat("GET", "/messages", params={"conversation_id": _conversation(a), "user": "u1"}),
    ),
    "conversations": Call(
        "get", "/conversations", lambda a: (_conversation(a), a.chat("GET", "/conversations", params={"user": "u1"}))[1]
    ),
    "conversation-name": Call(
        "post",
        "/conversations/{conversation_id}/name",
        lambda a: a.chat("POST", f"/conversations/{_conversation(a)}/name", json={"name": "Refund", "user": "u1"}),
    ),
    "feedback": Call(
        "post",
        "/messages/{message_id}/feedbacks",
        lambda a: a.chat("POST", f"/messages/{a.ask().json()['id']}/feedbacks", json={"rating": "like", "user": "u1"}),
    ),
    "app-feedbacks": Call(
        "get",
        "/app/feedbacks",
        lambda a: (
            a.chat("POST", f"/messages/{a.ask().json()['id']}/feedbacks", json={"rating": "dislike", "user": "u1"}),
            a.chat("GET", "/app/feedbacks"),
        )[1],
    ),
    "workflow-run": Call("post", "/workflows/run", lambda a: a.run()),
    "workflow-logs": Call("get", "/workflows/logs", lambda a: (a.run(), a.wf("GET", "/workflows/logs"))[1]),
    "workflow-run-detail": Call(
        "get",
        "/workflows/run/{workflow_run_id}",
        lambda a: a.wf("GET", f"/workflows/run/{a.run().json()['workflow_run_id']}"),
    ),
}
_EMBEDDING = {"embedding_provider_name": "openai", "embedding_model_name": "text-embedding-3-small"}


@EVERY_FIELD
@pytest.mark.parametrize("name", list(CALLS))
def test_every_response_matches_the_document(api: Api, spec: DifySpec, name: str, every_field: bool) -> None:
    call = CALLS[name]
    response = call.run(api)
    assert response.status_code == int(call.status), response.text
    assert response.headers["content-type"].startswith("application/json")
    ref = spec.response_ref(call.method, call.template, call.status)
    assert spec.check(response.json(), ref, every_field=every_field) == []


@EVERY_FIELD
def test_the_ingest_apps_parameters_match_the_document(api: Api, spec: DifySpec, every_field: bool) -> None:
    """A form makes `user_input_form` non-empty; its `oneOf` only discriminates with required keys.

    As written, the document's three form-item schemas require nothing, so any item matches all three
    and `oneOf` fails for every real Dify response too: there only the every-field check means anything.
    """
    body = api.wf("GET", "/parameters").json()
    assert [next(iter(item)) for item in body["user_input_form"]] == ["text-input"] * 5 + ["paragraph"]
    problems = spec.check(body, spec.response_ref("get", "/parameters"), every_field=every_field)
    if every_field:
        assert problems == []
    else:
        assert problems and all(p.startswith("user_input_form/") and "is valid under each of" in p for p in problems)


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("segment", SEG),
        ("document", DOC),
        ("annotation", "/apps/annotations/{annotation_id}"),
        ("conversation", "/conversations/{conversation_id}"),
    ],
)
def test_deletes_are_204_with_no_body(api: Api, spec: DifySpec, name: str, url: str) -> None:
    doc = api.doc()
    path = {
        "segment": lambda: f"{api.dataset}/documents/{doc}/segments/{api.segment(doc)}",
        "document": lambda: f"{api.dataset}/documents/{doc}",
        "annotation": lambda: f"/apps/annotations/{_annotation(api)}",
        "conversation": lambda: f"/conversations/{_conversation(api)}",
    }[name]()
    send = api.chat if name in ("annotation", "conversation") else api.ds
    response = send("DELETE", path, json={"user": "u1"}) if name == "conversation" else send("DELETE", path)
    assert (response.status_code, response.content) == (204, b"")
    assert "204" in spec.operation("delete", url)["responses"]  # type: ignore[index]
    again = send("DELETE", path, json={"user": "u1"}) if name == "conversation" else send("DELETE", path)
    assert again.status_code == 404 and dify_error_problems(404, again.json()) == []


def test_every_route_is_exercised_by_the_contract_table(fake: FakeDify) -> None:
    covered = {(c.method.upper(), "/v1" + c.template) for c in CALLS.values()}
    covered |= {("DELETE", "/v1" + t) for t in (SEG, DOC, "/apps/annotations/{annotation_id}")}
    covered |= {("DELETE", "/v1/conversations/{conversation_id}"), ("GET", "/v1/")}
    streamed = {("POST", "/v1/chat-messages"), ("POST", "/v1/workflows/run")}
    aliases = {"/document/create_by_text", "/update_by_text"}
    routes = set()
    for route in fake.api.routes:
        method, path = route.name.split(" ", 1)  # type: ignore[attr-defined]
        if not any(path.endswith(alias) for alias in aliases):
            routes.add((method, path.replace(":uuid}", "}")))
    assert routes - covered - streamed == set()


# --- 2. streaming -------------------------------------------------------------------------------


def _stream(client: httpx.Client, path: str, key: str, body: dict[str, Any]) -> tuple[httpx.Response, str]:
    with client.stream("POST", path, headers=auth(key), json=body) as response:
        return response, "".join(response.iter_text())


@EVERY_FIELD
@pytest.mark.parametrize("mode", ["chat", "advanced-chat"])
def test_streamed_answers_follow_the_framing_and_the_event_schemas(
    state: FakeDifyState, central: Central, spec: DifySpec, mode: str, every_field: bool
) -> None:
    app, key = state.add_app("Chatflow", mode, dataset_ids=[central.dataset_id])  # type: ignore[arg-type]
    fake = create_fake_dify(state, ping_interval=0.005, token_delay=0.03)  # pings between the chunks
    body = {"query": "How long does standard delivery take?", "user": "u", "inputs": {}, "response_mode": "streaming"}
    with httpx.Client(transport=FakeDifyTransport(fake), base_url="http://dify.test") as client:
        response, text = _stream(client, "/v1/chat-messages", key, body)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    frames = sse_frames(text)
    events = [f for f in frames if f is not None]
    assert None in frames, "keep-alive pings are interleaved"
    assert events[0]["conversation_id"] and events[0]["message_id"], "the first event carries the ids"
    kinds = [e["event"] for e in events]
    if mode == "chat":
        assert kinds[-1] == "message_end" and set(kinds) == {"message", "message_end"}
    else:
        assert kinds[:3] == ["workflow_started", "node_started", "node_finished"]
        assert kinds[-2:] == ["message_end", "workflow_finished"]
    for event in events:
        assert spec.check(event, spec.event_ref(event["event"]), every_field=every_field) == [], event
    end = events[kinds.index("message_end")]
    assert end["metadata"]["retriever_resources"] and end["metadata"]["usage"]["total_tokens"] > 0
    answer = "".join(e["answer"] for e in events if e["event"] == "message")
    assert answer == state.messages[end["message_id"]].answer and app.id == state.messages[end["message_id"]].app_id


@EVERY_FIELD
def test_a_streamed_workflow_run_follows_the_workflow_event_schemas(
    client: httpx.Client, central: Central, spec: DifySpec, every_field: bool
) -> None:
    body = {"inputs": TRANSCRIPT, "user": SESSION, "response_mode": "streaming"}
    response, text = _stream(client, "/v1/workflows/run", central.workflow_key, body)
    events = [f for f in sse_frames(text) if f is not None]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert [e["event"] for e in events] == ["workflow_started", "workflow_finished"]
    for event in events:
        ref = spec.event_ref(event["event"], "ChunkWorkflowEvent")
        assert spec.check(event, ref, every_field=every_field) == [], event


def test_stop_ends_a_stream_and_keeps_the_partial_answer(state: FakeDifyState, central: Central) -> None:
    """The transport lets one chunk be in flight, so the stop lands while most of the answer is unsent."""
    fake = create_fake_dify(state, token_delay=0.01)
    body = {"query": "How long does standard delivery take?", "user": "u", "inputs": {}, "response_mode": "streaming"}
    with (
        httpx.Client(transport=FakeDifyTransport(fake), base_url="http://dify.test") as client,
        client.stream("POST", "/v1/chat-messages", headers=auth(central.chat_key), json=body) as response,
    ):
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        task_id = json.loads(first.removeprefix("data: "))["task_id"]
        stop = client.post(f"/v1/chat-messages/{task_id}/stop", headers=auth(central.chat_key), json={"user": "u"})
        assert stop.json() == {"result": "success"}
        rest = list(lines)
    events = [json.loads(line[6:]) for line in rest if line.startswith("data: ")]
    assert events[-1]["event"] == "message_end"
    message = state.messages[events[-1]["message_id"]]
    assert 0 < len(message.answer) < len("Standard delivery takes 3 to 5 business days; express delivery arrives")


def test_future_events_add_what_a_newer_dify_would(state: FakeDifyState, central: Central) -> None:
    fake = create_fake_dify(state, future_events=True)
    body = {"query": "Where is my refund?", "user": "u", "inputs": {}, "response_mode": "streaming"}
    with httpx.Client(transport=FakeDifyTransport(fake), base_url="http://dify.test") as client:
        _, text = _stream(client, "/v1/chat-messages", central.chat_key, body)
    events = [f for f in sse_frames(text) if f is not None]
    assert [e["event"] for e in events][-2:] == ["future_event", "message_end"]
    assert all("future_field" in e for e in events if e["event"] == "message")


# --- 3. auth and the error envelope --------------------------------------------------------------

MISSING = "Authorization header must be provided and start with 'Bearer'"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, MISSING),
        ("Bearer", MISSING),
        ("Basic dXNlcjpwYXNz", "Authorization scheme must be 'Bearer'"),
        ("Bearer app-unknownunknownunknown00", "Access token is invalid"),
        ("Bearer {dataset_key}", "Access token is invalid"),  # the wrong key type
    ],
    ids=["missing", "no-space", "basic", "unknown", "dataset-key-on-app-route"],
)
def test_the_three_401s(client: httpx.Client, central: Central, header: str | None, message: str) -> None:
    headers = {} if header is None else {"Authorization": header.format(dataset_key=central.dataset_key)}
    response = client.get("/v1/parameters", headers=headers)
    assert response.status_code == 401 and response.json()["message"] == message
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert dify_error_problems(401, response.json()) == [] and response.json()["code"] == "unauthorized"


def test_an_app_key_on_the_knowledge_api_is_invalid(client: httpx.Client, central: Central) -> None:
    response = client.get("/v1/datasets", headers=auth(central.chat_key))
    assert (response.status_code, response.json()["message"]) == (401, "Access token is invalid")


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_the_scheme_is_case_insensitive(client: httpx.Client, central: Central, scheme: str) -> None:
    assert client.get("/v1/info", headers={"Authorization": f"{scheme} {central.chat_key}"}).status_code == 200


def test_a_revoked_key_and_a_disabled_app(api: Api, state: FakeDifyState, central: Central) -> None:
    state.set_app_api(central.chat_app_id, False)
    disabled = api.chat("GET", "/parameters")
    assert (disabled.status_code, disabled.json()["code"]) == (403, "forbidden")
    assert disabled.json()["message"] == "The app's API service has been disabled."
    state.set_app_api(central.chat_app_id, True)
    assert api.chat("GET", "/parameters").status_code == 200
    state.revoke_key(central.chat_key)
    assert api.chat("GET", "/parameters").json()["message"] == "Access token is invalid"


def test_dataset_access_rules(api: Api, state: FakeDifyState, central: Central, client: httpx.Client) -> None:
    unknown = api.ds("GET", f"/datasets/{NO_SUCH}")
    assert (unknown.status_code, unknown.json()["message"]) == (404, "Dataset not found.")
    state.knowledge.set_dataset_api(central.dataset_id, False)
    closed = api.ds("GET", api.dataset + "/documents")
    assert (closed.status_code, closed.json()["message"]) == (403, "Dataset api access is not enabled.")
    state.knowledge.set_dataset_api(central.dataset_id, True)
    other = state.knowledge.add_dataset("Other")
    bound = state.add_dataset_key([other.id])
    assert client.get(f"/v1{api.dataset}", headers=auth(bound)).status_code == 403
    listed = client.get("/v1/datasets", headers=auth(bound)).json()["data"]
    assert [d["id"] for d in listed] == [other.id]


BAD_REQUESTS = [
    ("not-json", "POST", "/v1/chat-messages", {"content": b"query=hi", "headers": {"Content-Type": "text/plain"}}, 415),
    ("no-content-type", "POST", "/v1/chat-messages", {"content": b'{"query": "hi"}'}, 415),
    ("empty-json", "POST", "/v1/chat-messages", {"content": b"", "headers": {"Content-Type": "application/json"}}, 400),
    (
        "broken-json",
        "POST",
        "/v1/chat-messages",
        {"content": b"{", "headers": {"Content-Type": "application/json"}},
        400,
    ),
    ("no-user", "POST", "/v1/chat-messages", {"json": {"query": "hi", "inputs": {}}}, 400),
    ("no-query", "POST", "/v1/chat-messages", {"json": {"user": "u", "inputs": {}}}, 400),
    ("no-inputs", "POST", "/v1/chat-messages", {"json": {"user": "u", "query": "hi"}}, 400),
    (
        "bad-conversation",
        "POST",
        "/v1/chat-messages",
        {"json": {"user": "u", "query": "q", "inputs": {}, "conversation_id": "c"}},
        400,
    ),
    (
        "unknown-conversation",
        "POST",
        "/v1/chat-messages",
        {"json": {"user": "u", "query": "q", "inputs": {}, "conversation_id": NO_SUCH}},
        404,
    ),
    (
        "bad-mode",
        "POST",
        "/v1/chat-messages",
        {"json": {"user": "u", "query": "q", "inputs": {}, "response_mode": "x"}},
        400,
    ),
    ("non-uuid-id", "PUT", "/v1/apps/annotations/a-1", {"json": {"question": "q", "answer": "a"}}, 404),
    ("unknown-annotation", "PUT", f"/v1/apps/annotations/{NO_SUCH}", {"json": {"question": "q", "answer": "a"}}, 404),
    ("annotation-no-answer", "POST", "/v1/apps/annotations", {"json": {"question": "q"}}, 400),
    ("limit-zero", "GET", "/v1/conversations", {"params": {"limit": 0}}, 400),
    ("limit-101", "GET", "/v1/conversations", {"params": {"limit": 101}}, 400),
    ("sort-by", "GET", "/v1/conversations", {"params": {"sort_by": "name"}}, 400),
    ("last-unknown", "GET", "/v1/conversations", {"params": {"last_id": NO_SUCH}}, 404),
    ("messages-no-conversation", "GET", "/v1/messages", {}, 400),
    ("page-not-int", "GET", "/v1/apps/annotations", {"params": {"page": "two"}}, 400),
    ("wrong-method", "PATCH", "/v1/parameters", {}, 405),
    ("unknown-route", "GET", "/v1/nowhere", {}, 404),
    ("trailing-slash", "GET", "/v1/parameters/", {}, 404),
    ("wrong-mode-workflow", "POST", "/v1/workflows/run", {"json": {"inputs": {}, "user": "u"}}, 400),
    ("job-unknown", "GET", f"/v1/apps/annotation-reply/enable/status/{NO_SUCH}", {}, 400),
]


@pytest.mark.parametrize(("name", "method", "path", "kwargs", "status"), BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_bad_requests_get_dify_errors(
    client: httpx.Client, central: Central, name: str, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    kwargs = dict(kwargs)
    headers = {**auth(central.chat_key), **kwargs.pop("headers", {})}
    response = client.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert dify_error_problems(status, response.json()) == []


def test_error_codes_and_messages_are_difys(api: Api) -> None:
    assert api.chat("POST", "/chat-messages", json={"query": "q", "inputs": {}}).json()["message"] == (
        "Arg user must be provided."
    )
    assert api.chat("POST", "/chat-messages", content=b"", headers={"Content-Type": "application/json"}).json() == {
        "code": "bad_request",
        "message": "Invalid JSON payload received or JSON payload is empty.",
        "status": 400,
    }
    assert (
        api.wf("POST", "/chat-messages", json={"query": "q", "user": "u", "inputs": {}}).json()["code"]
        == "not_chat_app"
    )
    assert api.chat("POST", "/workflows/run", json={"inputs": {}, "user": "u"}).json()["code"] == "not_workflow_app"
    assert api.ds("GET", "/datasets/not-a-uuid").json()["message"] == NO_SUCH_URL
    missing = api.run(inputs={"store_id": "s"})
    assert (missing.status_code, missing.json()["code"]) == (400, "invalid_param")
    assert missing.json()["message"] == "kiosk_id is required in input form"
    long = api.run(inputs={**TRANSCRIPT, "store_id": "s" * 49})
    assert long.json()["message"] == "store_id in input form must be less than 48 characters"


# --- 4. pagination quirks ------------------------------------------------------------------------


def test_page_lists_say_has_more_when_the_page_is_full(api: Api, state: FakeDifyState, central: Central) -> None:
    """`has_more = len(data) == limit`: a full last page says true and the next page is empty."""
    first = api.ds("GET", api.dataset + "/documents", params={"limit": 3}).json()
    assert (len(first["data"]), first["has_more"], first["total"]) == (3, True, 3)
    second = api.ds("GET", api.dataset + "/documents", params={"limit": 3, "page": 2}).json()
    assert (second["data"], second["has_more"], second["page"]) == ([], False, 2)
    for _ in range(3):
        state.add_annotation(central.chat_app_id, "q", "a")
    six = api.chat("GET", "/apps/annotations", params={"limit": 3, "page": 2}).json()
    assert (len(six["data"]), six["has_more"], six["total"]) == (3, True, 6)


def test_limits_above_100_are_capped_and_then_never_say_has_more(api: Api, state: FakeDifyState) -> None:
    doc = state.knowledge.add_document(api.central.dataset_id, "Long", segments=[f"Part {n}." for n in range(150)])
    body = api.ds("GET", f"{api.dataset}/documents/{doc.id}/segments", params={"limit": 500}).json()
    assert (len(body["data"]), body["limit"], body["has_more"], body["total"]) == (100, 500, False, 150)
    full = api.ds("GET", f"{api.dataset}/documents/{doc.id}/segments", params={"limit": 100}).json()
    assert (len(full["data"]), full["has_more"]) == (100, True)


def test_orderings(api: Api, state: FakeDifyState, central: Central) -> None:
    """Documents newest first; segments by position; annotations newest first."""
    state.clock.advance(60)
    newest = state.knowledge.add_document(central.dataset_id, "Newest", "a\n\nb\n\nc")
    names = [d["name"] for d in api.ds("GET", api.dataset + "/documents").json()["data"]]
    assert names == ["Newest", "Payments", "Delivery", "Returns and refunds"]
    positions = [s["position"] for s in api.ds("GET", f"{api.dataset}/documents/{newest.id}/segments").json()["data"]]
    assert positions == [1, 2, 3]
    state.add_annotation(central.chat_app_id, "Latest?", "Yes.")
    assert api.chat("GET", "/apps/annotations").json()["data"][0]["question"] == "Latest?"


def test_workflow_logs_have_an_accurate_has_more_and_find_the_session(api: Api) -> None:
    for n in range(3):
        assert api.run(user=f"{SESSION}-{n}").status_code == 200
    page = api.wf("GET", "/workflows/logs", params={"limit": 3}).json()
    assert (page["total"], page["has_more"]) == (3, False)
    found = api.wf("GET", "/workflows/logs", params={"created_by_end_user_session_id": f"{SESSION}-1"}).json()
    assert [d["created_by_end_user"]["session_id"] for d in found["data"]] == [f"{SESSION}-1"]
    assert api.wf("GET", "/workflows/logs", params={"created_by_end_user_session_id": SESSION}).json()["total"] == 0
    by_keyword = api.wf("GET", "/workflows/logs", params={"keyword": TRANSCRIPT["edge_session_id"]}).json()
    assert by_keyword["total"] == 3  # the keyword searches inputs too (its first 30 characters)


def test_messages_and_conversations_keysets(api: Api, state: FakeDifyState) -> None:
    conversation = None
    for n in range(5):
        state.clock.advance(1)
        extra = {"conversation_id": conversation} if conversation else {}
        conversation = api.ask(f"question {n}", **extra).json()["conversation_id"]
    newest = api.chat("GET", "/messages", params={"conversation_id": conversation, "user": "u1", "limit": 2}).json()
    assert [m["query"] for m in newest["data"]] == ["question 3", "question 4"] and newest["has_more"]
    older = api.chat(
        "GET",
        "/messages",
        params={"conversation_id": conversation, "user": "u1", "limit": 2, "first_id": newest["data"][0]["id"]},
    ).json()
    assert [m["query"] for m in older["data"]] == ["question 1", "question 2"] and older["has_more"]
    other_user = api.chat("GET", "/messages", params={"conversation_id": conversation, "user": "mallory"})
    assert (other_user.status_code, other_user.json()["message"]) == (404, "Conversation Not Exists.")
    listed = api.chat("GET", "/conversations", params={"user": "u1", "limit": 1}).json()
    assert [c["id"] for c in listed["data"]] == [conversation] and listed["has_more"] is False
    assert api.chat("GET", "/conversations", params={"user": "someone-new", "limit": 1}).json()["data"] == []


# --- 5. knowledge fingerprints and edits -------------------------------------------------------


def test_document_list_items_have_no_updated_at_but_the_detail_does(api: Api) -> None:
    item = api.ds("GET", api.dataset + "/documents").json()["data"][0]
    assert "updated_at" not in item and "completed_at" not in item
    detail = api.ds("GET", f"{api.dataset}/documents/{item['id']}").json()
    assert detail["updated_at"] and detail["completed_at"] and detail["segment_count"] >= 2
    assert (
        "doc_metadata"
        not in api.ds("GET", f"{api.dataset}/documents/{item['id']}", params={"metadata": "without"}).json()
    )


def test_a_content_edit_moves_updated_at_and_index_node_hash(api: Api, state: FakeDifyState) -> None:
    doc = api.doc()
    url = f"{api.dataset}/documents/{doc}/segments/{api.segment(doc)}"
    before = api.ds("GET", url).json()["data"]
    state.clock.advance(5)
    after = api.ds("POST", url, json={"segment": {"content": "Changed."}}).json()["data"]
    assert after["index_node_hash"] != before["index_node_hash"] and after["updated_at"] == before["updated_at"] + 5
    assert (after["id"], after["position"]) == (before["id"], before["position"])
    state.clock.advance(5)
    disabled = api.ds("POST", url, json={"segment": {"enabled": False}}).json()["data"]
    assert (disabled["enabled"], disabled["index_node_hash"]) == (False, after["index_node_hash"])
    refused = api.ds("POST", url, json={"segment": {"content": "while disabled"}})
    assert (refused.status_code, refused.json()["message"]) == (400, "Can't update disabled segment")


def test_segment_create_delete_and_status_filter(api: Api, state: FakeDifyState) -> None:
    doc = api.doc()
    url = f"{api.dataset}/documents/{doc}/segments"
    created = api.ds("POST", url, json={"segments": [{"content": "A new rule.", "keywords": ["rule"]}]}).json()["data"]
    assert created[0]["position"] == 3 and created[0]["keywords"] == ["rule"]
    assert api.ds("DELETE", f"{url}/{created[0]['id']}").status_code == 204
    assert [s["position"] for s in api.ds("GET", url, params={"status": "completed"}).json()["data"]] == [1, 2]
    assert api.ds("GET", url, params={"status": "indexing"}).json()["data"] == []
    assert api.ds("GET", url, params={"keyword": "visa"}).json()["total"] == 1


def test_reindexing_replaces_every_segment_id(api: Api, state: FakeDifyState) -> None:
    doc = api.doc()
    url = f"{api.dataset}/documents/{doc}/segments"
    before = {s["id"]: s["content"] for s in api.ds("GET", url).json()["data"]}
    state.knowledge.reindex_document(doc)
    after = {s["id"]: s["content"] for s in api.ds("GET", url).json()["data"]}
    assert not set(before) & set(after) and sorted(before.values()) == sorted(after.values())


def test_create_by_text_walks_the_indexing_stages_on_the_clock(api: Api, state: FakeDifyState) -> None:
    state.knowledge.index_step_seconds = 10
    created = api.ds("POST", api.dataset + "/document/create-by-text", json={"name": "New", "text": "One.\n\nTwo."})
    doc, batch = created.json()["document"], created.json()["batch"]
    assert doc["indexing_status"] == "waiting" and doc["display_status"] == "queuing" and len(batch) == 20
    seen = []
    for _ in range(6):
        seen.append(
            api.ds("GET", f"{api.dataset}/documents/{batch}/indexing-status").json()["data"][0]["indexing_status"]
        )
        state.clock.advance(10)
    assert seen == ["waiting", "parsing", "cleaning", "splitting", "indexing", "completed"]
    segments = api.ds("GET", f"{api.dataset}/documents/{doc['id']}/segments").json()
    assert [s["status"] for s in segments["data"]] == ["completed", "completed"]


def test_segments_can_only_be_added_to_a_completed_enabled_document(api: Api, state: FakeDifyState) -> None:
    doc = api.doc()
    api.ds("PATCH", api.dataset + "/documents/status/disable", json={"document_ids": [doc]})
    refused = api.ds("POST", f"{api.dataset}/documents/{doc}/segments", json={"segments": [{"content": "x"}]})
    assert (refused.status_code, refused.json()["message"]) == (404, "Document is disabled.")
    item = next(d for d in api.ds("GET", api.dataset + "/documents").json()["data"] if d["id"] == doc)
    assert (item["enabled"], item["display_status"]) == (False, "disabled")
    bad = api.ds("PATCH", api.dataset + "/documents/status/explode", json={"document_ids": [doc]})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_action")


def test_annotations_are_never_deduplicated(api: Api) -> None:
    for _ in range(2):
        assert api.chat("POST", "/apps/annotations", json={"question": "Same?", "answer": "Same."}).status_code == 201
    assert api.chat("GET", "/apps/annotations", params={"keyword": "same"}).json()["total"] == 2


def test_annotation_reply_job_moves_on_each_poll(api: Api, state: FakeDifyState, central: Central) -> None:
    job = api.chat("POST", "/apps/annotation-reply/disable", json={"score_threshold": 0.8, **_EMBEDDING}).json()
    statuses = [
        api.chat("GET", f"/apps/annotation-reply/disable/status/{job['job_id']}").json()["job_status"] for _ in range(3)
    ]
    assert statuses == ["waiting", "processing", "completed"]
    assert api.chat("GET", "/parameters").json()["annotation_reply"]["enabled"] is False
    incomplete = api.chat("POST", "/apps/annotation-reply/enable", json={"score_threshold": 0.8})
    assert incomplete.status_code == 400


# --- 6. chat records ----------------------------------------------------------------------------


def test_inputs_freeze_at_turn_one_and_feedback_upserts(api: Api, state: FakeDifyState, central: Central) -> None:
    app = state.apps[central.chat_app_id]
    app.user_input_form = [{"text-input": {"label": "Store", "variable": "store", "required": False}}]
    first = api.ask(inputs={"store": "A"}).json()
    api.ask("again", conversation_id=first["conversation_id"], inputs={"store": "B"})
    messages = api.chat("GET", "/messages", params={"conversation_id": first["conversation_id"], "user": "u1"}).json()
    assert [m["inputs"] for m in messages["data"]] == [{"store": "A"}, {"store": "A"}]
    url = f"/messages/{first['id']}/feedbacks"
    assert api.chat("POST", url, json={"rating": None, "user": "u1"}).status_code == 400
    for rating in ("like", "like", "dislike"):
        assert api.chat("POST", url, json={"rating": rating, "user": "u1"}).json() == {"result": "success"}
    assert [f["rating"] for f in api.chat("GET", "/app/feedbacks").json()["data"]] == ["dislike"]
    assert api.chat("POST", url, json={"rating": "like", "user": "mallory"}).status_code == 404


def test_retrieval_grounds_the_answer_and_counts_hits(api: Api, state: FakeDifyState) -> None:
    body = api.ask("Which cards do you accept for payment?").json()
    resource = body["metadata"]["retriever_resources"][0]
    assert body["answer"] == resource["content"] and "Visa" in body["answer"]
    segment = state.knowledge.segments[resource["segment_id"]]
    assert segment.hit_count == 1 and resource["index_node_hash"] == segment.index_node_hash


def test_the_same_seed_gives_the_same_ids_and_keys() -> None:
    def build() -> tuple[Central, list[str]]:
        state = FakeDifyState(seed=7, clock=Clock(start=1_700_000_000))
        central = seed_demo(state)
        return central, sorted(state.knowledge.segments)

    assert build() == build()
    assert seed_demo(FakeDifyState(seed=8)).chat_key != build()[0].chat_key


def test_create_by_text_cuts_at_a_custom_separator(api: Api) -> None:
    rule = {"mode": "custom", "rules": {"segmentation": {"separator": "###", "max_tokens": 500}}}
    body = {"name": "Hours", "text": "Mon-Fri 9-18###Sat 10-16###Sun closed", "process_rule": rule}
    doc = api.ds("POST", api.dataset + "/document/create-by-text", json=body).json()["document"]
    segments = api.ds("GET", f"{api.dataset}/documents/{doc['id']}/segments").json()["data"]
    assert [s["content"] for s in segments] == ["Mon-Fri 9-18", "Sat 10-16", "Sun closed"]
