"""The LLM's answer reaches the shopper sentence by sentence, each checked against its grounding first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from edge.assistant.faithfulness import Evidence
from edge.assistant.pipeline import Assistant, Prepared
from edge.assistant.policy import Decision, Reason, Route
from edge.assistant.recorder import Turn, TurnRecorder
from edge.metrics import Metrics
from edge.settings import Settings


class ScriptedGeneration:
    """Stands in for the engine's Generation at its boundary: the chunks a model streamed, and cancel()."""

    def __init__(self, chunks: list[str]) -> None:
        self._chunks = chunks
        self.cancelled = False
        self.sent = 0

    async def achunks(self) -> AsyncIterator[str]:
        for chunk in self._chunks:
            if self.cancelled:
                return
            self.sent += 1
            yield chunk

    def cancel(self) -> None:
        self.cancelled = True


def run(chunks: list[str], evidence: list[str]) -> tuple[list[str], Prepared, ScriptedGeneration, Metrics]:
    metrics = Metrics()
    assistant = Assistant(Settings(), None, None, None, TurnRecorder(None, None, metrics))  # type: ignore[arg-type]
    prepared = Prepared("c", Decision(Route.LLM, reason=Reason.PASSAGES), "en", evidence=Evidence(evidence))
    generation = ScriptedGeneration(chunks)
    prepared.generation = generation  # type: ignore[assignment]
    turn = Turn("c", "u", "q", "m", prepared, 0.0)

    async def collect() -> list[str]:
        return [part async for part in assistant._checked(prepared, generation, turn)]  # type: ignore[arg-type]

    return asyncio.run(collect()), prepared, generation, metrics


def count(metrics: Metrics, result: str) -> float:
    return metrics.generation_checks.labels(result=result)._value.get()


GROUNDING = ["Customers park free for two hours behind the store.", "We are open from 9:00 to 20:00."]


def test_a_faithful_answer_streams_sentence_by_sentence() -> None:
    parts, prepared, _, metrics = run(["You can park ", "free for 2 hours. ", "We close at 8pm", "."], GROUNDING)
    assert parts == ["You can park free for 2 hours. ", "We close at 8pm."]
    assert prepared.decision.route is Route.LLM and count(metrics, "passed") == 1


def test_an_invented_fact_before_anything_was_shown_becomes_the_hand_off() -> None:
    parts, prepared, generation, metrics = run(["We close at ", "10:00pm. ", "Parking is free."], GROUNDING)
    assert parts == [Settings().handoff_message["en"]]
    assert prepared.decision.route is Route.HANDOFF and prepared.decision.reason is Reason.UNFAITHFUL
    assert generation.cancelled and generation.sent == 2  # the model was stopped at the bad sentence
    assert count(metrics, "rejected") == 1 and count(metrics, "passed") == 0


def test_an_invented_fact_later_ends_the_answer_after_the_checked_sentences() -> None:
    parts, prepared, _, metrics = run(["Parking is free for two hours. ", "The Wi-Fi password is Store123."], GROUNDING)
    assert parts == ["Parking is free for two hours. "]
    assert prepared.decision.route is Route.LLM and prepared.decision.reason is Reason.UNFAITHFUL
    assert count(metrics, "rejected") == 1
