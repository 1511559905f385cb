"""One customer question, end to end, as a stream of events that both API families render.

normalise → route (annotation, hot cache, one encoder pass, retrieval, policy, follow-up; see
`routing`) → a verbatim answer in the shopper's language, a checked generation, a polite decline or
a hand-off → the turn and its outbox row persisted in one transaction (`recorder`). Everything that
can fail before the first byte (bad input, unknown conversation, a full LLM queue) fails before the
first event, so it can still be an HTTP error; later failures become error events.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.concurrency import run_in_threadpool

from edge.assistant.escalation import ABSTENTIONS, Attempt, Escalator
from edge.assistant.faithfulness import Evidence
from edge.assistant.policy import Decision, Reason, Route
from edge.assistant.prompts import build_messages
from edge.assistant.recorder import Finished, Turn, TurnRecorder
from edge.assistant.routing import Router
from edge.central.chat import CentralFailed
from edge.errors import BadInput, Busy
from edge.inference.intent import Understanding
from edge.inference.llm import Draining, Generation, LlmEngine, QueueFull
from edge.language import detect, pick
from edge.logs import CONVERSATION_ID
from edge.settings import Settings
from edge.store.conversations import ConversationStore
from edge.store.handoffs import KIOSK_ID_MAX
from edge.text import normalise

HANDOFF_INPUT = "handoff"
KIOSK_INPUT = "kiosk_id"
_SENTENCE_END = re.compile(r"[.!?。！？](?:\s+|$)|\n")

__all__ = ["Assistant", "Delta", "Finished", "Prepared", "Started", "wants_handoff"]


@dataclass(frozen=True)
class Started:
    conversation_id: str
    message_id: str
    task_id: str
    created_at: int


@dataclass(frozen=True)
class Delta:
    text: str


Event = Started | Delta | Finished


@dataclass
class Prepared:
    """What is known before the first event: the route and, for the LLM route, the running generation."""

    conversation_id: str
    decision: Decision
    language: str
    understanding: Understanding | None = None
    generation: Generation | None = None
    evidence: Evidence | None = None  # what a generated answer may state
    new_conversation: dict[str, Any] | None = None  # set when this turn opens the conversation
    escalation: Attempt | None = None  # set when central is asked first (the local decision is the fallback)
    created_at: int = field(default_factory=lambda: int(time.time()))  # the message's, as Started reports it
    started: float = field(default_factory=time.perf_counter)  # when the question arrived: latency counts routing
    kiosk_id: str | None = None  # `inputs.kiosk_id`: which kiosk a hand-off calls staff to


class Relay:
    """An escalated answer being relayed, as `/stop` sees it: stopping ends the relay after the current chunk."""

    def __init__(self) -> None:
        self.stopped = False

    def cancel(self) -> None:
        self.stopped = True


def kiosk_of(inputs: dict[str, Any]) -> str | None:
    """`inputs.kiosk_id`: the kiosk asking, when a box serves several (the kiosk page sends its `?kiosk=`).
    Only a short printable name is taken; anything else falls back to the box's own `kiosk_id`."""
    value = inputs.get(KIOSK_INPUT)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if 0 < len(value) <= KIOSK_ID_MAX and value.isprintable() else None


def wants_handoff(inputs: dict[str, Any]) -> bool:
    """`inputs.handoff` (true, "true", 1): the customer pressed "call a staff member" -- record a hand-off
    whatever the query says. A Dify app on central can declare the same input variable."""
    value = inputs.get(HANDOFF_INPUT)
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return value is True or value == 1


def split_sentence(buffer: str) -> tuple[str, str] | None:
    """The first complete sentence of `buffer` (with its trailing space) and the rest, or None."""
    match = _SENTENCE_END.search(buffer)
    if match is None or (match.end() == len(buffer) and not match.group(0)[-1:].isspace()):
        return None
    return buffer[: match.end()], buffer[match.end() :]


class Assistant:
    def __init__(
        self,
        settings: Settings,
        router: Router,
        llm: LlmEngine | None,
        conversations: ConversationStore,
        recorder: TurnRecorder,
        escalator: Escalator | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.llm = llm
        self.conversations = conversations
        self.recorder = recorder
        self.escalator = escalator  # None: escalation off (the default)
        self.tasks: dict[str, tuple[str, Generation | Relay]] = {}

    def clean_query(self, query: str) -> str:
        cleaned = normalise(query.replace("\x00", ""))
        if not cleaned:
            raise BadInput("query is required", param="query")
        if len(cleaned) > self.settings.max_query_chars:
            raise BadInput(f"query is longer than {self.settings.max_query_chars} characters", param="query")
        return cleaned

    async def _conversation(
        self, conversation_id: str | None, user: str, inputs: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        """The conversation's id, and for a new one what to create it with: it is written together with
        its first turn (one write, not two), so no empty conversation is ever left behind."""
        if conversation_id:
            await run_in_threadpool(self.conversations.get, conversation_id, user)  # StoreError → 404 handler
            return conversation_id, None
        return str(uuid.uuid4()), {"inputs": inputs}

    async def prepare(
        self,
        query: str,
        user: str,
        conversation_id: str | None,
        inputs: dict[str, Any],
        history: list[tuple[str, str]] | None = None,
    ) -> Prepared:
        """Route the question; start the LLM if needed. Raises EdgeError before anything is sent."""
        started = time.perf_counter()
        conversation, new_conversation = await self._conversation(conversation_id, user, inputs)
        CONVERSATION_ID.set(conversation)
        loaded: list[list[tuple[str, str]]] = []

        async def past_turns() -> list[tuple[str, str]]:
            if history is not None:
                return history
            if new_conversation is not None:
                return []
            if not loaded:
                turns = max(self.settings.history_turns, self.settings.followup_turns)
                loaded.append(await run_in_threadpool(self.conversations.recent_turns, conversation, turns))
            return loaded[0]

        if wants_handoff(inputs):
            decision = Decision(Route.HANDOFF, reason=Reason.BUTTON)
            return Prepared(
                conversation,
                decision,
                detect(query),
                new_conversation=new_conversation,
                started=started,
                kiosk_id=kiosk_of(inputs),
            )
        routed = await self.router.route(query, past_turns)
        prepared = Prepared(
            conversation,
            routed.decision,
            routed.language,
            routed.understanding,
            new_conversation=new_conversation,
            started=started,
            kiosk_id=kiosk_of(inputs),
        )
        if routed.decision.route is Route.LLM and self.llm is None:
            prepared.decision = Decision(Route.HANDOFF, reason=Reason.NO_LLM)
        if self.escalator is not None and self.escalator.escalates(prepared.decision):
            # The local LLM starts only if central fails: its answer is the fallback, not a race.
            turns = (await past_turns())[-max(self.settings.history_turns, 1) :]
            prepared.escalation = await self.escalator.attempt(conversation, new_conversation is not None, turns)
            if prepared.escalation is not None:
                return prepared
        if prepared.decision.route is Route.LLM:
            self._start_generation(prepared, query, await self._llm_turns(past_turns))
        return prepared

    async def _llm_turns(self, past_turns: Callable[[], Awaitable[list[tuple[str, str]]]]) -> list[tuple[str, str]]:
        return self._llm_history(await past_turns())

    def _llm_history(self, turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The last turns the LLM sees (`history_turns`; none when it is 0)."""
        return turns[-self.settings.history_turns :] if self.settings.history_turns else []

    def _start_generation(self, prepared: Prepared, query: str, turns: list[tuple[str, str]]) -> None:
        assert self.llm is not None
        language = prepared.language
        facts = {
            name: value
            for name, setting in self.settings.store_variables.items()
            if (value := pick(setting, language)) is not None
        }
        grounding = [source["content"] for source in prepared.decision.sources]
        messages = build_messages(self.settings.system_prompt, facts, grounding, turns, query, self.settings.few_shot)
        prepared.evidence = Evidence([*grounding, query, *(text for turn in turns for text in turn), *facts.values()])
        try:
            prepared.generation = self.llm.submit(messages, max_tokens=self.settings.llm_max_tokens)
        except QueueFull as exc:
            raise Busy("The assistant is busy; please retry shortly.", exc.retry_after) from None
        except Draining as exc:
            raise Busy(str(exc), 5) from None

    async def run(self, prepared: Prepared, query: str, user: str) -> AsyncIterator[Event]:
        """Yield Started, the answer's deltas, then Finished (after the turn is persisted)."""
        turn = Turn(prepared.conversation_id, user, query, str(uuid.uuid4()), prepared, prepared.started)
        task_id = str(uuid.uuid4())
        yield Started(prepared.conversation_id, turn.message_id, task_id, prepared.created_at)
        try:
            if prepared.escalation is not None:
                relay = Relay()
                self.tasks[task_id] = (user, relay)
                async with aclosing(self._escalated(prepared, query, user, turn)) as texts:
                    async for text in texts:
                        turn.parts.append(text)
                        yield Delta(text)
                        if relay.stopped:
                            break
            generation = prepared.generation
            if generation is not None:
                self.tasks[task_id] = (user, generation)
                stream = self._checked(prepared, generation, turn) if self.settings.llm_check else generation.achunks()
                async for text in stream:
                    turn.parts.append(text)
                    yield Delta(text)
            elif prepared.decision.route is not Route.CENTRAL:
                turn.parts.append(self._fixed_answer(prepared))
                yield Delta(turn.parts[-1])
        except Draining as exc:  # queued when shutdown began: say so, as an error event
            if prepared.generation is not None:
                prepared.generation.cancel()
            self.recorder.record_interrupted(turn, "stopped")
            raise Busy(str(exc), 5) from None
        except BaseException:
            if prepared.generation is not None:
                prepared.generation.cancel()
            self.recorder.record_interrupted(turn, "stopped")
            raise
        finally:
            self.tasks.pop(task_id, None)
        yield await self.recorder.record(turn)

    async def _escalated(self, prepared: Prepared, query: str, user: str, turn: Turn) -> AsyncIterator[str]:
        """Central's answer; on failure, nothing more (before any text) or a short notice (after some), and
        the local decision set up to answer as it would have without escalation: never two answers glued
        together silently."""
        attempt = prepared.escalation
        assert attempt is not None and self.escalator is not None
        shown = False
        try:
            async with aclosing(self.escalator.stream(attempt, query, user, prepared.language)) as texts:
                async for text in texts:
                    shown = True
                    yield text
        except CentralFailed:
            turn.central = attempt.record()
            if shown:
                yield self.settings.text("central_broke_message", prepared.language)
            if prepared.decision.route is Route.LLM:
                try:
                    self._start_generation(prepared, query, self._llm_history(attempt.turns))
                except Busy:  # the shopper has waited already: a hand-off, not an error
                    sources = prepared.decision.sources
                    prepared.decision = Decision(Route.HANDOFF, sources=sources, reason=Reason.NO_LLM)
            return
        except GeneratorExit:  # stopped (`/stop`) or the shopper left while central's text was shown
            if shown:
                self._answered_by_central(prepared, turn, attempt)
            raise
        needs_sources = self.settings.escalate_handoff_needs_sources
        if prepared.decision.route in ABSTENTIONS and needs_sources and not attempt.answer.grounded:
            # Central answered from no knowledge ("I don't know", or its model's guess): the shopper the box
            # would have handed to a colleague still gets one (or the box's honest decline), told after
            # central's words, and the turn stays what it was, so staff are called.
            turn.central = {**attempt.record(), "escalation": "answered_ungrounded"}
            yield "\n\n"
            return
        self._answered_by_central(prepared, turn, attempt)

    def _answered_by_central(self, prepared: Prepared, turn: Turn, attempt: Attempt) -> None:
        turn.central = attempt.record()
        prepared.decision = replace(prepared.decision, route=Route.CENTRAL, answer=None, label=None, sources=[])

    def _fixed_answer(self, prepared: Prepared) -> str:
        decision = prepared.decision
        if decision.route in (Route.CACHE, Route.CURATED) and decision.answer is not None:
            return decision.answer
        name = "decline_message" if decision.route is Route.DECLINED else "handoff_message"
        return self.settings.text(name, prepared.language)

    async def _checked(self, prepared: Prepared, generation: Generation, turn: Turn) -> AsyncIterator[str]:
        """The generation sentence by sentence, each released only once the faithfulness check passed it.

        At the first sentence stating a fact its grounding does not hold, generation stops: with
        nothing shown yet the shopper gets the hand-off instead; otherwise the answer ends with the
        sentences already checked. Never a checked and an unchecked answer glued together."""
        evidence = prepared.evidence or Evidence([])
        buffer, released = "", False
        finished = False
        chunks = generation.achunks()
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                finished = True
                chunk = ""
            buffer += chunk
            while (split := split_sentence(buffer)) is not None or (finished and buffer.strip()):
                sentence, buffer = split if split is not None else (buffer, "")
                verdict = evidence.check(sentence)
                if not verdict.faithful:
                    generation.cancel()
                    self.recorder.count_check(passed=False)
                    turn.unsupported = verdict.unsupported
                    if released:  # the checked sentences stand; the turn records why the answer ends there
                        prepared.decision = replace(prepared.decision, reason=Reason.UNFAITHFUL)
                    else:
                        sources = prepared.decision.sources
                        prepared.decision = Decision(Route.HANDOFF, sources=sources, reason=Reason.UNFAITHFUL)
                        yield self.settings.text("handoff_message", prepared.language)
                    return
                released = True
                yield sentence
            if finished:
                break
        if released:
            self.recorder.count_check(passed=True)

    def stop(self, task_id: str, user: str) -> None:
        """Dify's stop: silently ignores unknown tasks and other users' tasks."""
        entry = self.tasks.get(task_id)
        if entry and entry[0] == user:
            entry[1].cancel()
