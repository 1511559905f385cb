"""One customer question, end to end, as a stream of events that both API families render.

normalise → hot-answer cache → intent (batch 1, off the event loop) → policy → curated answer,
grounded LLM or hand-off → the turn and its outbox row persisted in one transaction. Everything that
can fail before the first byte (bad input, unknown conversation, a full LLM queue) fails before
the first event, so it can still be an HTTP error; later failures become error events.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from edge.api.errors import InvalidParam, Overloaded
from edge.assistant.cache import AnswerCache, cache_key
from edge.assistant.policy import (
    Decision,
    GroundingLimits,
    Route,
    annotation_decision,
    answers_from_curated,
    decide,
)
from edge.assistant.prompts import build_messages
from edge.assistant.retrieval import Retriever
from edge.assistant.sources import Source
from edge.inference.intent import IntentClassifier, IntentPrediction
from edge.inference.llm import Draining, Generation, LlmEngine, QueueFull
from edge.logs import CONVERSATION_ID
from edge.metrics import Metrics
from edge.settings import Settings
from edge.store.answers import CuratedAnswers
from edge.store.conversations import ConversationStore
from edge.store.knowledge import ANNOTATIONS_DATASET, ANNOTATIONS_NAME, KnowledgeStore
from edge.store.writer import Writer
from edge.text import normalise

log = logging.getLogger(__name__)
HANDOFF_INPUT = "handoff"


@dataclass(frozen=True)
class Started:
    conversation_id: str
    message_id: str
    task_id: str
    created_at: int


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass
class Finished:
    message: dict[str, Any]
    route: Route
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    sources: list[Source] = field(default_factory=list)
    annotation_id: str | None = None


Event = Started | Delta | Finished


@dataclass
class Prepared:
    """What is known before the first event: the route and, for the LLM route, the running generation."""

    conversation_id: str
    decision: Decision
    prediction: IntentPrediction | None
    generation: Generation | None = None
    new_conversation: dict[str, Any] | None = None  # set when this turn opens the conversation
    created_at: int = field(default_factory=lambda: int(time.time()))  # the message's, as Started reports it


def wants_handoff(inputs: dict[str, Any]) -> bool:
    """`inputs.handoff` (true, "true", 1): the customer pressed "call a staff member" -- record a hand-off
    whatever the query says. A Dify app on central can declare the same input variable."""
    value = inputs.get(HANDOFF_INPUT)
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return value is True or value == 1


class Assistant:
    def __init__(
        self,
        settings: Settings,
        classifier: IntentClassifier,
        llm: LlmEngine | None,
        conversations: ConversationStore,
        curated: CuratedAnswers,
        cache: AnswerCache[str],
        metrics: Metrics | None = None,
        retriever: Retriever | None = None,
        writer: Writer | None = None,
        knowledge: KnowledgeStore | None = None,
    ) -> None:
        self.settings = settings
        self.classifier = classifier
        self.llm = llm
        self.conversations = conversations
        self.curated = curated
        self.cache = cache
        self.metrics = metrics
        self.retriever = retriever
        self.writer = writer  # turns commit through it (grouped); without one, each in the thread pool
        self.limits = GroundingLimits(
            llm_floor=settings.llm_floor,
            max_chars_per_source=settings.grounding_chars_per_source,
            max_chars=settings.grounding_chars,
            annotation_min_score=settings.annotation_min_score,
        )
        self.knowledge = knowledge
        self.tasks: dict[str, tuple[str, Generation]] = {}
        self._curated: dict[str, str] = curated.all()
        self._annotations: dict[str, tuple[str, str]] = {}  # cache_key(question) → (segment id, answer)
        self._knowledge_version: int | None = None
        self._knowledge_checked = -math.inf

    def curated_answers(self) -> dict[str, str]:
        """Curated answers held in memory; `_follow_knowledge` reloads them when the database changes."""
        return self._curated

    async def _follow_knowledge(self) -> None:
        """Every few seconds, see whether the sync agent changed knowledge or annotations; when it did,
        reload the annotations and empty the hot-answer cache, which may hold a replaced answer."""
        if self.knowledge is None:
            return
        now = time.monotonic()
        if now - self._knowledge_checked < self.settings.knowledge_refresh_s:
            return
        self._knowledge_checked = now
        version = await run_in_threadpool(self.knowledge.version)
        if version == self._knowledge_version:
            return
        pairs = await run_in_threadpool(self.knowledge.qa_pairs, ANNOTATIONS_DATASET)
        annotations = {cache_key(question): (segment_id, answer) for segment_id, question, answer in pairs}
        curated = await run_in_threadpool(self.curated.all)
        if annotations != self._annotations or curated != self._curated:
            # Only a change of the answers themselves empties the cache: segments being embedded or
            # edited move the version too, and must not cost the cache its hits.
            self.cache.clear()
        self._annotations, self._curated = annotations, curated
        self._knowledge_version = version

    def _annotation(self, query: str) -> Decision | None:
        """Central's annotation for exactly this question (normalised), checked before anything else."""
        match = self._annotations.get(cache_key(query))
        if match is None:
            return None
        segment = {
            "id": match[0],
            "dataset_id": ANNOTATIONS_DATASET,
            "dataset_name": ANNOTATIONS_NAME,
            "document_id": ANNOTATIONS_DATASET,
            "document_name": ANNOTATIONS_NAME,
            "answer": match[1],
        }
        return annotation_decision(segment, 1.0, self.settings.store_variables)

    def clean_query(self, query: str) -> str:
        cleaned = normalise(query.replace("\x00", ""))
        if not cleaned:
            raise InvalidParam("query is required", param="query")
        if len(cleaned) > self.settings.max_query_chars:
            raise InvalidParam(f"query is longer than {self.settings.max_query_chars} characters", param="query")
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
        """Route the question; start the LLM if needed. Raises ApiError before anything is sent."""
        conversation, new_conversation = await self._conversation(conversation_id, user, inputs)
        CONVERSATION_ID.set(conversation)
        if wants_handoff(inputs):
            return Prepared(conversation, Decision(Route.HANDOFF), None, new_conversation=new_conversation)
        await self._follow_knowledge()
        annotated = self._annotation(query)
        if annotated is not None:
            return Prepared(conversation, annotated, None, new_conversation=new_conversation)
        cached = self.cache.get(query)
        if cached is not None:
            return Prepared(conversation, Decision(Route.CACHE, answer=cached), None, new_conversation=new_conversation)
        prediction = await asyncio.wrap_future(self.classifier.submit(query))
        curated = self.curated_answers()
        hits = []
        if self.retriever is not None and not answers_from_curated(prediction, curated):
            hits = await run_in_threadpool(self.retriever.search, query)
        decision = decide(prediction, curated, self.settings.store_variables, self.limits, hits)
        if decision.route is Route.CURATED and decision.answer is not None:
            self.cache.put(query, decision.answer)
        prepared = Prepared(conversation, decision, prediction, new_conversation=new_conversation)
        if decision.route is Route.LLM:
            if self.llm is None:
                prepared.decision = Decision(Route.HANDOFF)
                return prepared
            if history is None and new_conversation is not None:
                history = []
            if history is None:
                history = await run_in_threadpool(
                    self.conversations.recent_turns, conversation, self.settings.history_turns
                )
            messages = build_messages(
                self.settings.system_prompt,
                self.settings.store_variables,
                [source["content"] for source in decision.sources],
                history,
                query,
                self.settings.few_shot,
            )
            try:
                prepared.generation = self.llm.submit(messages, max_tokens=self.settings.llm_max_tokens)
            except QueueFull as exc:
                raise Overloaded(
                    "The assistant is busy; please retry shortly.", headers={"Retry-After": str(exc.retry_after)}
                ) from None
            except Draining as exc:
                raise Overloaded(str(exc), headers={"Retry-After": "5"}) from None
        return prepared

    async def run(self, prepared: Prepared, query: str, user: str) -> AsyncIterator[Event]:
        """Yield Started, the answer's deltas, then Finished (after the turn is persisted)."""
        started = time.perf_counter()
        message_id = str(uuid.uuid4())
        task_id = str(uuid.uuid4())
        decision = prepared.decision
        yield Started(prepared.conversation_id, message_id, task_id, prepared.created_at)
        parts: list[str] = []
        generation = prepared.generation
        try:
            if generation is not None:
                self.tasks[task_id] = (user, generation)
                try:
                    async for chunk in generation.achunks():
                        parts.append(chunk)
                        yield Delta(chunk)
                except Draining as exc:  # queued when shutdown began: say so, as an error event
                    raise Overloaded(str(exc), headers={"Retry-After": "5"}) from None
            else:
                text = decision.answer if decision.route in (Route.CACHE, Route.CURATED) else None
                parts.append(text if text is not None else self.settings.handoff_message)
                yield Delta(parts[-1])
        except BaseException:
            if generation is not None:
                generation.cancel()
            self._persist_later(prepared, query, user, message_id, "".join(parts), started, error="stopped")
            raise
        finally:
            self.tasks.pop(task_id, None)
        persist = self.writer.run if self.writer is not None else run_in_threadpool
        finished = await persist(self._persist, prepared, query, user, message_id, "".join(parts), started, None)
        yield finished

    def _persist(
        self,
        prepared: Prepared,
        query: str,
        user: str,
        message_id: str,
        answer: str,
        started: float,
        error: str | None,
    ) -> Finished:
        generation = prepared.generation
        prediction = prepared.prediction
        route = prepared.decision.route
        sources = prepared.decision.sources
        latency = time.perf_counter() - started
        prompt_tokens = generation.prompt_tokens if generation else 0
        completion_tokens = generation.completion_tokens if generation else 0
        message = self.conversations.record_turn(
            prepared.conversation_id,
            user,
            query,
            answer,
            new_conversation=prepared.new_conversation,
            created_at=prepared.created_at,
            route=route.value,
            intent=prediction.label if prediction else None,
            confidence=prediction.confidence if prediction else None,
            latency_ms=latency * 1000.0,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            sources=sources,
            status="error" if error else "normal",
            error=error,
            message_id=message_id,
        )
        if self.metrics is not None:
            self.metrics.observe_answer(route.value, prediction.label if prediction else None, latency, generation)
        log.info(
            "answered",
            extra={"conversation_id": prepared.conversation_id, "route": route.value, "latency_ms": latency * 1000},
        )
        return Finished(
            message, route, prompt_tokens, completion_tokens, latency, sources, prepared.decision.annotation_id
        )

    def _persist_later(self, *args: Any, error: str) -> None:
        """Record an interrupted turn without awaiting (we may be inside a closing generator)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.run_in_executor(None, lambda: self._persist(*args, error))

    def stop(self, task_id: str, user: str) -> None:
        """Dify's stop: silently ignores unknown tasks and other users' tasks."""
        entry = self.tasks.get(task_id)
        if entry and entry[0] == user:
            entry[1].cancel()
