"""The fake central's chat app as the box's live escalation sees it (issue #13): shapes against Dify's
document, answers from the knowledge base, conversation continuity, and every chat fault."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fake_dify import FakeDify, FakeDifyState, FakeDifyTransport, LiveFakeDify, create_fake_dify
from tests.fake_dify.conftest import auth
from tests.fake_dify.demo import ChatCentral, seed_chat
from tests.fake_dify.routes_chat import NO_ANSWER, NO_ANSWER_ZH
from tests.fake_dify.spec import DifySpec, dify_error_problems, sse_frames

FACTS = [
    {"title": "Vouchers", "content": "Gift vouchers are valid for three years and can be used in any of our stores."},
    {"title": "Vouchers", "content": "礼品券自购买之日起三年内有效，可在我们所有门店使用。"},
    {"title": "Installation", "content": "We install large appliances for free within two weeks after delivery."},
    {"title": "Installation", "content": "大家电送货后两周内免费上门安装。"},
]
VOUCHER = "How long are gift vouchers valid?"
VOUCHER_ZH = "礼品券有效期多久？"


@pytest.fixture
def chat(state: FakeDifyState) -> ChatCentral:
    return seed_chat(state, FACTS)


@pytest.fixture
def fake(state: FakeDifyState, chat: ChatCentral) -> FakeDify:
    return create_fake_dify(state)


@pytest.fixture
def client(fake: FakeDify) -> Iterator[httpx.Client]:
    with httpx.Client(transport=FakeDifyTransport(fake), base_url="http://dify.test", timeout=5) as http:
        yield http


def ask(client: httpx.Client, key: str, query: str = VOUCHER, **extra: Any) -> httpx.Response:
    body = {"query": query, "user": "kiosk-1", "inputs": {}, "response_mode": "blocking", **extra}
    return client.post("/v1/chat-messages", headers=auth(key), json=body)


def stream(client: httpx.Client, key: str, query: str = VOUCHER, **extra: Any) -> tuple[httpx.Response, str]:
    body = {"query": query, "user": "kiosk-1", "inputs": {}, "response_mode": "streaming", **extra}
    with client.stream("POST", "/v1/chat-messages", headers=auth(key), json=body) as response:
        return response, response.read().decode()


def events(text: str) -> list[dict[str, Any]]:
    return [f for f in sse_frames(text) if f is not None]


# --- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("every_field", [False, True], ids=["as-written", "every-field"])
def test_a_blocking_answer_follows_the_document(
    client: httpx.Client, chat: ChatCentral, spec: DifySpec, every_field: bool
) -> None:
    response = ask(client, chat.key)
    body = response.json()
    assert response.status_code == 200
    assert spec.check(body, spec.response_ref("post", "/chat-messages"), every_field=every_field) == []
    assert (body["event"], body["mode"], body["id"]) == ("message", "chat", body["message_id"])
    assert body["answer"] == FACTS[0]["content"]
    assert body["metadata"]["usage"]["total_tokens"] > 0
    assert body["metadata"]["retriever_resources"][0]["document_name"] == "Vouchers"


@pytest.mark.parametrize("query", [VOUCHER, VOUCHER_ZH], ids=["en", "zh"])
def test_a_streamed_answer_follows_the_framing_and_the_event_schemas(
    state: FakeDifyState, chat: ChatCentral, spec: DifySpec, query: str
) -> None:
    fake = create_fake_dify(state, ping_interval=0.005, token_delay=0.02)
    with httpx.Client(transport=FakeDifyTransport(fake), base_url="http://dify.test", timeout=5) as client:
        response, text = stream(client, chat.key, query)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert all(block.startswith(("data: {", "event: ping")) for block in text.split("\n\n") if block)
    frames = sse_frames(text)
    assert None in frames, "pings between the chunks"
    got = events(text)
    kinds = [e["event"] for e in got]
    assert kinds[-1] == "message_end" and kinds.count("message") >= 3, "an answer in several chunks"
    for event in got:
        assert spec.check(event, spec.event_ref(event["event"]), every_field=True) == [], event
    answer = "".join(e["answer"] for e in got if e["event"] == "message")
    assert answer == next(f["content"] for f in FACTS if f["content"] == answer)
    assert got[-1]["metadata"]["retriever_resources"] and got[-1]["metadata"]["usage"]


# --- auth and validation --------------------------------------------------------------------------


def test_keys_other_than_a_chat_apps_are_refused(client: httpx.Client, state: FakeDifyState) -> None:
    _, workflow_key = state.add_app("Ingest", "workflow")
    body = {"query": "hi", "user": "u", "inputs": {}}
    cases = [
        ({}, 401, "unauthorized"),
        (auth("app-unknownunknownunknown1"), 401, "unauthorized"),
        (auth(state.add_dataset_key()), 401, "unauthorized"),
        (auth(workflow_key), 400, "not_chat_app"),
    ]
    for headers, status, code in cases:
        response = client.post("/v1/chat-messages", headers=headers, json=body)
        assert (response.status_code, response.json()["code"]) == (status, code)
        assert dify_error_problems(status, response.json()) == []
        if status == 401:
            assert response.headers["www-authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"query": None}, 400, "query is required"),
        ({"user": None}, 400, "Arg user must be provided."),
        ({"inputs": None}, 400, "inputs is required"),
        ({"response_mode": "fast"}, 400, "response_mode must be blocking or streaming"),
        ({"conversation_id": "nope"}, 400, "nope is not a valid uuid."),
        ({"conversation_id": "00000000-0000-4000-8000-000000000000"}, 404, "Conversation Not Exists."),
    ],
)
def test_bad_requests_get_dify_errors(
    client: httpx.Client, chat: ChatCentral, change: dict[str, Any], status: int, message: str
) -> None:
    body = {k: v for k, v in ({"query": "hi", "user": "u", "inputs": {}} | change).items() if v is not None}
    response = client.post("/v1/chat-messages", headers=auth(chat.key), json=body)
    assert (response.status_code, response.json()["message"]) == (status, message)
    assert response.json()["code"] == ("not_found" if status == 404 else "invalid_param")
    assert dify_error_problems(status, response.json()) == []


def test_files_are_ignored(client: httpx.Client, chat: ChatCentral) -> None:
    files = [{"type": "image", "transfer_method": "remote_url", "url": "https://example.invalid/a.png"}]
    assert ask(client, chat.key, files=files).json()["answer"] == FACTS[0]["content"]


# --- answers and conversations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "answer"),
    [
        ("Do you install appliances after delivery?", FACTS[2]["content"]),
        ("送货以后可以安装吗", FACTS[3]["content"]),
        (VOUCHER_ZH, FACTS[1]["content"]),
        ("What is the capital of France?", NO_ANSWER),
        ("法国的首都是哪里？", NO_ANSWER_ZH),
    ],
)
def test_answers_come_from_the_knowledge_or_honestly_not(
    client: httpx.Client, chat: ChatCentral, query: str, answer: str
) -> None:
    body = ask(client, chat.key, query).json()
    assert body["answer"] == answer
    assert bool(body["metadata"]["retriever_resources"]) == (answer not in (NO_ANSWER, NO_ANSWER_ZH))


def test_a_least_score_turns_weak_matches_into_no_answer(
    fake: FakeDify, client: httpx.Client, chat: ChatCentral
) -> None:
    weak = "Are our stores open on Sunday?"  # shares only "stores" with the voucher fact
    assert ask(client, chat.key, weak).json()["answer"] == FACTS[0]["content"]
    fake.configure(chat_min_score=0.5)
    assert ask(client, chat.key, weak).json()["answer"] == NO_ANSWER


def test_a_follow_up_continues_the_conversation(fake: FakeDify, client: httpx.Client, chat: ChatCentral) -> None:
    first = ask(client, chat.key).json()
    _, text = stream(
        client, chat.key, "And after delivery, do you install it?", conversation_id=first["conversation_id"]
    )
    follow = events(text)
    assert {e["conversation_id"] for e in follow} == {first["conversation_id"]}
    assert fake.state.chat_queries(first["conversation_id"]) == [VOUCHER, "And after delivery, do you install it?"]
    other = ask(client, chat.key, conversation_id=first["conversation_id"], user="kiosk-2")
    assert (other.status_code, other.json()["message"]) == (404, "Conversation Not Exists.")
    assert fake.journal.count("POST", "/v1/chat-messages") == 3


# --- faults ---------------------------------------------------------------------------------------


def test_first_byte_delay_holds_a_blocking_answer(fake: FakeDify, client: httpx.Client, chat: ChatCentral) -> None:
    fake.faults.first_byte(0.3)
    started = time.monotonic()
    assert ask(client, chat.key).json()["answer"] == FACTS[0]["content"]
    assert time.monotonic() - started >= 0.3
    fake.faults.first_byte(5)
    with (
        httpx.Client(transport=FakeDifyTransport(fake), base_url="http://dify.test", timeout=0.2) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        ask(impatient, chat.key)
    assert len(fake.state.chat_queries()) == 2, "the abandoned question still left a conversation behind"


def test_first_byte_delay_with_headers_first_keeps_pinging(state: FakeDifyState, chat: ChatCentral) -> None:
    fake = create_fake_dify(state, ping_interval=0.05)
    fake.faults.first_byte(0.3, headers_first=True)
    body = {"query": VOUCHER, "user": "u", "inputs": {}, "response_mode": "streaming"}
    with (
        httpx.Client(transport=FakeDifyTransport(fake), base_url="http://dify.test", timeout=5) as client,
        client.stream("POST", "/v1/chat-messages", headers=auth(chat.key), json=body) as response,
    ):
        started = time.monotonic()
        assert response.status_code == 200
        lines = response.iter_lines()
        before = []
        for line in lines:
            before.append(line)
            if line.startswith("data: "):
                break
        waited = time.monotonic() - started
        rest = "".join(lines)
    assert waited >= 0.25 and "event: ping" in before, "headers at once, then pings while the model thinks"
    assert json.loads(before[-1][6:])["event"] == "message" and "message_end" in rest
    assert fake.journal.entries("POST")[0].fault == "fault-1"


def test_an_error_event_after_two_chunks(
    fake: FakeDify, client: httpx.Client, chat: ChatCentral, spec: DifySpec
) -> None:
    fake.faults.sse_error(after_events=2, status=500, code="internal_server_error", message="boom")
    response, text = stream(client, chat.key)
    got = events(text)
    assert response.status_code == 200 and [e["event"] for e in got] == ["message", "message", "error"]
    assert (got[-1]["status"], got[-1]["code"], got[-1]["message"]) == (500, "internal_server_error", "boom")
    assert spec.check(got[-1], spec.event_ref("error"), every_field=True) == []
    assert fake.journal.entries("POST")[0].outcome == "stream_error"


def test_a_stream_cut_after_three_events(fake: FakeDify, client: httpx.Client, chat: ChatCentral) -> None:
    fake.faults.sse_drop(after_events=3)
    lines: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream(
            "POST",
            "/v1/chat-messages",
            headers=auth(chat.key),
            json={"query": VOUCHER, "user": "u", "inputs": {}, "response_mode": "streaming"},
        ) as response,
    ):
        lines.extend(response.iter_lines())
    assert [json.loads(x[6:])["event"] for x in lines if x.startswith("data: ")] == ["message"] * 3
    assert fake.journal.entries("POST")[0].outcome == "stream_dropped"


@pytest.mark.parametrize(
    ("retry_after", "header"), [(None, None), (30, "30"), (1.5, "1.5")], ids=["as-dify", "gateway", "fraction"]
)
def test_rate_limited(
    fake: FakeDify, client: httpx.Client, chat: ChatCentral, retry_after: float | None, header: str | None
) -> None:
    fake.faults.rate_limit("/v1/chat-messages", retry_after=retry_after)
    response = ask(client, chat.key)
    assert (response.status_code, response.json()["code"]) == (429, "too_many_requests")
    assert response.headers.get("retry-after") == header
    assert ask(client, chat.key).status_code == 200, "once (times=1 by default)"


@pytest.mark.parametrize(
    ("status", "options", "json_body"),
    [(401, {}, True), (500, {}, True), (503, {}, False), (503, {"code": "service_unavailable"}, True)],
    ids=["401", "500", "503-nginx", "503-dify"],
)
def test_http_errors(
    fake: FakeDify, client: httpx.Client, chat: ChatCentral, status: int, options: dict[str, Any], json_body: bool
) -> None:
    fake.faults.error("/v1/chat-messages", status, times=None, **options)
    for mode in ("blocking", "streaming"):
        response = ask(client, chat.key, response_mode=mode)
        assert response.status_code == status
        if json_body:
            assert dify_error_problems(status, response.json()) == []
        else:
            assert response.headers["content-type"].startswith("text/html") and "nginx" in response.text
    assert fake.journal.count("POST", "/v1/chat-messages") == 2 and fake.state.chat_queries() == {}


def test_a_malformed_data_line(fake: FakeDify, client: httpx.Client, chat: ChatCentral) -> None:
    fake.faults.sse_malformed(after_events=1, how="json")
    _, text = stream(client, chat.key)
    blocks = [b for b in text.split("\n\n") if b]
    with pytest.raises(json.JSONDecodeError):
        json.loads(blocks[1].removeprefix("data: "))
    rest = [json.loads(b[6:]) for b in blocks[:1] + blocks[2:] if b.startswith("data: ")]
    assert rest[0]["event"] == "message" and rest[-1]["event"] == "message_end", "the stream goes on"


def test_a_wrongly_shaped_and_an_unknown_event(fake: FakeDify, client: httpx.Client, chat: ChatCentral) -> None:
    fake.faults.sse_malformed(after_events=2, how="shape")
    got = events(stream(client, chat.key)[1])
    assert got[2]["event"] == "message" and not isinstance(got[2]["answer"], str) and "message_id" not in got[2]
    fake.faults.sse_malformed(after_events=0, how="unknown")
    got = events(stream(client, chat.key)[1])
    assert got[0]["event"] == "future_event" and got[0]["conversation_id"] == got[1]["conversation_id"]
    assert got[-1]["event"] == "message_end"


def test_down_resets_every_request_until_removed(fake: FakeDify, client: httpx.Client, chat: ChatCentral) -> None:
    rule = fake.faults.down()
    for _ in range(2):
        with pytest.raises(httpx.RemoteProtocolError):
            ask(client, chat.key)
    fake.faults.remove(rule.id)
    assert ask(client, chat.key).status_code == 200
    assert fake.journal.count("POST", "/v1/chat-messages") == 3


def test_a_stall_times_the_client_out(fake: FakeDify, client: httpx.Client, chat: ChatCentral) -> None:
    fake.faults.stall("/v1/chat-messages", seconds=30)
    with (
        httpx.Client(transport=FakeDifyTransport(fake), base_url="http://dify.test", timeout=0.2) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        ask(impatient, chat.key)
    assert fake.state.chat_queries() == {}, "nothing committed: the request never reached the app"


def test_fault_json_forms_are_accepted(fake: FakeDify) -> None:
    for spec in [
        {"kind": "first_byte", "path": "/v1/chat-messages", "seconds": 1, "headers_first": True},
        {"kind": "sse_malformed", "path": "/v1/chat-messages", "after_events": 1, "how": "shape"},
        {"kind": "error", "path": "/v1/chat-messages", "status": 429, "code": "too_many_requests", "retry_after": 3},
        {"kind": "drop", "path": "/v1/*", "times": None},
    ]:
        rule = fake.faults.add(spec)
        assert {k: rule.spec[k] for k in spec if k != "kind"} == {k: v for k, v in spec.items() if k != "kind"}
    with pytest.raises(ValueError, match="how"):
        fake.faults.add({"kind": "sse_malformed", "path": "/v1/chat-messages", "how": "weird"})
    with pytest.raises(ValueError, match="seconds"):
        fake.faults.add({"kind": "first_byte", "path": "/v1/chat-messages"})


# --- on a real socket -----------------------------------------------------------------------------


@pytest.fixture
def live(state: FakeDifyState, chat: ChatCentral) -> Iterator[LiveFakeDify]:
    with LiveFakeDify(state) as server:
        yield server


def test_a_live_central_goes_down_and_comes_back(live: LiveFakeDify, chat: ChatCentral) -> None:
    with httpx.Client(base_url=live.url, timeout=5) as client:
        first = ask(client, chat.key).json()
        port = live.port
        live.stop()
        with pytest.raises(httpx.ConnectError):
            ask(client, chat.key)
        live.start()
        assert live.port == port and live.running
        again = ask(client, chat.key, "Do you install after delivery?", conversation_id=first["conversation_id"])
        assert again.json()["conversation_id"] == first["conversation_id"]
    assert live.journal.count("POST", "/v1/chat-messages") == 2, "a refused connection reaches nothing"


def test_the_chat_controls_over_http(live: LiveFakeDify, chat: ChatCentral) -> None:
    with httpx.Client(base_url=live.url, timeout=5) as client:
        first = ask(client, chat.key).json()
        ask(client, chat.key, "送货以后可以安装吗", conversation_id=first["conversation_id"])
        seen = client.get("/_fake/chat").json()
        assert seen == {"requests": 2, "conversations": {first["conversation_id"]: [VOUCHER, "送货以后可以安装吗"]}}
        fault = {"kind": "sse_error", "path": "/v1/chat-messages", "after_events": 1}
        assert client.post("/_fake/faults", json=fault).status_code == 201
        got = events(stream(client, chat.key)[1])
        assert [e["event"] for e in got] == ["message", "error"]
        assert client.patch("/_fake/config", json={"ping_interval": 0.5}).json()["ping_interval"] == 0.5
        assert live.app.config.ping_interval == 0.5
        assert client.patch("/_fake/config", json={"nope": 1}).status_code == 400
        assert client.patch("/_fake/config", json={"token_delay": "slow"}).status_code == 400


def test_a_stopped_port_refuses(live: LiveFakeDify) -> None:
    live.stop()
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect((live.host, live.port))
