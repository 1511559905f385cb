"""Live escalation to central (issue #13), end to end: the real app, central = the fake on a real loopback
uvicorn. The box's bank and knowledge are empty here, so every question would be handed off locally."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from edge.app import create_app
from edge.settings import Settings
from edge.store.db import open_database
from edge.store.sync_state import CENTRAL, SyncState
from tests.edge.api.conftest import AUTH, KEY, LiveServer, make_settings
from tests.edge.api.test_dify import sse_events, wait_for_index
from tests.fake_dify import Central, FakeDifyState, LiveFakeDify, seed_demo
from tests.fake_dify.routes_chat import NO_ANSWER

REFUND = "Where is my refund?"
REFUND_ANSWER = "Refunds reach your original payment method within 5 to 10 business days."
CANCEL = "Can I cancel my order?"
CANCEL_ANSWER = "Yes, until it is dispatched: open the order and choose Cancel, or ask a colleague."
CHAT = "/v1/chat-messages"
DOGS = "are dogs allowed inside?"  # the local LLM's, grounded on the store FAQ


@dataclass
class Box:
    client: TestClient
    settings: Settings
    fake: LiveFakeDify
    central: Central

    def ask(self, query: str, *, stream: bool = False, **extra: Any) -> Any:
        body = {"query": query, "user": "kiosk-1", "inputs": {}, **extra}
        if stream:
            body["response_mode"] = "streaming"
        response = self.client.post(CHAT, headers=AUTH, json=body)
        assert response.status_code == 200, response.text
        return sse_events(response.text) if stream else response.json()

    def central_calls(self) -> int:
        return self.fake.journal.count("POST", CHAT)

    def sync_agent_says(self, state: str) -> None:
        db = open_database(self.settings.database_path)
        try:
            SyncState(db).record(CENTRAL, state, success=state == "online")
        finally:
            db.close()

    def row(self, message_id: str) -> dict[str, Any]:
        db = open_database(self.settings.database_path)
        try:
            return next(db.query("SELECT * FROM messages WHERE id = ?", [message_id]))
        finally:
            db.close()

    def metric(self, name: str, **labels: str) -> float:
        """A sample of /metrics; answers are counted once committed, a moment after the response may be out."""
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        deadline = time.monotonic() + 2.0
        while True:
            for line in self.client.get("/metrics").text.splitlines():
                if line.startswith(wanted + " "):
                    return float(line.rsplit(" ", 1)[1])
            if time.monotonic() > deadline:
                return 0.0
            time.sleep(0.05)


def box_settings(bundle: Path, data_dir: Path, fake: LiveFakeDify, central: Central, **overrides: Any) -> Settings:
    answers = data_dir.parent / "answers.csv"
    answers.parent.mkdir(parents=True, exist_ok=True)
    answers.write_text("label,answer\n")
    values: dict[str, Any] = dict(
        curated_answers_csv=answers,
        llm_floor=1.0,
        knowledge_seed_csvs=[],
        escalate=True,
        central_url=fake.api_url,
        central_chat_key=central.chat_key,
        escalate_first_byte_s=1.0,
        escalate_idle_s=1.0,
        escalate_breaker_failures=100,
    )
    return make_settings(bundle, data_dir, **(values | overrides))


@pytest.fixture
def fake() -> Iterator[tuple[LiveFakeDify, Central]]:
    state = FakeDifyState(seed=0)
    central = seed_demo(state)
    with LiveFakeDify(state) as server:
        yield server, central


@contextmanager
def running_box(
    api_bundle: Path, tmp_path: Path, fake: tuple[LiveFakeDify, Central], **overrides: Any
) -> Iterator[Box]:
    server, central = fake
    settings = box_settings(api_bundle, tmp_path / "data", server, central, **overrides)
    with TestClient(create_app(settings)) as client:
        box = Box(client, settings, server, central)
        box.sync_agent_says("online")
        yield box


@pytest.fixture
def box(api_bundle: Path, tmp_path: Path, fake: tuple[LiveFakeDify, Central]) -> Iterator[Box]:
    with running_box(api_bundle, tmp_path, fake) as running:
        yield running


def handoff(box: Box) -> str:
    return box.settings.handoff_message["en"]


def notice(box: Box) -> str:
    return box.settings.central_broke_message["en"]


# --- relay ------------------------------------------------------------------------------------------


def test_dify_blocking_relays_centrals_answer_and_records_it(box: Box) -> None:
    body = box.ask(REFUND)
    assert body["answer"] == REFUND_ANSWER and body["metadata"]["route"] == "central"
    row = box.row(body["message_id"])
    assert row["route"] == "central" and row["escalation"] == "answered"
    assert row["central_message_id"] and row["central_conversation_id"] and row["central_first_byte_ms"] > 0
    assert row["central_message_id"] != body["message_id"]  # the shopper sees the box's ids, central keeps its own
    sent = box.fake.journal.entries("POST", CHAT)[0].body
    assert sent["response_mode"] == "streaming" and sent["inputs"]["kiosk_language"] == "en"
    assert box.metric("kiosk_central_escalations_total", outcome="answered") == 1
    assert box.metric("kiosk_central_first_byte_seconds_count") == 1
    assert box.metric("kiosk_answers_total", intent=row["intent"] or "none", language="en", route="central") == 1
    listed = box.client.get(
        "/v1/messages", headers=AUTH, params={"conversation_id": body["conversation_id"], "user": "kiosk-1"}
    ).json()
    assert listed["data"][0]["answer"] == REFUND_ANSWER and listed["data"][0]["route"] == "central"


def test_dify_stream_relays_chunk_by_chunk(box: Box) -> None:
    events = box.ask(REFUND, stream=True)
    deltas = [e["answer"] for e in events if e["event"] == "message"]
    assert len(deltas) > 1 and "".join(deltas) == REFUND_ANSWER
    assert events[-1]["event"] == "message_end" and events[-1]["metadata"]["route"] == "central"


def test_a_follow_up_stays_in_one_central_conversation(box: Box) -> None:
    first = box.ask(REFUND)
    second = box.ask(CANCEL, conversation_id=first["conversation_id"])
    assert second["answer"] == CANCEL_ANSWER and second["conversation_id"] == first["conversation_id"]
    rows = [box.row(first["message_id"]), box.row(second["message_id"])]
    assert rows[0]["central_conversation_id"] == rows[1]["central_conversation_id"]
    sent = [entry.body for entry in box.fake.journal.entries("POST", CHAT)]
    assert "conversation_id" not in sent[0] and sent[1]["conversation_id"] == rows[0]["central_conversation_id"]
    assert len({s["user"] for s in sent}) == 1  # one central end user: central keeps the conversation theirs
    other = box.ask(REFUND)  # a new local conversation opens a new central one
    assert box.row(other["message_id"])["central_conversation_id"] != rows[0]["central_conversation_id"]


def test_the_conversation_so_far_goes_with_the_first_escalation(box: Box) -> None:
    first = box.ask(REFUND, inputs={"handoff": True})  # answered locally (the staff button)
    box.ask(CANCEL, conversation_id=first["conversation_id"])
    (sent,) = [entry.body for entry in box.fake.journal.entries("POST", CHAT)]
    assert sent["inputs"]["kiosk_history"] == f"Q: {REFUND}\nA: {handoff(box)}"


def test_openai_stream_relays_centrals_answer(
    api_bundle: Path, tmp_path: Path, fake: tuple[LiveFakeDify, Central]
) -> None:
    import openai

    server, central = fake
    settings = box_settings(api_bundle, tmp_path / "data", server, central)
    with LiveServer(settings) as live:
        Box(None, settings, server, central).sync_agent_says("online")  # type: ignore[arg-type]
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=KEY, max_retries=0)
        stream = client.chat.completions.create(
            model="kiosk-assistant", messages=[{"role": "user", "content": REFUND}], stream=True
        )
        deltas = [
            chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content
        ]
        whole = client.chat.completions.create(
            model="kiosk-assistant", messages=[{"role": "user", "content": REFUND}], stream=False
        )
    assert len(deltas) > 1 and "".join(deltas) == REFUND_ANSWER
    assert whole.choices[0].message.content == REFUND_ANSWER
    assert server.journal.count("POST", CHAT) == 2


# --- fallbacks ----------------------------------------------------------------------------------------


def test_slow_first_byte_falls_back_within_the_timeout(box: Box) -> None:
    box.fake.faults.first_byte(10.0)
    started = time.perf_counter()
    body = box.ask(REFUND)
    elapsed = time.perf_counter() - started
    assert body["answer"] == handoff(box) and body["metadata"]["route"] == "handoff"
    assert elapsed < box.settings.escalate_first_byte_s + 1.5
    assert box.row(body["message_id"])["escalation"] == "fallback:timeout"
    assert box.metric("kiosk_central_fallbacks_total", cause="timeout") == 1
    assert box.metric("kiosk_central_escalations_total", outcome="fallback") == 1


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (lambda f: f.rate_limit(CHAT), "status_429"),
        (lambda f: f.unauthorized(CHAT), "status_4xx"),
        (lambda f: f.error(CHAT, 500), "status_5xx"),
        (lambda f: f.drop(CHAT), "dropped"),
        (lambda f: f.sse_malformed(after_events=0, how="shape"), "malformed"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_failure_before_any_text_is_the_local_answer_alone(box: Box, fault: Any, cause: str, stream: bool) -> None:
    fault(box.fake.faults)
    if stream:
        events = box.ask(REFUND, stream=True)
        answer = "".join(e["answer"] for e in events if e["event"] == "message")
        message_id, route = events[-1]["message_id"], events[-1]["metadata"]["route"]
    else:
        body = box.ask(REFUND)
        answer, message_id, route = body["answer"], body["message_id"], body["metadata"]["route"]
    assert answer == handoff(box) and route == "handoff"  # exactly what the box says without escalation
    assert box.row(message_id)["escalation"] == f"fallback:{cause}"
    assert box.metric("kiosk_central_fallbacks_total", cause=cause) == 1


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (lambda f: f.sse_error(after_events=3), "error_event"),
        (lambda f: f.sse_drop(after_events=3), "dropped"),
        (lambda f: f.sse_malformed(after_events=3, how="json"), "malformed"),
    ],
)
def test_a_break_after_some_text_says_so_then_answers_locally(box: Box, fault: Any, cause: str) -> None:
    fault(box.fake.faults)
    events = box.ask(REFUND, stream=True)
    assert not [e for e in events if e["event"] == "error"]
    answer = "".join(e["answer"] for e in events if e["event"] == "message")
    shown, rest = answer.split(notice(box))
    assert shown and REFUND_ANSWER.startswith(shown) and shown != REFUND_ANSWER
    assert rest == handoff(box)
    end = events[-1]
    assert end["event"] == "message_end" and end["metadata"]["route"] == "handoff"
    row = box.row(end["message_id"])
    assert row["answer"] == answer and row["escalation"] == f"fallback:{cause}"


def test_a_break_after_some_text_in_chinese_says_so_in_chinese(box: Box) -> None:
    box.fake.faults.sse_drop(after_events=1)
    box.fake.state.apps[box.central.chat_app_id].answers["我的退款在哪里？"] = (
        "退款会在五到十个工作日内退回原支付方式。"
    )
    events = box.ask("我的退款在哪里？", stream=True)
    answer = "".join(e["answer"] for e in events if e["event"] == "message")
    assert box.settings.central_broke_message["zh"] in answer and answer.endswith(box.settings.handoff_message["zh"])


def test_a_stall_after_some_text_is_a_break(box: Box) -> None:
    """Central goes silent after its first word: after the idle limit the box says so and finishes locally."""
    box.fake.app.configure(token_delay=5.0)
    started = time.perf_counter()
    events = box.ask(REFUND, stream=True)
    answer = "".join(e["answer"] for e in events if e["event"] == "message")
    shown, rest = answer.split(notice(box))
    assert shown == REFUND_ANSWER.split()[0] and rest == handoff(box)
    assert time.perf_counter() - started < box.settings.escalate_idle_s + 2.0
    assert box.row(events[-1]["message_id"])["escalation"] == "fallback:dropped"


def test_a_black_hole_is_a_timeout(box: Box) -> None:
    box.fake.faults.stall(CHAT, seconds=30)
    started = time.perf_counter()
    body = box.ask(REFUND)
    assert body["answer"] == handoff(box) and time.perf_counter() - started < box.settings.escalate_first_byte_s + 1.5
    assert box.row(body["message_id"])["escalation"] == "fallback:timeout"


def test_connections_reset_open_the_breaker_then_no_call_is_made(
    api_bundle: Path, tmp_path: Path, fake: tuple[LiveFakeDify, Central]
) -> None:
    with running_box(api_bundle, tmp_path, fake, escalate_breaker_failures=3) as box:
        rule = box.fake.faults.down(CHAT)
        answers = [box.ask(REFUND)["answer"] for _ in range(6)]
        assert answers == [handoff(box)] * 6
        assert box.central_calls() == 3  # then the breaker is open: the journal stays flat
        assert box.metric("kiosk_central_fallbacks_total", cause="dropped") == 3
        assert box.metric("kiosk_central_skipped_total", why="circuit_open") == 3
        box.fake.faults.remove(rule.id)


# --- when central is not asked ------------------------------------------------------------------------


def test_the_staff_button_is_never_forwarded(box: Box) -> None:
    body = box.ask(REFUND, inputs={"handoff": True})
    assert body["answer"] == handoff(box) and body["metadata"]["route"] == "handoff"
    assert box.central_calls() == 0 and box.row(body["message_id"])["escalation"] is None


def test_feature_off_is_todays_box(api_bundle: Path, tmp_path: Path, fake: tuple[LiveFakeDify, Central]) -> None:
    with running_box(api_bundle, tmp_path, fake, escalate=False) as box:
        assert box.client.app.state.escalator is None
        body = box.ask(REFUND)
        assert body["answer"] == handoff(box) and body["metadata"]["route"] == "handoff"
        assert box.central_calls() == 0
        assert "kiosk_central_escalations_total{" not in box.client.get("/metrics").text


def test_escalate_on_llm_leaves_handoffs_local(
    api_bundle: Path, tmp_path: Path, fake: tuple[LiveFakeDify, Central]
) -> None:
    with running_box(api_bundle, tmp_path, fake, escalate_on="llm") as box:
        assert box.ask(REFUND)["metadata"]["route"] == "handoff" and box.central_calls() == 0


def test_central_down_at_start_then_back(box: Box) -> None:
    """The sync agent saw central offline: no call at all, no latency; once it sees central again, the box asks."""
    box.sync_agent_says("offline")
    started = time.perf_counter()
    body = box.ask(REFUND)
    assert body["metadata"]["route"] == "handoff" and time.perf_counter() - started < 1.0
    assert box.central_calls() == 0 and box.metric("kiosk_central_skipped_total", why="unreachable") == 1
    box.sync_agent_says("online")
    assert box.ask(REFUND)["metadata"]["route"] == "central"


def test_central_gone_while_the_agent_still_says_online(box: Box) -> None:
    """The server is down (connection refused), the record is stale: one fast fallback, then central is back."""
    box.fake.stop()
    body = box.ask(REFUND)
    assert body["answer"] == handoff(box)
    assert box.row(body["message_id"])["escalation"] == "fallback:unreachable"
    box.fake.start()
    assert box.ask(REFUND)["metadata"]["route"] == "central"


def test_the_breaker_stops_asking_after_repeated_failures(
    api_bundle: Path, tmp_path: Path, fake: tuple[LiveFakeDify, Central]
) -> None:
    overrides = {"escalate_breaker_failures": 2, "escalate_breaker_cooldown_s": 0.5}
    with running_box(api_bundle, tmp_path, fake, **overrides) as box:
        box.fake.faults.error(CHAT, 503, times=None)
        for _ in range(2):
            assert box.ask(REFUND)["answer"] == handoff(box)
        assert box.central_calls() == 2
        started = time.perf_counter()
        assert box.ask(REFUND)["answer"] == handoff(box)
        assert box.central_calls() == 2 and time.perf_counter() - started < 1.0  # open: no call, no latency
        assert box.metric("kiosk_central_skipped_total", why="circuit_open") == 1
        time.sleep(0.6)
        box.fake.faults.clear()
        assert box.ask(REFUND)["metadata"]["route"] == "central"  # the half-open probe succeeds: closed again
        assert box.ask(REFUND)["metadata"]["route"] == "central"
        assert box.central_calls() == 4


def test_escalation_needs_the_url_and_the_chat_key(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="KIOSK_CENTRAL_CHAT_KEY"):
        Settings(data_dir=tmp_path, escalate=True, central_url="http://central/v1")
    with pytest.raises(ValidationError, match="KIOSK_CENTRAL_URL"):
        Settings(data_dir=tmp_path, escalate=True, central_chat_key="app-0123456789abcdef")
    assert Settings(data_dir=tmp_path).escalate is False


def test_the_llm_route_escalates_and_falls_back_to_the_local_llm(
    api_bundle: Path, tmp_path: Path, fake: tuple[LiveFakeDify, Central]
) -> None:
    server, central = fake
    settings = make_settings(
        api_bundle,
        tmp_path / "data",
        escalate=True,
        escalate_on="llm",
        central_url=server.api_url,
        central_chat_key=central.chat_key,
        escalate_first_byte_s=1.0,
    )
    with TestClient(create_app(settings)) as client:
        box = Box(client, settings, server, central)
        box.sync_agent_says("online")
        wait_for_index(client)
        server.faults.rate_limit(CHAT, times=1)
        body = box.ask(DOGS)
        assert body["metadata"]["route"] in {"llm", "handoff"} and body["answer"]  # what the box says alone
        assert box.row(body["message_id"])["escalation"] == "fallback:status_429"
        generated = box.metric("kiosk_llm_first_token_seconds_count")
        body = box.ask(DOGS)
        assert body["metadata"]["route"] == "central" and box.central_calls() == 2
        assert box.metric("kiosk_llm_first_token_seconds_count") == generated  # the local LLM never started


def test_the_pushed_transcript_marks_escalated_turns(box: Box, tmp_path: Path) -> None:
    from edge.sync.agent import SyncAgent
    from edge.sync.client import DifyClient

    escalated = box.ask(REFUND)
    box.fake.faults.rate_limit(CHAT, times=1)
    fallback = box.ask(CANCEL, conversation_id=escalated["conversation_id"])
    assert fallback["metadata"]["route"] == "handoff"
    settings = Settings(
        data_dir=box.settings.data_dir,
        central_url=box.settings.central_url,
        central_ingest_key=box.central.workflow_key,
        sync_idle_s=0,
        handoff_hold_s=0,  # the fallback called staff: without this the record waits for the hand-off to end
    )
    db = open_database(settings.database_path)
    try:
        agent = SyncAgent(settings, db, DifyClient(settings.central_url, timeout_s=5))
        agent.run_once()
    finally:
        db.close()
    runs = box.fake.state.runs_of(box.central.workflow_app_id)
    (record,) = [json.loads(run.inputs["transcript"]) for run in runs]
    first, second = record["turns"]
    assert record["escalated"] == 1
    assert first["escalated"] is True and first["route"] == "central"
    assert first["central_message_id"] == box.row(escalated["message_id"])["central_message_id"]
    assert first["central_conversation_id"]
    assert second["escalated"] is False and second["escalation"] == "fallback:status_429"


def test_stop_ends_a_relayed_answer_where_it_is(box: Box) -> None:
    box.fake.app.configure(token_delay=0.2)
    body = {"query": REFUND, "user": "kiosk-1", "inputs": {}, "response_mode": "streaming"}
    events: list[dict[str, Any]] = []
    with box.client.stream("POST", CHAT, headers=AUTH, json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(json.loads(line[len("data: ") :]))
            if len(events) == 1:
                stopped = box.client.post(f"{CHAT}/{events[0]['task_id']}/stop", headers=AUTH, json={"user": "kiosk-1"})
                assert stopped.json() == {"result": "success"}
    answer = "".join(e["answer"] for e in events if e["event"] == "message")
    assert answer and REFUND_ANSWER.startswith(answer) and answer != REFUND_ANSWER
    end = events[-1]
    assert end["event"] == "message_end" and end["metadata"]["route"] == "central"
    assert box.row(end["message_id"])["answer"] == answer


def test_without_a_sync_agent_the_box_finds_out_itself(
    api_bundle: Path, tmp_path: Path, fake: tuple[LiveFakeDify, Central]
) -> None:
    """No agent record (a store without sync): one question per cool-down asks; a success makes it reachable."""
    server, central = fake
    settings = box_settings(api_bundle, tmp_path / "data", server, central, escalate_breaker_cooldown_s=0.5)
    with TestClient(create_app(settings)) as client:
        box = Box(client, settings, server, central)
        rule = server.faults.down(CHAT)
        assert box.ask(REFUND)["answer"] == handoff(box) and box.central_calls() == 1
        assert box.ask(REFUND)["answer"] == handoff(box) and box.central_calls() == 1  # found out: not again yet
        server.faults.remove(rule.id)
        time.sleep(0.6)
        assert box.ask(REFUND)["metadata"]["route"] == "central"
        assert box.ask(REFUND)["metadata"]["route"] == "central" and box.central_calls() == 3


def test_a_conversation_central_no_longer_has_is_opened_anew(box: Box) -> None:
    first = box.ask(REFUND)
    central_conversation = box.row(first["message_id"])["central_conversation_id"]
    deleted = httpx.request(
        "DELETE",
        f"{box.fake.api_url}/conversations/{central_conversation}",
        headers={"Authorization": f"Bearer {box.central.chat_key}"},
        json={"user": box.client.app.state.escalator.central_user("kiosk-1")},
    )
    assert deleted.status_code == 204, deleted.text
    second = box.ask(CANCEL, conversation_id=first["conversation_id"])
    why = box.row(second["message_id"])["escalation"]  # e.g. fallback:<cause>, when central was not used
    assert second["answer"] == CANCEL_ANSWER and second["metadata"]["route"] == "central", why
    renewed = box.row(second["message_id"])["central_conversation_id"]
    assert renewed and renewed != central_conversation
    third = box.ask(REFUND, conversation_id=first["conversation_id"])
    assert box.row(third["message_id"])["central_conversation_id"] == renewed  # the mapping follows


def test_centrals_answer_from_no_knowledge_still_hands_off(box: Box) -> None:
    """Central answering from no knowledge (its "I don't know", or its model's guess: no
    `retriever_resources`) does not replace the colleague the box would have called: the shopper reads
    central's words, then the hand-off, and the turn stays a hand-off (so staff are called)."""
    question = "can you sing me a song about penguins"
    body = box.ask(question)
    assert body["answer"] == f"{NO_ANSWER}\n\n{handoff(box)}"
    row = box.row(body["message_id"])
    assert row["route"] == "handoff" and row["escalation"] == "answered_ungrounded" and row["central_message_id"]
    events = box.ask(question, stream=True)
    text = "".join(event.get("answer", "") for event in events if event["event"] == "message")
    assert text == f"{NO_ANSWER}\n\n{handoff(box)}"


def test_a_central_trusted_without_sources_answers_hand_offs_alone(
    api_bundle: Path, tmp_path: Path, fake: tuple[LiveFakeDify, Central]
) -> None:
    with running_box(api_bundle, tmp_path, fake, escalate_handoff_needs_sources=False) as box:
        body = box.ask("can you sing me a song about penguins")
        assert body["answer"] == NO_ANSWER and body["metadata"]["route"] == "central"
        assert box.row(body["message_id"])["escalation"] == "answered"
