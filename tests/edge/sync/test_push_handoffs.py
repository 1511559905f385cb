"""Hand-offs go to central with their conversation's record: reason, claim, close and waits, held until the
hand-off ends (or `handoff_hold_s` runs out), a late change in the next part; staff alerts are not pushed.

The pusher sends through the fake central's ingest workflow (in process, its input form enforced) from a
real SQLite file; what central holds is read back from its workflow runs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from edge.settings import Settings
from edge.store.conversations import ConversationStore
from edge.store.db import open_database
from edge.store.handoffs import ABSTENTION, BUTTON, Opening
from edge.store.outbox import Outbox
from edge.sync.agent import SyncAgent
from edge.sync.client import DifyClient
from edge.sync.push import Pusher, PushPolicy, WorkflowSink
from tests.fake_dify import FakeDify, FakeDifyState, FakeDifyTransport, create_fake_dify
from tests.fake_dify.demo import Central, seed_demo

RUN = "/v1/workflows/run"
HOLD_S = 1800.0
POLICY = PushPolicy(
    store_id="s1", kiosk_id="k1", idle_s=60, max_attempts=3, backoff_base_s=1, backoff_max_s=8, handoff_hold_s=HOLD_S
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Box:
    clock: Clock
    db: sqlite_utils.Database
    store: ConversationStore
    pusher: Pusher
    fake: FakeDify
    central: Central

    def records(self) -> dict[str, dict[str, Any]]:
        """What central holds: each record's transcript by its `edge_session_id`."""
        runs = self.fake.state.runs_of(self.central.workflow_app_id)
        return {run.inputs["edge_session_id"]: json.loads(run.inputs["transcript"]) for run in runs}

    def inputs(self, session: str) -> dict[str, Any]:
        [run] = [
            r for r in self.fake.state.runs_of(self.central.workflow_app_id) if r.inputs["edge_session_id"] == session
        ]
        return run.inputs


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    state = FakeDifyState(seed=14)
    central = seed_demo(state)
    fake = create_fake_dify(state)
    transport = FakeDifyTransport(fake)
    client = DifyClient("http://dify.test/v1", timeout_s=5, transport=transport)
    clock = Clock()
    db = open_database(tmp_path / "kiosk.sqlite3")
    store = ConversationStore(db, clock=clock)
    sink = WorkflowSink(client, central.workflow_key)
    pusher = Pusher(db, sink, POLICY, clock=clock, rng=random.Random(0), sleep=clock.sleep)
    yield Box(clock, db, store, pusher, fake, central)
    client.close()
    transport.close()
    db.close()


def say(box: Box, conversation: str | None, query: str, *, handoff: str | None = None, alert: bool = False) -> str:
    """One kiosk turn; `handoff` (a reason) makes it a hand-off turn. Returns the conversation id."""
    if conversation is None:
        conversation = box.store.create("kiosk-a", {})["id"]
    opening = None
    if handoff is not None:
        opening = Opening(
            conversation_id="",
            user="",
            message_id="",
            kiosk_id="kiosk-2",
            language="zh",
            reason=handoff,
            detail="unsure" if handoff == ABSTENTION else None,
            question=query,
            alert=alert,
        )
    box.store.record_turn(
        conversation,
        "kiosk-a",
        query,
        f"answer to {query}",
        route="handoff" if handoff else "curated",
        intent=None,
        confidence=None,
        latency_ms=2.0,
        prompt_tokens=0,
        completion_tokens=0,
        sources=[],
        handoff=opening,
    )
    return conversation


def handoff_of(box: Box, conversation: str) -> dict[str, Any]:
    [item] = box.store.handoffs.of_conversation(conversation)
    return item


def outbox(box: Box, kind: str) -> list[dict[str, Any]]:
    return list(box.db.query("SELECT * FROM outbox WHERE kind = ? ORDER BY id", [kind]))


def test_the_record_carries_each_hand_off_with_its_reason_and_claim_and_close_times(box: Box) -> None:
    conversation = say(box, None, "where are the trolleys")
    box.clock.now += 10
    say(box, conversation, "I need a person", handoff=BUTTON)
    opened = box.clock.now
    handoff_id = handoff_of(box, conversation)["id"]
    box.clock.now += 30
    box.store.handoffs.claim(handoff_id, "Li")
    box.clock.now += 60
    box.store.handoffs.close(handoff_id, "Wang")
    box.clock.now += 61

    report = box.pusher.run()

    assert (report.sent, report.turns, report.handoffs) == (1, 2, 3)  # opened, claimed, closed
    record = box.records()[conversation]
    assert record["handoffs"] == 1  # the count of hand-off turns, as before
    assert record["handoff_details"] == [
        {
            "id": handoff_id,
            "kiosk_id": "kiosk-2",
            "language": "zh",
            "reason": BUTTON,
            "detail": None,
            "status": "closed",
            "opened_at": opened,
            "claimed_at": opened + 30,
            "claimed_by": "Li",
            "closed_at": opened + 90,
            "closed_by": "Wang",
            "abandoned_at": None,
            "calls": 1,
            "time_to_claim_s": 30.0,
            "time_to_close_s": 90.0,
            "waited_s": 30.0,
        }
    ]
    assert record["ended_at"] == opened + 90  # the record ends when the colleague was done
    assert box.inputs(conversation)["ended_at"] == datetime.fromtimestamp(opened + 90, UTC).isoformat()
    assert Outbox(box.db).depth() == 0


def test_an_active_hand_off_holds_the_record_until_it_ends(box: Box) -> None:
    conversation = say(box, None, "is this on sale?", handoff=ABSTENTION)
    handoff_id = handoff_of(box, conversation)["id"]
    box.clock.now += 61
    assert box.pusher.run().sent == 0  # idle, but the hand-off is open: a colleague may still come
    box.store.handoffs.claim(handoff_id, "Li")
    box.clock.now += 600
    assert box.pusher.run().sent == 0  # claimed: on the way, not done
    box.store.handoffs.close(handoff_id, "Li")
    assert box.pusher.run().sent == 1
    [record] = box.records().values()
    [detail] = record["handoff_details"]
    assert (detail["reason"], detail["detail"], detail["status"]) == (ABSTENTION, "unsure", "closed")
    assert detail["time_to_claim_s"] == 61.0 and detail["time_to_close_s"] == 661.0


def test_an_abandoned_hand_off_does_not_hold_the_record(box: Box) -> None:
    conversation = say(box, None, "call someone", handoff=BUTTON)
    box.clock.now += 45
    [abandoned] = box.store.handoffs.abandon_user("kiosk-a")  # the shopper pressed "Start over"
    box.clock.now += 61
    assert box.pusher.run().sent == 1
    [detail] = box.records()[conversation]["handoff_details"]
    assert detail["status"] == "abandoned" and detail["abandoned_at"] == abandoned["abandoned_at"]
    assert detail["waited_s"] == 45.0 and detail["time_to_claim_s"] is None


def test_the_hold_runs_out_and_a_late_close_goes_in_the_next_part(box: Box) -> None:
    conversation = say(box, None, "anyone there?", handoff=BUTTON)
    handoff_id = handoff_of(box, conversation)["id"]
    box.clock.now += HOLD_S - 1
    assert box.pusher.run().sent == 0
    box.clock.now += 2
    assert box.pusher.run().sent == 1  # nobody came within the hold: central learns it is still open
    [first] = box.records()[conversation]["handoff_details"]
    assert first["status"] == "open" and first["waited_s"] == HOLD_S + 1

    box.clock.now += 300
    box.store.handoffs.close(handoff_id, "Li")  # a colleague helped after all, and said so late
    box.clock.now += 1
    report = box.pusher.run()
    assert (report.sent, report.turns, report.handoffs) == (1, 0, 1)
    late = box.records()[f"{conversation}:2"]
    assert late["turns"] == [] and late["handoffs"] == 0
    [closed] = late["handoff_details"]
    assert closed["id"] == handoff_id and closed["status"] == "closed" and closed["closed_by"] == "Li"
    assert closed["time_to_close_s"] == HOLD_S + 301
    assert late["started_at"] == late["ended_at"] == closed["closed_at"]  # not 1970: the record has a time
    assert Outbox(box.db).depth() == 0


def test_a_second_call_after_the_push_updates_the_count_in_the_next_part(box: Box) -> None:
    conversation = say(box, None, "help", handoff=BUTTON)
    box.clock.now += HOLD_S + 1
    box.pusher.run()
    say(box, conversation, "hello? still here", handoff=BUTTON)  # counted on the open hand-off
    box.clock.now += 61
    assert box.pusher.run().sent == 1  # the hold counts from the opening, long ago
    records = box.records()
    assert records[conversation]["handoff_details"][0]["calls"] == 1
    second = records[f"{conversation}:2"]
    assert [turn["query"] for turn in second["turns"]] == ["hello? still here"] and second["handoffs"] == 1
    [detail] = second["handoff_details"]
    assert detail["calls"] == 2 and detail["status"] == "open"


def test_alert_rows_are_never_taken_or_marked_by_the_push(box: Box) -> None:
    conversation = say(box, None, "I need help", handoff=BUTTON, alert=True)
    [alert] = outbox(box, "alert")
    box.store.handoffs.close(handoff_of(box, conversation)["id"], "Li")
    box.clock.now += 61
    report = box.pusher.run()
    assert report.sent == 1 and report.handoffs == 2
    [after] = outbox(box, "alert")
    assert after == alert  # still pending, not leased, no attempt counted: the alert sender's row
    assert {row["status"] for row in outbox(box, "handoff")} == {"done"}
    record = json.loads(box.db.execute("SELECT outbox_ids FROM pushed_records").fetchone()[0])
    assert alert["id"] not in record
    box.clock.now += 3600
    assert box.pusher.run().sent == 0  # a pending alert alone makes nothing due
    assert outbox(box, "alert") == [alert]


def test_a_record_being_retried_is_not_held_by_a_new_hand_off(box: Box) -> None:
    conversation = say(box, None, "opening hours?")
    box.clock.now += 61
    box.fake.faults.error(RUN, 503, times=1)
    report = box.pusher.run()
    assert report.failed == 1 and box.records() == {}
    say(box, conversation, "call a colleague", handoff=BUTTON)  # the shopper came back meanwhile
    box.clock.now += 61
    report = box.pusher.run()
    assert report.sent == 1  # part 1 (written ahead, its rows fixed) goes; part 2 waits for the hand-off
    assert list(box.records()) == [conversation]
    assert box.records()[conversation]["handoff_details"] == []


def test_the_agent_takes_the_hold_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, central_url="http://central.invalid/v1", central_ingest_key="app-x", handoff_hold_s=42
    )
    db = open_database(settings.database_path)
    client = DifyClient(settings.central_url, timeout_s=1)
    agent = SyncAgent(settings, db, client)
    assert agent.pusher is not None and agent.pusher.policy.handoff_hold_s == 42
    client.close()
    db.close()
