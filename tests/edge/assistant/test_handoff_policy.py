"""Which turns open a hand-off for staff, and what the hand-off says: why, where, in which language."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from edge.assistant.pipeline import Prepared, kiosk_of
from edge.assistant.policy import Decision, Reason, Route
from edge.assistant.recorder import HandoffPolicy, Turn, TurnRecorder
from edge.store.conversations import ConversationStore
from edge.store.db import memory_database
from edge.store.handoffs import ABSTENTION, BUTTON, ERROR, OPEN
from edge.store.writer import Writer


def turn(route: Route, reason: Reason, *, language: str = "en", kiosk: str | None = None, new: bool = True) -> Turn:
    prepared = Prepared(
        "c1", Decision(route, reason=reason), language, new_conversation={"inputs": {}} if new else None, kiosk_id=kiosk
    )
    return Turn("c1", "kiosk-abc", "能帮我叫一下店员吗", f"m-{time.monotonic_ns()}", prepared, time.perf_counter())


@pytest.mark.parametrize(
    ("reason", "error", "expected"),
    [
        (Reason.BUTTON, None, BUTTON),
        (Reason.BUTTON, "client gone", BUTTON),  # the press counts even if the stream broke off
        (Reason.UNSURE, None, ABSTENTION),
        (Reason.NO_TRANSLATION, None, ABSTENTION),
        (Reason.UNFAITHFUL, None, ABSTENTION),
        (Reason.NO_LLM, None, ERROR),
        (Reason.UNSURE, "stream failed", ERROR),
    ],
)
def test_a_hand_off_turn_opens_a_hand_off_with_its_reason(reason: Reason, error: str | None, expected: str) -> None:
    opening = HandoffPolicy("kiosk-box").opening(turn(Route.HANDOFF, reason, language="zh"), error)
    assert opening is not None
    assert (opening.reason, opening.detail, opening.language) == (expected, reason.value, "zh")
    assert opening.kiosk_id == "kiosk-box" and opening.question == "能帮我叫一下店员吗"


@pytest.mark.parametrize("route", [Route.CURATED, Route.CACHE, Route.LLM, Route.DECLINED, Route.CENTRAL])
def test_answers_and_declines_call_nobody(route: Route) -> None:
    assert HandoffPolicy().opening(turn(route, Reason.INTENT), None) is None


def test_the_kiosk_named_by_the_client_wins_over_the_boxs_own() -> None:
    opening = HandoffPolicy("kiosk-box", alert=True).opening(turn(Route.HANDOFF, Reason.BUTTON, kiosk="entrance"), None)
    assert opening is not None and opening.kiosk_id == "entrance" and opening.alert


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"kiosk_id": " entrance-2 "}, "entrance-2"),
        ({"kiosk_id": "收银台旁"}, "收银台旁"),
        ({}, None),
        ({"kiosk_id": ""}, None),
        ({"kiosk_id": 7}, None),
        ({"kiosk_id": ["a"]}, None),
        ({"kiosk_id": "x" * 65}, None),
        ({"kiosk_id": "bad\nname"}, None),
        ({"kiosk_id": "tab\there"}, None),
    ],
)
def test_only_a_short_printable_kiosk_name_is_taken(inputs: dict[str, object], expected: str | None) -> None:
    assert kiosk_of(inputs) == expected


@pytest.fixture
def recorder() -> Iterator[TurnRecorder]:
    db = memory_database()
    writer = Writer(db)
    writer.start()
    yield TurnRecorder(ConversationStore(db), writer, None, HandoffPolicy("kiosk-box", alert=True))
    writer.close()
    db.close()


def test_the_recorded_hand_off_commits_with_its_turn_and_queues_its_alert(recorder: TurnRecorder) -> None:
    asyncio.run(recorder.record(turn(Route.HANDOFF, Reason.UNSURE, language="zh")))
    handoffs = recorder.conversations.handoffs
    [item] = handoffs.active()
    assert (item["status"], item["reason"], item["language"], item["kiosk_id"]) == (OPEN, ABSTENTION, "zh", "kiosk-box")
    kinds = [row[0] for row in recorder.conversations.db.execute("SELECT kind FROM outbox ORDER BY id").fetchall()]
    assert kinds == ["turn", "handoff", "alert"]
    # A second hand-off turn in the conversation is counted on the active one, not opened again.
    asyncio.run(recorder.record(turn(Route.HANDOFF, Reason.BUTTON, new=False)))
    [again] = handoffs.active()
    assert again["id"] == item["id"] and again["calls"] == 2 and again["reason"] == ABSTENTION


def test_an_interrupted_hand_off_turn_still_calls_staff(recorder: TurnRecorder) -> None:
    recorder.record_interrupted(turn(Route.HANDOFF, Reason.BUTTON), "client gone")
    recorder.writer.close()  # drains: the interrupted turn commits
    [item] = recorder.conversations.handoffs.active()
    assert item["reason"] == BUTTON
