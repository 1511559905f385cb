"""Push state transitions against a sink that records what lands: once per record, whatever fails."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from edge.store.conversations import ConversationStore
from edge.store.db import open_database
from edge.store.outbox import Outbox
from edge.sync.client import AuthFailed, Rejected, Unreachable
from edge.sync.push import (
    ABSENT,
    DONE,
    LANDED,
    PARKED,
    RUNNING,
    Lookup,
    Pusher,
    PushPolicy,
    backoff,
    end_user,
    requeue_parked,
)

POLICY = PushPolicy(store_id="s1", kiosk_id="k1", idle_s=60, max_attempts=3, backoff_base_s=1, backoff_max_s=8)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class LandingSink:
    """Central as the pusher sees it: `landed` is what central holds; `fail` scripts the next calls."""

    def __init__(self) -> None:
        self.landed: dict[str, dict[str, Any]] = {}
        self.fail: list[str] = []  # per send: "down", "lost" (lands, then the response is lost), "reject", "auth"
        self.sends = 0
        self.running: set[str] = set()  # landed, but central has not finished running them
        self.finds = 0

    def find(self, end_user: str, session: str) -> Lookup:
        self.finds += 1
        if end_user in self.running:
            return Lookup(RUNNING, f"run-{end_user}")
        return Lookup(LANDED, f"run-{end_user}") if end_user in self.landed else Lookup(ABSENT)

    def send(self, end_user: str, record: dict[str, Any]) -> str:
        self.sends += 1
        fault = self.fail.pop(0) if self.fail else None
        if fault == "down":
            raise Unreachable("connection refused", maybe_delivered=False)
        if fault == "reject":
            raise Rejected("400 invalid_param transcript is too long")
        if fault == "auth":
            raise AuthFailed("401 Access token is invalid", 401)
        if fault == "timeout":
            raise Unreachable("read timeout")
        self.landed.setdefault(end_user, record)  # central keeps what it received
        if fault == "lost":
            raise Unreachable("read timeout")
        return f"run-{end_user}"


@pytest.fixture
def world(tmp_path: Path):
    clock = Clock()
    db = open_database(tmp_path / "k.db")
    store = ConversationStore(db, clock=clock)
    sink = LandingSink()
    pusher = Pusher(db, sink, POLICY, clock=clock, rng=random.Random(0), sleep=clock.sleep)
    yield clock, db, store, sink, pusher
    db.close()


def turn(store: ConversationStore, conversation: str | None, query: str, route: str = "curated") -> str:
    if conversation is None:
        conversation = store.create("kiosk", {})["id"]
    store.record_turn(
        conversation,
        "kiosk",
        query,
        f"answer to {query}",
        route=route,
        intent="order.cancel_order",
        confidence=0.9,
        latency_ms=3.0,
        prompt_tokens=0,
        completion_tokens=0,
        sources=[],
    )
    return conversation


def test_idle_conversations_are_pushed_once_with_every_turn(world) -> None:
    clock, db, store, sink, pusher = world
    first = turn(store, None, "cancel my order")
    turn(store, first, "call someone", route="handoff")
    busy = turn(store, None, "where is my parcel")
    clock.now += 30
    turn(store, busy, "still waiting")  # busy's last turn is recent: not idle yet
    clock.now += 45
    report = pusher.run()
    assert report.sent == 1 and report.turns == 2
    record = sink.landed[end_user(POLICY, first, 1)]
    assert [t["query"] for t in record["turns"]] == ["cancel my order", "call someone"]
    assert record["handoffs"] == 1 and record["store_id"] == "s1" and record["kiosk_id"] == "k1"
    assert record["turns"][0]["route"] == "curated" and record["turns"][0]["intent"] == "order.cancel_order"
    assert Outbox(db).depth() == 2  # busy's two turns
    clock.now += 61
    assert pusher.run().sent == 1 and Outbox(db).depth() == 0
    assert pusher.run().sent == 0 and sink.sends == 2


def test_a_lost_response_is_found_on_retry_not_sent_twice(world) -> None:
    clock, db, store, sink, pusher = world
    conversation = turn(store, None, "refund please")
    clock.now += 61
    sink.fail = ["lost"]
    report = pusher.run()
    assert report.failed == 1 and Outbox(db).depth() == 1  # landed, but we could not know
    clock.now += 10  # past the jittered backoff (at most 1 s after the first failure)
    retry = pusher.run()
    assert retry.found == 1 and retry.sent == 0 and sink.sends == 1
    assert Outbox(db).depth() == 0
    row = db.execute("SELECT status, workflow_run_id FROM pushed_records").fetchone()
    assert row == (DONE, f"run-{end_user(POLICY, conversation, 1)}")


def test_turns_after_a_push_go_in_the_next_part(world) -> None:
    clock, _db, store, sink, pusher = world
    conversation = turn(store, None, "hello")
    clock.now += 61
    pusher.run()
    turn(store, conversation, "I'm back")
    clock.now += 61
    pusher.run()
    assert sorted(sink.landed) == [end_user(POLICY, conversation, 1), end_user(POLICY, conversation, 2)]
    assert [t["query"] for t in sink.landed[end_user(POLICY, conversation, 2)]["turns"]] == ["I'm back"]


def test_a_record_keeps_its_turns_across_retries(world) -> None:
    clock, _db, store, sink, pusher = world
    conversation = turn(store, None, "one")
    clock.now += 61
    sink.fail = ["down"]
    pusher.run()
    turn(store, conversation, "two")  # arrives while the first record waits for its retry
    clock.now += 61
    pusher.run()  # finishes record 1 with exactly its turn
    clock.now += 61
    pusher.run()
    parts = {key: [t["query"] for t in value["turns"]] for key, value in sink.landed.items()}
    assert parts == {end_user(POLICY, conversation, 1): ["one"], end_user(POLICY, conversation, 2): ["two"]}


def test_refusals_park_with_the_reason_and_are_never_retried(world) -> None:
    clock, db, store, sink, pusher = world
    turn(store, None, "x" * 50)
    clock.now += 61
    sink.fail = ["reject"]
    assert pusher.run().parked == 1
    parked = Outbox(db).parked()
    assert len(parked) == 1 and "transcript is too long" in parked[0]["last_error"]
    clock.now += 10_000
    assert pusher.run().sent == 0 and sink.sends == 1
    assert db.execute("SELECT status FROM pushed_records").fetchone()[0] == PARKED


def test_repeated_failures_back_off_then_park(world) -> None:
    clock, db, store, sink, pusher = world
    turn(store, None, "hello")
    clock.now += 61
    sink.fail = ["down"] * 10
    for _ in range(POLICY.max_attempts):
        pusher.run()
        clock.now += POLICY.backoff_max_s + 1
    row = json.loads(json.dumps(Outbox(db).parked()[0]))
    assert row["attempts"] == POLICY.max_attempts and "connection refused" in row["last_error"]
    assert "gave up" in db.execute("SELECT last_error FROM pushed_records").fetchone()[0]


def test_auth_failure_stops_the_stream_and_leaves_rows_pending(world) -> None:
    clock, db, store, sink, pusher = world
    turn(store, None, "hello")
    clock.now += 61
    sink.fail = ["auth"]
    with pytest.raises(AuthFailed):
        pusher.run()
    row = db.execute("SELECT status, attempts FROM outbox").fetchone()
    assert row == ("pending", 0)


def test_backoff_grows_and_is_capped_with_jitter() -> None:
    rng = random.Random(1)
    waits = [backoff(n, 1.0, 30.0, rng) for n in range(12)]
    assert all(0 <= w <= min(30.0, 2**n) for n, w in enumerate(waits))
    assert max(waits[6:]) > 8  # grows


def test_a_run_that_stays_running_is_waited_for_then_parked_never_sent_again(world) -> None:
    clock, db, store, sink, pusher = world
    conversation = turn(store, None, "hello")
    clock.now += 61
    sink.fail = ["lost"]
    pusher.run()
    user = end_user(POLICY, conversation, 1)
    sink.running.add(user)  # central's worker is stuck on it
    for _ in range(POLICY.max_attempts):
        clock.now += POLICY.backoff_max_s + 1
        report = pusher.run()
        assert report.sent == 0 and sink.sends == 1
    [parked] = Outbox(db).parked()
    assert "still running" in parked["last_error"]
    sink.running.discard(user)  # it finished after all; the operator re-queues
    assert requeue_parked(db, clock=clock) == 1
    assert pusher.run().found == 1 and sink.sends == 1 and Outbox(db).depth() == 0


def test_a_send_that_may_have_landed_waits_for_the_listing_without_counting_attempts(world) -> None:
    clock, db, store, sink, pusher = world
    turn(store, None, "hello")
    clock.now += 61
    sink.fail = ["timeout"]  # the answer is lost and nothing landed (the agent cannot tell)
    pusher.run()
    clock.now += POLICY.backoff_max_s + 1
    report = pusher.run()  # absent, but sent 9 s ago: maybe not listed yet
    assert (report.waiting, report.sent, sink.sends) == (1, 0, 1)
    assert db.execute("SELECT attempts FROM outbox").fetchone()[0] == 1  # the wait is no failure
    clock.now += POLICY.settle_s
    assert pusher.run().sent == 1 and sink.sends == 2 and Outbox(db).depth() == 0


def test_escalated_turns_are_marked_so_central_does_not_count_them_twice(world) -> None:
    clock, _, store, sink, pusher = world
    conversation = store.create("kiosk", {})["id"]
    common = dict(intent=None, confidence=None, latency_ms=900.0, prompt_tokens=0, completion_tokens=0, sources=[])
    central = {
        "escalation": "answered",
        "central_message_id": "c-msg-1",
        "central_conversation_id": "c-conv-1",
        "central_first_byte_ms": 420.0,
    }
    store.record_turn(conversation, "kiosk", "q1", "central's answer", route="central", central=central, **common)
    store.record_turn(
        conversation, "kiosk", "q2", "handoff", route="handoff", central={"escalation": "fallback:timeout"}, **common
    )
    store.record_turn(conversation, "kiosk", "q3", "local", route="curated", **common)
    assert store.central_conversation(conversation) == "c-conv-1"
    clock.now += 120
    assert pusher.run().sent == 1
    record = sink.landed[end_user(POLICY, conversation, 1)]
    first, second, third = record["turns"]
    assert record["escalated"] == 1
    assert first == first | {"escalated": True, "central_message_id": "c-msg-1", "central_conversation_id": "c-conv-1"}
    assert second["escalated"] is False and second["escalation"] == "fallback:timeout"
    assert third["escalated"] is False and "escalation" not in third
