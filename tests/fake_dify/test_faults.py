"""Each scripted fault, in-process (through `FakeDifyTransport`), and the request journal."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.fake_dify import Central, FakeDify, FakeDifyState, FakeDifyTransport, create_fake_dify
from tests.fake_dify.conftest import BASE, auth
from tests.fake_dify.faults import Faults
from tests.fake_dify.snapshot import restore, snapshot
from tests.fake_dify.spec import DifySpec, dify_error_problems, sse_frames

SESSION = "edge:store-1:kiosk-2:session-1"
RUN = {
    "inputs": {"store_id": "store-1", "kiosk_id": "kiosk-2", "edge_session_id": "session-1", "transcript": "hi"},
    "user": SESSION,
    "response_mode": "blocking",
}
STREAM = {
    "query": "How long does standard delivery take?",
    "user": "u",
    "inputs": {},
    "response_mode": "streaming",
}


def run(client: httpx.Client, central: Central) -> httpx.Response:
    return client.post("/v1/workflows/run", headers=auth(central.workflow_key), json=RUN)


def runs_of(client: httpx.Client, central: Central, session: str = SESSION) -> int:
    params = {"created_by_end_user_session_id": session}
    return client.get("/v1/workflows/logs", headers=auth(central.workflow_key), params=params).json()["total"]


# --- before the request is handled --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "internal_server_error"), (429, "too_many_requests"), (403, "forbidden"), (401, "unauthorized")],
)
def test_an_error_before_handling_commits_nothing(
    fake: FakeDify, client: httpx.Client, central: Central, status: int, code: str
) -> None:
    rule = fake.faults.error("/v1/workflows/run", status, times=2)
    for _ in range(2):
        failed = run(client, central)
        assert (failed.status_code, failed.json()["code"]) == (status, code)
        assert dify_error_problems(status, failed.json()) == []
    assert run(client, central).status_code == 200, "the fault fired its two times and is spent"
    assert runs_of(client, central) == 1 and rule.fired == 2 and rule.seen == 3


def test_rate_limits_carry_no_retry_after(fake: FakeDify, client: httpx.Client, central: Central) -> None:
    fake.faults.rate_limit("/v1/workflows/run")
    limited = run(client, central)
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    assert limited.json()["message"].startswith("Too many requests.")
    fake.faults.knowledge_rate_limit()
    knowledge = client.get("/v1/datasets", headers=auth(central.dataset_key))
    assert (knowledge.status_code, knowledge.json()["code"]) == (403, "forbidden")
    assert "knowledge base request rate limit" in knowledge.json()["message"]


def test_transient_401_and_403(fake: FakeDify, client: httpx.Client, central: Central) -> None:
    fake.faults.unauthorized("/v1/apps/annotations")
    fake.faults.app_disabled("/v1/parameters")
    revoked = client.get("/v1/apps/annotations", headers=auth(central.chat_key))
    assert revoked.status_code == 401 and revoked.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    disabled = client.get("/v1/parameters", headers=auth(central.chat_key))
    assert disabled.json()["message"] == "The app's API service has been disabled."
    assert client.get("/v1/parameters", headers=auth(central.chat_key)).status_code == 200


def test_skip_method_and_query_narrow_a_fault(fake: FakeDify, client: httpx.Client, central: Central) -> None:
    fake.faults.error("/v1/apps/annotations", 500, method="POST", skip=1)
    fake.faults.error("/v1/datasets", 500, query={"keyword": "store"})
    headers = auth(central.chat_key)
    assert client.get("/v1/apps/annotations", headers=headers).status_code == 200
    body = {"question": "q", "answer": "a"}
    assert client.post("/v1/apps/annotations", headers=headers, json=body).status_code == 201
    assert client.post("/v1/apps/annotations", headers=headers, json=body).status_code == 500
    ds = auth(central.dataset_key)
    assert client.get("/v1/datasets", headers=ds).status_code == 200
    assert client.get("/v1/datasets", headers=ds, params={"keyword": "store"}).status_code == 500


def test_a_drop_before_handling(fake: FakeDify, client: httpx.Client, central: Central) -> None:
    fake.faults.drop("/v1/workflows/run")
    with pytest.raises(httpx.RemoteProtocolError):
        run(client, central)
    assert runs_of(client, central) == 0
    assert fake.journal.entries("POST")[0].outcome == "dropped"


def test_a_stall_past_the_client_timeout(fake: FakeDify, client: httpx.Client, central: Central) -> None:
    fake.faults.stall("/v1/workflows/run", seconds=30)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/workflows/run", headers=auth(central.workflow_key), json=RUN, timeout=0.2)
    assert runs_of(client, central) == 0
    assert fake.journal.entries("POST")[0].outcome == "stalled"


def test_a_short_stall_is_just_a_slow_answer(fake: FakeDify, client: httpx.Client, central: Central) -> None:
    fake.faults.stall("/v1/workflows/run", seconds=0.01)
    assert run(client, central).status_code == 200 and runs_of(client, central) == 1


# --- commit, then fail: the response is lost but central has the run -----------------------------


def test_commit_then_502_records_the_run_and_a_lookup_prevents_the_duplicate(
    fake: FakeDify, client: httpx.Client, central: Central
) -> None:
    """The agent's discipline: after a failed push, look up by end-user session id before retrying."""
    fake.faults.commit_then("/v1/workflows/run", 502)
    lost = run(client, central)
    assert lost.status_code == 502 and lost.headers["content-type"].startswith("text/html")
    assert "502 Bad Gateway" in lost.text, "a proxy's page, not Dify's JSON envelope"
    assert runs_of(client, central) == 1, "committed although the client saw a 502"
    if runs_of(client, central) == 0:  # what the agent does before a retry
        run(client, central)
    entry = fake.journal.entries("POST", "/v1/workflows/run")[0]
    assert (entry.status, entry.committed_status, entry.fault) == (502, 200, "fault-1")
    assert fake.journal.count("POST", "/v1/workflows/run") == 1 and len(fake.state.workflow_runs) == 1


@pytest.mark.parametrize("failure", ["drop", "stall"])
def test_commit_then_drop_or_stall(fake: FakeDify, client: httpx.Client, central: Central, failure: str) -> None:
    options = {"seconds": 30} if failure == "stall" else {}
    fake.faults.commit_then("/v1/workflows/run", failure, **options)
    with pytest.raises(httpx.RemoteProtocolError if failure == "drop" else httpx.ReadTimeout):
        client.post("/v1/workflows/run", headers=auth(central.workflow_key), json=RUN, timeout=0.2)
    assert runs_of(client, central) == 1
    entry = fake.journal.entries("POST")[0]
    outcome = {"drop": "dropped", "stall": "stalled"}[failure]
    assert (entry.committed_status, entry.status, entry.outcome) == (200, None, outcome)


def test_commit_then_fail_for_a_blocking_chat_keeps_the_message(
    fake: FakeDify, client: httpx.Client, central: Central
) -> None:
    fake.faults.commit_then("/v1/chat-messages", 504)
    lost = client.post(
        "/v1/chat-messages", headers=auth(central.chat_key), json={**STREAM, "response_mode": "blocking"}
    )
    assert lost.status_code == 504
    listed = client.get("/v1/conversations", headers=auth(central.chat_key), params={"user": "u"}).json()["data"]
    messages = client.get(
        "/v1/messages", headers=auth(central.chat_key), params={"conversation_id": listed[0]["id"], "user": "u"}
    ).json()["data"]
    assert [m["query"] for m in messages] == [STREAM["query"]] and messages[0]["answer"]


# --- stream faults --------------------------------------------------------------------------------


def test_a_stream_dropped_after_two_events(fake: FakeDify, client: httpx.Client, central: Central) -> None:
    fake.faults.sse_drop(after_events=2)
    received: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/v1/chat-messages", headers=auth(central.chat_key), json=STREAM) as response,
    ):
        assert response.status_code == 200
        received.extend(response.iter_lines())
    events = [json.loads(line[6:]) for line in received if line.startswith("data: ")]
    assert [e["event"] for e in events] == ["message", "message"]
    message = fake.state.messages[events[0]["message_id"]]
    assert message.answer.startswith("Standard delivery") and message.status == "normal", "the server finished it"
    entry = fake.journal.entries("POST")[0]
    assert (entry.status, entry.outcome, entry.fault) == (200, "stream_dropped", "fault-1")


def test_a_mid_stream_error_event(fake: FakeDify, client: httpx.Client, central: Central, spec: DifySpec) -> None:
    fake.faults.sse_error(after_events=1)
    with client.stream("POST", "/v1/chat-messages", headers=auth(central.chat_key), json=STREAM) as response:
        frames = [f for f in sse_frames(response.read().decode()) if f is not None]
    assert [f["event"] for f in frames] == ["message", "error"]
    error = frames[-1]
    assert "task_id" not in error and (error["status"], error["code"]) == (400, "completion_request_error")
    assert error["message_id"] == frames[0]["message_id"] and error["conversation_id"] == frames[0]["conversation_id"]
    assert spec.check(error, spec.event_ref("error"), every_field=True) == []
    history = client.get(
        "/v1/messages",
        headers=auth(central.chat_key),
        params={"conversation_id": error["conversation_id"], "user": "u"},
    ).json()["data"]
    assert (history[0]["status"], history[0]["error"], history[0]["answer"]) == ("error", error["message"], "Standard")
    assert fake.journal.entries("POST")[0].outcome == "stream_error"


def test_a_workflow_stream_error_fails_the_run(fake: FakeDify, client: httpx.Client, central: Central) -> None:
    fake.faults.sse_error("/v1/workflows/run", after_events=1, status=500, code="internal_server_error")
    body = {**RUN, "response_mode": "streaming"}
    with client.stream("POST", "/v1/workflows/run", headers=auth(central.workflow_key), json=body) as response:
        frames = [f for f in sse_frames(response.read().decode()) if f is not None]
    assert [f["event"] for f in frames] == ["workflow_started", "error"] and "task_id" not in frames[-1]
    assert next(iter(fake.state.workflow_runs.values())).status == "failed"


# --- central changes under the agent's feet ---------------------------------------------------------


def test_page_drift_between_two_pages(fake: FakeDify, client: httpx.Client, central: Central) -> None:
    """A segment deleted from page 1 after it was served shifts page 2: one row is never seen."""
    state = fake.state
    doc = state.knowledge.add_document(central.dataset_id, "Long", segments=[f"Rule {n}." for n in range(1, 7)])
    first_row = state.knowledge.list_segments(doc.id)[0].id
    url = f"/v1/datasets/{central.dataset_id}/documents/{doc.id}/segments"
    fake.faults.between_pages(url, 1, {"op": "delete_segment", "segment_id": first_row})
    headers = auth(central.dataset_key)
    seen = []
    for page in (1, 2):
        body = client.get(url, headers=headers, params={"page": page, "limit": 3}).json()
        seen += [s["content"] for s in body["data"]]
    assert seen == ["Rule 1.", "Rule 2.", "Rule 3.", "Rule 5.", "Rule 6."]  # Rule 4 slid onto page 1
    assert body["total"] == 5, "a total that changed mid-scan is the agent's cue to re-scan"


def test_documents_inserted_and_edited_between_pages(fake: FakeDify, client: httpx.Client, central: Central) -> None:
    """Newest-first lists: an insert between pages pushes a row already seen onto the next page."""
    state = fake.state

    def insert_and_edit(st: FakeDifyState) -> None:
        st.clock.advance(1)
        st.knowledge.add_document(central.dataset_id, "Brand new", "Fresh.")
        segment = st.knowledge.list_segments(st.knowledge.list_documents(central.dataset_id)[-1].id)[0]
        st.knowledge.update_segment(segment.id, content="Edited between pages.")

    url = f"/v1/datasets/{central.dataset_id}/documents"
    fake.faults.between_pages(url, 1, insert_and_edit)
    headers = auth(central.dataset_key)
    names = []
    for page in (1, 2):
        names += [d["name"] for d in client.get(url, headers=headers, params={"page": page, "limit": 2}).json()["data"]]
    assert names == ["Payments", "Delivery", "Delivery", "Returns and refunds"]
    assert "Brand new" not in names and len(state.knowledge.documents) == 4


def test_a_key_revoked_mid_run(fake: FakeDify, client: httpx.Client, central: Central) -> None:
    fake.faults.hook("/v1/datasets*", {"op": "revoke_key", "token": central.dataset_key}, skip=1)
    headers = auth(central.dataset_key)
    assert client.get("/v1/datasets", headers=headers).status_code == 200
    assert client.get(f"/v1/datasets/{central.dataset_id}", headers=headers).status_code == 200
    after = client.get(f"/v1/datasets/{central.dataset_id}/documents", headers=headers)
    assert (after.status_code, after.json()["message"]) == (401, "Access token is invalid")


def test_clock_skew_shows_in_timestamps_and_the_date_header(
    fake: FakeDify, client: httpx.Client, central: Central
) -> None:
    fake.state.clock.skew = -7200
    response = run(client, central)
    assert response.json()["data"]["created_at"] == 1_767_225_600 - 7200
    assert response.headers["date"] == "Wed, 31 Dec 2025 22:00:00 GMT"


# --- the journal and the fault schedule's JSON form --------------------------------------------------


def test_the_journal_records_requests_with_key_ids(fake: FakeDify, client: httpx.Client, central: Central) -> None:
    run(client, central)
    client.get("/v1/datasets", headers=auth(central.dataset_key), params={"page": 2, "tag_ids": ["a", "b"]})
    client.get("/v1/datasets", headers={"Authorization": "Bearer nope"})
    first, second, third = fake.journal.entries()
    assert (first.method, first.path, first.status, first.body) == ("POST", "/v1/workflows/run", 200, RUN)
    assert first.key_id == fake.state.keys[central.workflow_key].id and central.workflow_key not in json.dumps(
        first.as_dict()
    )
    assert second.query == {"page": ["2"], "tag_ids": ["a", "b"]} and second.body is None
    assert (third.status, third.key_id) == (401, None)
    assert fake.journal.count("GET", "/v1/datasets*") == 2
    fake.journal.clear()
    assert fake.journal.entries() == []


def test_faults_from_json_and_their_validation() -> None:
    faults = Faults()
    rule = faults.add({"kind": "error", "path": "/v1/x", "status": 502, "after": True, "times": None})
    assert rule.phase == "after" and rule.spec["status"] == 502 and rule.error() is None  # a proxy page
    with pytest.raises(ValueError, match="unknown fault kind"):
        faults.add({"kind": "explode", "path": "/v1/x"})
    with pytest.raises(ValueError, match="cannot be applied after"):
        faults.add({"kind": "sse_drop", "path": "/v1/x", "after": True})
    with pytest.raises(ValueError, match="unknown fault fields"):
        faults.add({"kind": "drop", "path": "/v1/x", "when": "now"})
    with pytest.raises(ValueError, match="needs a mutation"):
        faults.add({"kind": "mutate", "path": "/v1/x"})
    faults.remove(rule.id)
    assert faults.rules() == []


def test_the_async_client_works_too(fake: FakeDify, central: Central) -> None:
    async def main() -> list[Any]:
        transport = FakeDifyTransport(fake)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            fake.faults.drop("/v1/")
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/v1/")
            index = await client.get("/v1/")
            async with client.stream("POST", "/v1/chat-messages", headers=auth(central.chat_key), json=STREAM) as r:
                chunks = [chunk async for chunk in r.aiter_text()]
            return [index.json()["welcome"], "".join(chunks)]

    welcome, stream = asyncio.run(main())
    assert welcome == "Dify OpenAPI" and sse_frames(stream)[-1]["event"] == "message_end"  # type: ignore[index]


def test_the_control_api_is_loopback_only(state: FakeDifyState, central: Central) -> None:
    fake = create_fake_dify(state)
    with httpx.Client(transport=FakeDifyTransport(fake, client=("10.1.2.3", 4000)), base_url=BASE) as remote:
        assert remote.get("/_fake/state").status_code == 404
        assert remote.get("/v1/").status_code == 200


def test_a_snapshot_round_trips(fake: FakeDify, client: httpx.Client, central: Central) -> None:
    run(client, central)
    client.post("/v1/chat-messages", headers=auth(central.chat_key), json={**STREAM, "response_mode": "blocking"})
    data = json.loads(json.dumps(client.get("/_fake/snapshot").json()))
    copy = create_fake_dify(restore(data))
    with httpx.Client(transport=FakeDifyTransport(copy), base_url=BASE) as other:
        assert runs_of(other, central) == 1
        segments = f"/v1/datasets/{central.dataset_id}/documents"
        assert other.get(segments, headers=auth(central.dataset_key)).json() == (
            client.get(segments, headers=auth(central.dataset_key)).json()
        )
    assert snapshot(copy.state)["messages"] == data["messages"]
