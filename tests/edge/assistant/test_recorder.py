"""Recording turns: every one through the writer, counted and logged only once committed, drained at close."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from edge.assistant.pipeline import Prepared
from edge.assistant.policy import Decision, Reason, Route
from edge.assistant.recorder import Turn, TurnRecorder
from edge.logs import REQUEST_ID, JsonFormatter
from edge.metrics import Metrics
from edge.store.conversations import ConversationStore
from edge.store.db import memory_database
from edge.store.writer import Writer


class Box:
    def __init__(self) -> None:
        self.db = memory_database()
        self.store = ConversationStore(self.db)
        self.writer = Writer(self.db)
        self.writer.start()
        self.metrics = Metrics()
        self.recorder = TurnRecorder(self.store, self.writer, self.metrics)
        self.gate = threading.Event()

    def hold_writer(self) -> None:
        """Keep the writer busy, so what is recorded next is queued, not committed, until `gate` is set."""
        self.writer.submit(self.gate.wait)
        time.sleep(0.05)

    def turn(self, message_id: str, *, new: bool = True) -> Turn:
        decision = Decision(Route.CURATED, answer="Refunds take 5 days.", label="refund.status", reason=Reason.INTENT)
        prepared = Prepared("c1", decision, "en", new_conversation={"inputs": {}} if new else None)
        return Turn(
            "c1", "u", "where is my refund", message_id, prepared, time.perf_counter(), ["Refunds take 5 days."]
        )

    def answers(self) -> float:
        return self.metrics.answers.labels(route="curated", intent="refund.status", language="en")._value.get()

    def stored(self) -> list[tuple[str, str]]:
        return self.db.execute("SELECT id, status FROM messages ORDER BY seq").fetchall()


@pytest.fixture
def box() -> Iterator[Box]:
    box = Box()
    yield box
    box.gate.set()
    box.writer.close()
    box.db.close()


def test_an_answer_is_counted_and_logged_only_once_committed(box: Box, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.assistant.recorder")

    async def scenario() -> None:
        box.hold_writer()
        task = asyncio.ensure_future(box.recorder.record(box.turn("m1")))
        await asyncio.sleep(0.05)
        assert box.answers() == 0 and "answered" not in caplog.messages  # queued, not yet durable
        box.gate.set()
        finished = await task
        assert finished.message["id"] == "m1"

    asyncio.run(scenario())
    assert box.stored() == [("m1", "normal")]
    assert box.answers() == 1 and caplog.messages.count("answered") == 1


def test_a_turn_that_does_not_commit_is_not_counted(box: Box, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.assistant.recorder")

    async def scenario() -> None:
        with pytest.raises(Exception, match="Conversation Not Exists"):
            await box.recorder.record(box.turn("m1", new=False))  # its conversation is gone

    asyncio.run(scenario())
    assert box.stored() == [] and box.answers() == 0 and "answered" not in caplog.messages


def test_a_committed_turn_counts_even_if_the_request_went_away(box: Box) -> None:
    async def scenario() -> None:
        box.hold_writer()
        task = asyncio.ensure_future(box.recorder.record(box.turn("m1")))
        await asyncio.sleep(0.05)
        task.cancel()  # the shopper's connection closed while the turn was queued
        with pytest.raises(asyncio.CancelledError):
            await task
        box.gate.set()

    asyncio.run(scenario())
    box.writer.close()
    assert box.stored() == [("m1", "normal")] and box.answers() == 1


def test_an_interrupted_turn_goes_through_the_writer_and_is_drained_at_close(
    box: Box, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge.assistant.recorder")
    box.hold_writer()
    box.recorder.record_interrupted(box.turn("m1"), "stopped")  # from a closing generator: no await
    assert box.stored() == [] and "interrupted" not in caplog.messages
    writes = box.writer.writes
    box.gate.set()
    box.writer.close()  # the lifespan closes the writer before the database: the queued turn is saved
    assert box.stored() == [("m1", "error")]
    assert box.writer.writes == writes + 2  # the blocker and the turn, both through the writer
    assert caplog.messages.count("interrupted") == 1
    assert box.answers() == 0  # logged, not counted as an answer


def test_an_interrupted_turn_after_shutdown_is_logged_not_raised(box: Box, caplog: pytest.LogCaptureFixture) -> None:
    box.writer.close()
    box.recorder.record_interrupted(box.turn("m1"), "stopped")
    assert "an interrupted turn was not recorded" in caplog.text


def test_the_answered_line_carries_the_request_id(box: Box) -> None:
    """Logged on the writer thread at COMMIT, in the request's context: one complaint traces end to end."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("edge.assistant.recorder")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    async def scenario() -> None:
        REQUEST_ID.set("req-42")
        await box.recorder.record(box.turn("m1"))

    try:
        asyncio.run(scenario())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    line = json.loads(out.getvalue().splitlines()[-1])
    assert line["message"] == "answered" and line["request_id"] == "req-42" and line["conversation_id"] == "c1"
