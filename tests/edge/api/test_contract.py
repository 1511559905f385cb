"""The app against its wire contract, for real.

1. Every Dify body we produce validates against Dify's own OpenAPI document (a verbatim copy of
   the shared spec in `data/`), twice: as the document is written, and with every property the
   document declares required too. The document marks almost no response field required, yet its
   examples show every one and Dify clients read them; "as written" alone would pass `{}`.
   The document gives error responses no schema, only examples; `DIFY_ERROR` is their common
   shape, and a test checks it against every example the document gives for our routes.
2. A schemathesis run over the app's own OpenAPI (`app.openapi()`), sent through the lifespan
   test client: no 5xx, every 4xx in its family's shape, every Dify 200 in the document's schema.
3. A table of malformed inputs for every route: a clear 4xx in the family's shape.
"""

from __future__ import annotations

import asyncio
import csv
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from edge.api import dify
from edge.api.errors import InvalidParam
from edge.app import create_app
from edge.assistant.pipeline import Delta, Started
from tests.conftest import RETAIL
from tests.edge.api.conftest import AUTH, make_settings
from tests.fake_dify.spec import DIFY_ERROR, DifySpec, _problems  # one reading of the document for both

pytestmark = pytest.mark.slow

SPEC_FILE = Path(__file__).parent / "data" / "dify_openapi_service.json"
CANCEL = "I want to cancel my order"
USER = "abc-123"  # the user of the document's own request examples
OPENAI_ROUTES = ("/v1/chat/completions", "/v1/models")
UNDOCUMENTED_DIFY_ROUTES = {("get", "/v1/")}  # Dify's index route; the document leaves it out
# Fields the document declares but Dify itself leaves out, so "every field" must not demand them.
OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string", "minLength": 1},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def dify_error_problems(response: Any) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return [f"not JSON: {response.text[:200]!r}"]
    problems = _problems(jsonschema.Draft202012Validator(DIFY_ERROR), body)
    if isinstance(body, dict) and body.get("status") != response.status_code:
        problems.append(f"status {body.get('status')!r} is not the HTTP status {response.status_code}")
    return problems


def openai_error_problems(response: Any) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return [f"not JSON: {response.text[:200]!r}"]
    return _problems(jsonschema.Draft202012Validator(OPENAI_ERROR), body)


def error_problems(path: str, response: Any) -> list[str]:
    return (openai_error_problems if path.startswith(OPENAI_ROUTES) else dify_error_problems)(response)


def sse_frames(text: str) -> list[dict[str, Any] | None]:
    """Data events as dicts, `event: ping` as None; any other frame fails the test."""
    frames: list[dict[str, Any] | None] = []
    for block in text.split("\n\n"):
        if not block:
            continue
        if block == "event: ping":
            frames.append(None)
            continue
        assert block.startswith("data: ") and "\n" not in block, f"not a Dify SSE frame: {block!r}"
        frames.append(json.loads(block.removeprefix("data: ")))
    return frames


def send(client: TestClient, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
    """JSON bodies are sent ASCII-escaped, so lone surrogates travel as `\\ud800`, as a client would send them."""
    headers = {**AUTH, **kwargs.pop("headers", {})}
    if body is not None:
        kwargs["content"] = json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    return client.request(method, path, headers=headers, **kwargs)


def chat(client: TestClient, query: str = CANCEL, user: str = USER, **extra: Any) -> dict[str, Any]:
    response = send(client, "POST", "/v1/chat-messages", {"query": query, "user": user, "inputs": {}, **extra})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def spec() -> DifySpec:
    return DifySpec(json.loads(SPEC_FILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def grounded(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Cancelling has no curated answer here and the floor is 0: the LLM answers, grounded on sources."""
    folder = tmp_path_factory.mktemp("contract")
    answers = folder / "answers.csv"
    with (RETAIL / "intent_responses.csv").open(encoding="utf-8") as source, answers.open("w", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=["label", "answer"])
        writer.writeheader()
        writer.writerows(row for row in csv.DictReader(source) if row["label"] != "order.cancel_order")
    settings_ = make_settings(api_bundle, folder / "data", curated_answers_csv=answers, llm_floor=0.0)
    with TestClient(create_app(settings_)) as client:
        yield client


@pytest.fixture(scope="module")
def seeded(grounded: TestClient) -> dict[str, Any]:
    """One grounded turn answered blocking, a second streamed, and a like on the first."""
    blocking = chat(grounded)
    with grounded.stream(
        "POST",
        "/v1/chat-messages",
        headers=AUTH,
        json={
            "query": CANCEL + " please",
            "user": USER,
            "inputs": {},
            "response_mode": "streaming",
            "conversation_id": blocking["conversation_id"],
        },
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        stream = "".join(response.iter_text())
    liked = send(grounded, "POST", f"/v1/messages/{blocking['message_id']}/feedbacks", {"rating": "like", "user": USER})
    assert liked.status_code == 200, liked.text
    return {"blocking": blocking, "stream": stream, "conversation_id": blocking["conversation_id"]}


EVERY_FIELD = pytest.mark.parametrize("every_field", [False, True], ids=["as-written", "every-field"])


@EVERY_FIELD
def test_blocking_chat_is_a_chat_completion_response(spec: DifySpec, seeded: dict, every_field: bool) -> None:
    body = seeded["blocking"]
    ref = spec.response_ref("post", "/v1/chat-messages")
    assert ref == "#/components/schemas/ChatCompletionResponse"
    assert spec.check(body, ref, every_field=every_field) == []
    assert body["metadata"]["retriever_resources"], "the grounded route must exercise RetrieverResource"


@EVERY_FIELD
def test_every_stream_event_matches_its_event_schema(spec: DifySpec, seeded: dict, every_field: bool) -> None:
    events = [frame for frame in sse_frames(seeded["stream"]) if frame is not None]
    kinds = [event["event"] for event in events]
    assert kinds[-1] == "message_end" and set(kinds) == {"message", "message_end"}
    for event in events:
        ref = spec.event_ref(event["event"])  # StreamEventChatMessage, StreamEventChatMessageEnd
        assert spec.check(event, ref, every_field=every_field) == [], event
    assert events[-1]["metadata"]["retriever_resources"], "message_end must exercise RetrieverResource"


async def _failing_pipeline(error: BaseException) -> AsyncIterator[Started | Delta]:
    yield Started(str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()), 1705398420)
    yield Delta("Hi")
    raise error


async def _render(error: BaseException) -> str:
    return "".join([frame async for frame in dify._stream(_failing_pipeline(error))])


@EVERY_FIELD
@pytest.mark.parametrize(
    ("error", "status", "code"),
    [(InvalidParam("bad"), 400, "invalid_param"), (RuntimeError("boom"), 500, "internal_server_error")],
    ids=["api-error", "crash"],
)
def test_a_failure_after_the_first_byte_is_a_stream_event_chat_error(
    spec: DifySpec, error: BaseException, status: int, code: str, every_field: bool
) -> None:
    """The pipeline is the boundary: a fake one fails mid-answer, the real renderer reports it."""
    *_, last = sse_frames(asyncio.run(_render(error)))
    assert last is not None and last["event"] == "error"
    assert spec.check(last, spec.event_ref("error"), every_field=every_field) == []
    assert (last["status"], last["code"], "task_id" in last) == (status, code, False)


READS = [
    ("get", "/v1/conversations", {"user": USER}, "#/components/schemas/ConversationsListResponse"),
    ("get", "/v1/messages", {"user": USER}, "#/components/schemas/ConversationHistoryResponse"),
    ("get", "/v1/parameters", {}, "#/components/schemas/AppParametersResponse"),
    ("get", "/v1/info", {}, "#/components/schemas/AppInfoResponse"),
    ("get", "/v1/meta", {}, "#/components/schemas/AppMetaResponse"),
]


@EVERY_FIELD
@pytest.mark.parametrize(("method", "path", "params", "expected_ref"), READS, ids=[r[1] for r in READS])
def test_reads_match_the_documented_response(
    spec: DifySpec,
    grounded: TestClient,
    seeded: dict,
    method: str,
    path: str,
    params: dict,
    expected_ref: str,
    every_field: bool,
) -> None:
    if path == "/v1/messages":
        params = {**params, "conversation_id": seeded["conversation_id"]}
    response = send(grounded, method.upper(), path, params=params)
    assert response.status_code == 200, response.text
    ref = spec.response_ref(method, path)
    assert ref == expected_ref
    body = response.json()
    assert spec.check(body, ref, every_field=every_field) == []
    if path == "/v1/messages":  # the history exercises feedback and RetrieverResource, not empty lists
        assert body["data"][0]["feedback"] == {"rating": "like"}
        assert all(item["retriever_resources"] for item in body["data"])
    if path == "/v1/conversations":
        assert body["data"]


@EVERY_FIELD
def test_writes_match_the_documented_response(
    spec: DifySpec, grounded: TestClient, seeded: dict, every_field: bool
) -> None:
    conversation = seeded["conversation_id"]
    message = seeded["blocking"]["message_id"]
    writes = [
        (
            "post",
            f"/v1/conversations/{conversation}/name",
            "/v1/conversations/{conversation_id}/name",
            {"name": "Cancelling", "user": USER},
        ),
        (
            "post",
            f"/v1/messages/{message}/feedbacks",
            "/v1/messages/{message_id}/feedbacks",
            {"rating": "like", "user": USER, "content": "clear"},
        ),
        ("post", f"/v1/chat-messages/{uuid.uuid4()}/stop", "/v1/chat-messages/{task_id}/stop", {"user": USER}),
    ]
    for method, path, template, body in writes:
        response = send(grounded, method.upper(), path, body)
        assert response.status_code == 200, response.text
        ref = spec.response_ref(method, template)  # ConversationListItem; SuccessResult twice
        assert spec.check(response.json(), ref, every_field=every_field) == [], template
    assert response.json() == {"result": "success"}


def _documented_error_examples(spec: DifySpec, app: Any) -> list[tuple[str, dict]]:
    examples = []
    for method, path in _dify_routes(app):
        operation = spec.operation(method, path) or {}
        for status, response in operation.get("responses", {}).items():
            if status.startswith(("4", "5")):
                for name, example in (
                    response.get("content", {}).get("application/json", {}).get("examples", {}).items()
                ):
                    examples.append((f"{method} {path} {status} {name}", example["value"]))
    return examples


def _dify_routes(app: Any) -> list[tuple[str, str]]:
    return [
        (method, path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if path.startswith("/v1/") and not path.startswith(OPENAI_ROUTES)
    ]


def test_every_dify_route_is_in_the_document_and_its_error_examples_fit_our_envelope(
    spec: DifySpec, grounded: TestClient
) -> None:
    routes = _dify_routes(grounded.app)
    assert len(routes) >= 11
    missing = [r for r in routes if spec.operation(*r) is None and r not in UNDOCUMENTED_DIFY_ROUTES]
    assert missing == []
    examples = _documented_error_examples(spec, grounded.app)
    assert len(examples) >= 15
    validator = jsonschema.Draft202012Validator(DIFY_ERROR)
    assert [(name, _problems(validator, value)) for name, value in examples if _problems(validator, value)] == []


def _documented_codes(spec: DifySpec) -> dict[int, set[str]]:
    # no 401 examples; securitySchemes.ApiKeyAuth: a missing or invalid key fails "with HTTP 401 (unauthorized)"
    codes: dict[int, set[str]] = {401: {"unauthorized"}}
    for item in spec.document["paths"].values():
        for operation in item.values():
            for status, response in operation.get("responses", {}).items():
                for example in response.get("content", {}).get("application/json", {}).get("examples", {}).values():
                    if status.isdigit() and "code" in example["value"]:
                        codes.setdefault(int(status), set()).add(example["value"]["code"])
    return codes


ERRORS = [
    ("missing-user", "POST", "/v1/chat-messages", {"query": "hi", "inputs": {}}, {}, 400),
    ("missing-key", "GET", "/v1/info", None, {"headers": {"Authorization": ""}}, 401),
    ("wrong-key", "GET", "/v1/parameters", None, {"headers": {"Authorization": "Bearer app-nope"}}, 401),
    ("unknown-conversation", "GET", "/v1/messages", None, {"params": {"conversation_id": str(uuid.uuid4())}}, 404),
    ("non-uuid-path", "POST", "/v1/messages/not-a-uuid/feedbacks", {"rating": "like", "user": USER}, {}, 404),
    ("unknown-last-id", "GET", "/v1/conversations", None, {"params": {"last_id": str(uuid.uuid4())}}, 404),
    ("bad-limit", "GET", "/v1/conversations", None, {"params": {"limit": 0}}, 400),
    ("unknown-route", "GET", "/v1/nothing-here", None, {}, 404),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "kwargs", "status"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_are_in_the_documented_envelope_with_a_documented_code(
    spec: DifySpec, grounded: TestClient, name: str, method: str, path: str, body: Any, kwargs: dict, status: int
) -> None:
    response = send(grounded, method, path, body, **kwargs)
    assert response.status_code == status, response.text
    assert dify_error_problems(response) == []
    assert response.json()["code"] in _documented_codes(spec)[status]
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_the_documents_request_examples_are_accepted(spec: DifySpec, grounded: TestClient) -> None:
    """Bodies verbatim, except ids: the document's ids do not exist here, so the example's user gets real ones."""
    sent = set()
    for method, path in _dify_routes(grounded.app):
        operation = spec.operation(method, path) or {}
        content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        for name, example in content.get("examples", {}).items():
            body = dict(example["value"])
            owned = chat(grounded, user=body.get("user", USER))
            ids = {"conversation_id": owned["conversation_id"], "message_id": owned["id"], "task_id": owned["task_id"]}
            if body.get("conversation_id"):
                body["conversation_id"] = ids["conversation_id"]
            response = send(grounded, method.upper(), path.format(**ids), body)
            assert response.status_code in (200, 204), f"{method} {path} example {name}: {response.text}"
            sent.add((method, path))
    assert sent >= {
        ("post", "/v1/chat-messages"),
        ("post", "/v1/chat-messages/{task_id}/stop"),
        ("post", "/v1/conversations/{conversation_id}/name"),
        ("post", "/v1/messages/{message_id}/feedbacks"),
        ("delete", "/v1/conversations/{conversation_id}"),
    }


def test_the_documents_query_parameters_are_accepted(spec: DifySpec, grounded: TestClient, seeded: dict) -> None:
    """Each documented enum value and each documented bound of every query parameter, one at a time."""
    tried = 0
    for method, path in _dify_routes(grounded.app):
        parameters = [p for p in (spec.operation(method, path) or {}).get("parameters", []) if p["in"] == "query"]
        required = {p["name"]: seeded["conversation_id"] for p in parameters if p.get("required")}
        for parameter in parameters:
            schema = parameter["schema"]
            values = list(schema.get("enum", [])) + [schema[k] for k in ("minimum", "maximum") if k in schema]
            for value in values:
                params = {**required, "user": USER, parameter["name"]: value}
                response = send(grounded, method.upper(), path, params=params)
                assert response.status_code == 200, f"{path} {parameter['name']}={value}: {response.text}"
                tried += 1
    assert tried >= 8  # sort_by's four values, and limit's bounds on two routes


# --- 2. schemathesis over the app's own OpenAPI --------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_client(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A floor of 1.0: an uncurated question hands off at once, so the run spends no time in the LLM."""
    folder = tmp_path_factory.mktemp("fuzz")
    with TestClient(create_app(make_settings(api_bundle, folder / "data", llm_floor=1.0))) as client:
        yield client


def _send_case(client: TestClient, case: Any) -> Any:
    request = case.as_transport_kwargs(base_url="http://testserver", headers=AUTH)
    content = request.pop("data", None)
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogatepass")
    return client.request(
        request["method"],
        request["url"],
        headers=request["headers"],
        params=request.get("params"),
        json=request.get("json"),
        content=content,
    )


def _fuzz_problems(spec: DifySpec, method: str, path: str, response: Any) -> list[str]:
    status = response.status_code
    if status >= 500:
        return [f"{status}: {response.text[:300]}"]
    if not path.startswith("/v1/"):  # operations routes have no API family
        return []
    if 400 <= status < 500:
        return error_problems(path, response)
    if status != 200 or path.startswith(OPENAI_ROUTES) or (method, path) in UNDOCUMENTED_DIFY_ROUTES:
        return []
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [frame for frame in sse_frames(response.text) if frame is not None]
        return [p for event in events for p in spec.check(event, spec.event_ref(event["event"]), every_field=True)]
    return spec.check(response.json(), spec.response_ref(method, path), every_field=True)


def _fuzz(spec: DifySpec, client: TestClient, operation: Any, mode: GenerationMode, statuses: set[int]) -> str | None:
    """Run one operation in one generation mode; the failure (shrunk by hypothesis) or None."""
    method, path = operation.method.lower(), operation.path

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def probe(case: Any) -> None:
        response = _send_case(client, case)
        statuses.add(response.status_code)
        problems = _fuzz_problems(spec, method, path, response)
        assert problems == [], f"{case.method} {case.formatted_path} {response.status_code}: {problems}"

    try:
        probe()
    except Unsatisfiable:  # nothing to make invalid: no parameters and no body
        return None
    except AssertionError as exc:
        return f"{mode.name} {method.upper()} {path}: {exc}"
    return None


def test_schemathesis_finds_no_5xx_and_only_family_shaped_errors(spec: DifySpec, fuzz_client: TestClient) -> None:
    schema = schemathesis.openapi.from_dict(fuzz_client.app.openapi())
    failures: list[str] = []
    statuses: dict[tuple[str, str], set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        seen = statuses.setdefault((operation.method.lower(), operation.path), set())
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failure = _fuzz(spec, fuzz_client, operation, mode, seen)
            if failure is not None:
                failures.append(failure)
    assert failures == []
    assert len(statuses) >= 16 and all(statuses.values()), "every operation was called"
    chat_statuses = statuses[("post", "/v1/chat-messages")]
    assert 200 in chat_statuses and 400 in chat_statuses, "the run reached both answers and refusals"


# --- 3. malformed input, route by route ----------------------------------------------------------

NO_SUCH = "00000000-0000-4000-8000-000000000000"
SURROGATE = "x\ud800"
HUGE = "x" * 10_000
CHAT, STOP, COMPLETIONS = "/v1/chat-messages", f"/v1/chat-messages/{NO_SUCH}/stop", "/v1/chat/completions"
NAME, FEEDBACK = "/v1/conversations/{conversation}/name", "/v1/messages/{message}/feedbacks"
HI = [{"role": "user", "content": "hi"}]
KIOSK = "kiosk-assistant"
DEEP = b"[" * 20_000 + b"]" * 20_000
# (id, method, path, JSON body | {"params": query} | {"raw": bytes}, status); {conversation}, {message}, {llm} are real
MALFORMED: list[tuple[str, str, str, Any, int]] = [
    ("chat/query-int", "POST", CHAT, {"query": 123, "user": "u"}, 400),
    ("chat/no-query", "POST", CHAT, {"user": "u", "inputs": {}}, 400),
    ("chat/no-user", "POST", CHAT, {"query": "hi", "inputs": {}}, 400),
    ("chat/inputs-list", "POST", CHAT, {"query": "hi", "user": "u", "inputs": []}, 400),
    ("chat/mode-enum", "POST", CHAT, {"query": "hi", "user": "u", "response_mode": "now"}, 400),
    ("chat/files-str", "POST", CHAT, {"query": "hi", "user": "u", "files": "a.png"}, 400),
    ("chat/conversation-int", "POST", CHAT, {"query": "hi", "user": "u", "conversation_id": 5}, 400),
    ("chat/conversation-non-uuid", "POST", CHAT, {"query": "hi", "user": "u", "conversation_id": "c-1"}, 400),
    ("chat/conversation-unknown", "POST", CHAT, {"query": "hi", "user": "u", "conversation_id": NO_SUCH}, 404),
    ("chat/user-surrogate", "POST", CHAT, {"query": "hi", "user": SURROGATE}, 400),
    ("chat/inputs-surrogate", "POST", CHAT, {"query": "hi", "user": "u", "inputs": {"a": [SURROGATE]}}, 400),
    ("chat/inputs-key-surrogate", "POST", CHAT, {"query": "hi", "user": "u", "inputs": {SURROGATE: 1}}, 400),
    ("chat/query-only-surrogate", "POST", CHAT, {"query": "\ud800", "user": "u"}, 400),
    ("chat/user-huge", "POST", CHAT, {"query": "hi", "user": HUGE}, 400),
    ("chat/query-huge", "POST", CHAT, {"query": HUGE, "user": "u"}, 400),
    ("chat/body-over-limit", "POST", CHAT, {"query": "x" * 70_000, "user": "u"}, 413),
    ("chat/body-array", "POST", CHAT, [], 400),
    ("chat/body-empty", "POST", CHAT, {"raw": b""}, 400),
    ("chat/body-broken", "POST", CHAT, {"raw": b'{"query": '}, 400),
    ("chat/body-not-utf8", "POST", CHAT, {"raw": b'{"query": "\xff", "user": "u"}'}, 400),
    ("chat/body-huge-int", "POST", CHAT, {"raw": b'{"query": "hi", "user": "u", "n": ' + b"9" * 5000 + b"}"}, 400),
    ("chat/body-deep", "POST", CHAT, {"raw": b'{"query": "hi", "user": "u", "inputs": {"a": ' + DEEP + b"}}"}, 400),
    ("stop/no-user", "POST", STOP, {}, 400),
    ("stop/user-int", "POST", STOP, {"user": 1}, 400),
    ("stop/user-surrogate", "POST", STOP, {"user": SURROGATE}, 400),
    ("conversations/limit-str", "GET", "/v1/conversations", {"params": {"limit": "many"}}, 400),
    ("conversations/limit-0", "GET", "/v1/conversations", {"params": {"limit": 0}}, 400),
    ("conversations/limit-101", "GET", "/v1/conversations", {"params": {"limit": 101}}, 400),
    ("conversations/sort-enum", "GET", "/v1/conversations", {"params": {"sort_by": "name"}}, 400),
    ("conversations/last-non-uuid", "GET", "/v1/conversations", {"params": {"last_id": "c-1"}}, 404),
    ("conversations/last-unknown", "GET", "/v1/conversations", {"params": {"last_id": NO_SUCH}}, 404),
    ("messages/no-conversation", "GET", "/v1/messages", {"params": {}}, 400),
    ("messages/conversation-non-uuid", "GET", "/v1/messages", {"params": {"conversation_id": "c-1"}}, 404),
    ("messages/conversation-unknown", "GET", "/v1/messages", {"params": {"conversation_id": NO_SUCH}}, 404),
    (
        "messages/first-non-uuid",
        "GET",
        "/v1/messages",
        {"params": {"conversation_id": "{conversation}", "user": "u", "first_id": "m-1"}},
        404,
    ),
    (
        "messages/first-unknown",
        "GET",
        "/v1/messages",
        {"params": {"conversation_id": "{conversation}", "user": "u", "first_id": NO_SUCH}},
        404,
    ),
    ("messages/limit-str", "GET", "/v1/messages", {"params": {"conversation_id": "{conversation}", "limit": "x"}}, 400),
    ("delete/non-uuid", "DELETE", "/v1/conversations/c-1", {"user": "u"}, 404),
    ("delete/unknown", "DELETE", f"/v1/conversations/{NO_SUCH}", {"user": "u"}, 404),
    ("delete/no-user", "DELETE", "/v1/conversations/{conversation}", {}, 400),
    ("delete/other-user", "DELETE", "/v1/conversations/{conversation}", {"user": "mallory"}, 404),
    ("name/non-uuid", "POST", "/v1/conversations/c-1/name", {"name": "n", "user": "u"}, 404),
    ("name/unknown", "POST", f"/v1/conversations/{NO_SUCH}/name", {"name": "n", "user": "u"}, 404),
    ("name/missing", "POST", NAME, {"user": "u"}, 400),
    ("name/int", "POST", NAME, {"name": 5, "user": "u"}, 400),
    ("name/surrogate", "POST", NAME, {"name": SURROGATE, "user": "u"}, 400),
    ("name/huge", "POST", NAME, {"name": HUGE, "user": "u"}, 400),
    ("feedback/non-uuid", "POST", "/v1/messages/m-1/feedbacks", {"rating": "like", "user": "u"}, 404),
    ("feedback/unknown", "POST", f"/v1/messages/{NO_SUCH}/feedbacks", {"rating": "like", "user": "u"}, 404),
    ("feedback/rating-enum", "POST", FEEDBACK, {"rating": "meh", "user": "u"}, 400),
    ("feedback/no-user", "POST", FEEDBACK, {"rating": "like"}, 400),
    ("feedback/revoke-nothing", "POST", FEEDBACK, {"rating": None, "user": "u"}, 400),
    ("feedback/content-surrogate", "POST", FEEDBACK, {"rating": "like", "user": "u", "content": SURROGATE}, 400),
    ("feedback/content-int", "POST", FEEDBACK, {"rating": "like", "user": "u", "content": 1}, 400),
    ("info/wrong-method", "PUT", "/v1/info", None, 405),
    ("openai/no-messages", "POST", COMPLETIONS, {"model": KIOSK}, 400),
    ("openai/empty-messages", "POST", COMPLETIONS, {"model": KIOSK, "messages": []}, 400),
    ("openai/no-model", "POST", COMPLETIONS, {"messages": HI}, 400),
    ("openai/model-int", "POST", COMPLETIONS, {"model": 3, "messages": HI}, 400),
    ("openai/model-unknown", "POST", COMPLETIONS, {"model": "gpt-9", "messages": HI}, 404),
    ("openai/model-surrogate", "POST", COMPLETIONS, {"model": SURROGATE, "messages": HI}, 404),
    ("openai/model-huge", "POST", COMPLETIONS, {"model": HUGE, "messages": HI}, 404),
    ("openai/role-enum", "POST", COMPLETIONS, {"model": KIOSK, "messages": [{"role": "robot", "content": "hi"}]}, 400),
    ("openai/last-not-user", "POST", COMPLETIONS, {"model": KIOSK, "messages": [{"role": "assistant"}]}, 400),
    ("openai/content-int", "POST", COMPLETIONS, {"model": KIOSK, "messages": [{"role": "user", "content": 5}]}, 400),
    (
        "openai/content-only-surrogate",
        "POST",
        COMPLETIONS,
        {"model": KIOSK, "messages": [{"role": "user", "content": "\ud800"}]},
        400,
    ),
    (
        "openai/content-huge",
        "POST",
        COMPLETIONS,
        {"model": KIOSK, "messages": [{"role": "user", "content": HUGE}]},
        400,
    ),
    ("openai/user-surrogate", "POST", COMPLETIONS, {"model": KIOSK, "user": SURROGATE, "messages": HI}, 400),
    ("openai/user-huge", "POST", COMPLETIONS, {"model": KIOSK, "user": HUGE, "messages": HI}, 400),
    ("openai/max-tokens-0", "POST", COMPLETIONS, {"model": "{llm}", "max_tokens": 0, "messages": HI}, 400),
    ("openai/max-tokens-str", "POST", COMPLETIONS, {"model": "{llm}", "max_tokens": "many", "messages": HI}, 400),
    ("openai/temperature-high", "POST", COMPLETIONS, {"model": "{llm}", "temperature": 9, "messages": HI}, 400),
    ("openai/body-broken", "POST", COMPLETIONS, {"raw": b"{oops"}, 400),
    ("openai/body-not-utf8", "POST", COMPLETIONS, {"raw": b'{"model": "\xff"}'}, 400),
    ("openai/body-deep", "POST", COMPLETIONS, {"raw": b'{"model": ' + DEEP + b"}"}, 400),
    ("openai/body-over-limit", "POST", COMPLETIONS, {"model": "x" * 70_000, "messages": []}, 413),
    ("models/wrong-method", "POST", "/v1/models", {}, 405),
]


@pytest.fixture(scope="module")
def placeholders(fuzz_client: TestClient) -> dict[str, str]:
    answered = chat(fuzz_client, user="u")
    models = send(fuzz_client, "GET", "/v1/models").json()["data"]
    return {
        "{conversation}": answered["conversation_id"],
        "{message}": answered["message_id"],
        "{llm}": next(m["id"] for m in models if m["id"] != "kiosk-assistant"),
    }


def _fill(value: Any, placeholders: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, real in placeholders.items():
            value = value.replace(key, real)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, placeholders) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, placeholders) for v in value]
    return value


@pytest.mark.parametrize(("name", "method", "path", "body", "status"), MALFORMED, ids=[row[0] for row in MALFORMED])
def test_malformed_input_is_a_clear_4xx_in_the_family_shape(
    fuzz_client: TestClient, placeholders: dict[str, str], name: str, method: str, path: str, body: Any, status: int
) -> None:
    path = _fill(path, placeholders)
    if isinstance(body, dict) and "params" in body:
        response = send(fuzz_client, method, path, params=_fill(body["params"], placeholders))
    elif isinstance(body, dict) and "raw" in body:
        response = send(fuzz_client, method, path, content=body["raw"], headers={"Content-Type": "application/json"})
    else:
        response = send(fuzz_client, method, path, _fill(body, placeholders))
    assert response.status_code == status, response.text
    assert error_problems(path, response) == []
    message = response.json()["error"]["message"] if path.startswith(OPENAI_ROUTES) else response.json()["message"]
    assert message.strip() and not message.startswith("None"), f"not a clear message: {message!r}"


NO_INPUT_BUT_THE_KEY = [("GET", "/v1/parameters"), ("GET", "/v1/info"), ("GET", "/v1/meta"), ("GET", "/v1/models")]
KEYED = [("POST", "/v1/chat-messages"), ("POST", "/v1/chat/completions"), *NO_INPUT_BUT_THE_KEY]


@pytest.mark.parametrize(("method", "route"), KEYED, ids=[route for _, route in KEYED])
def test_no_key_is_a_401_in_the_family_shape(fuzz_client: TestClient, method: str, route: str) -> None:
    response = fuzz_client.request(method, route, json={})
    assert response.status_code == 401 and error_problems(route, response) == []
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def _matches(template: str, path: str) -> bool:
    wanted, parts = template.split("/"), path.split("/")
    return len(wanted) == len(parts) and all(w.startswith("{") or w == p for w, p in zip(wanted, parts, strict=True))


def test_every_route_is_in_the_malformed_table(fuzz_client: TestClient) -> None:
    """A new route must bring its rows: the table (or the key test) names every API route of the app."""
    tabled = [(method.lower(), path) for _, method, path, _, _ in MALFORMED]
    tabled += [(method.lower(), path) for method, path in NO_INPUT_BUT_THE_KEY]
    routes = [
        (method, path)
        for path, item in fuzz_client.app.openapi()["paths"].items()
        for method in item
        if path.startswith("/v1/") and path != "/v1/"
    ]
    assert len(routes) >= 12
    assert [r for r in routes if not any(m == r[0] and _matches(r[1], p) for m, p in tabled)] == []
