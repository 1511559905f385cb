"""Persisting an answered turn: the message, its outbox row, then metrics and the log line.

Every turn, interrupted ones included (a stop, a client gone), commits through the one writer, which the
lifespan drains before the database closes. A turn is counted and logged only once it has committed,
so `/metrics` never counts an answer the database does not hold -- and once committed it is counted
even if the shopper's connection went away meanwhile.
"""

from __future__ import annotations

import contextvars
import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge.assistant.policy import Reason, Route
from edge.assistant.sources import Source
from edge.metrics import Metrics
from edge.store.conversations import ConversationStore
from edge.store.handoffs import ABSTENTION, BUTTON, ERROR, Opening
from edge.store.writer import Writer, committed

if TYPE_CHECKING:
    from edge.assistant.pipeline import Prepared

log = logging.getLogger(__name__)


@dataclass
class Finished:
    message: dict[str, Any]
    route: Route
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    sources: list[Source] = field(default_factory=list)
    annotation_id: str | None = None


@dataclass
class Turn:
    """One turn while it is being answered."""

    conversation_id: str
    user: str
    query: str
    message_id: str
    prepared: Prepared
    started: float
    parts: list[str] = field(default_factory=list)
    unsupported: tuple[str, ...] = ()  # facts a rejected generation stated that its grounding lacks
    central: dict[str, Any] | None = None  # an escalated turn: central's ids and latency, or why it fell back


@dataclass(frozen=True)
class HandoffPolicy:
    """How a hand-off turn opens a hand-off: the box's own kiosk id (when the client names none) and
    whether a webhook alert is queued with it."""

    kiosk_id: str = "kiosk-1"
    alert: bool = False

    def opening(self, turn: Turn, error: str | None) -> Opening | None:
        """The hand-off a turn opens, or None when it does not hand the shopper over."""
        prepared = turn.prepared
        decision = prepared.decision
        if decision.route is not Route.HANDOFF:
            return None
        if decision.reason is Reason.BUTTON:
            why = BUTTON
        elif decision.reason is Reason.NO_LLM or error is not None:
            why = ERROR  # the box could not answer (its LLM failed or is missing; the turn broke off)
        else:
            why = ABSTENTION
        return Opening(
            conversation_id=turn.conversation_id,
            user=turn.user,
            message_id=turn.message_id,
            kiosk_id=prepared.kiosk_id or self.kiosk_id,
            language=prepared.language,
            reason=why,
            detail=decision.reason.value,
            question=turn.query,
            alert=self.alert,
        )


class TurnRecorder:
    def __init__(
        self,
        conversations: ConversationStore,
        writer: Writer,
        metrics: Metrics | None,
        handoffs: HandoffPolicy | None = None,
    ) -> None:
        self.conversations = conversations
        self.writer = writer  # every turn commits through it, grouped with the turns around it
        self.metrics = metrics
        self.handoffs = handoffs or HandoffPolicy()

    async def record(self, turn: Turn) -> Finished:
        """Commit the turn; returns once it is durable. Counted and logged on COMMIT, in the request's
        logging context, whether or not the request is still there to read the result."""
        future = self.writer.submit(self._write, turn, None)
        context = contextvars.copy_context()
        future.add_done_callback(lambda done: context.run(self._observe, turn, done))
        return await committed(future)

    def record_interrupted(self, turn: Turn, error: str) -> None:
        """Record a turn cut short, without awaiting (we may be inside a closing generator): queued on the
        writer, logged once committed. Never raises over the error that interrupted the stream."""
        try:
            future = self.writer.submit(self._write, turn, error)
        except RuntimeError:
            log.error(
                "the writer is not running: an interrupted turn was not recorded",
                extra={"conversation_id": turn.conversation_id, "message_id": turn.message_id},
            )
            return
        context = contextvars.copy_context()
        future.add_done_callback(lambda done: context.run(self._observe_interrupted, turn, error, done))

    def count_check(self, *, passed: bool) -> None:
        if self.metrics is not None:
            self.metrics.generation_checks.labels(result="passed" if passed else "rejected").inc()

    def _write(self, turn: Turn, error: str | None) -> Finished:
        prepared = turn.prepared
        decision = prepared.decision
        generation = prepared.generation
        understanding = prepared.understanding
        prediction = understanding.prediction if understanding is not None else None
        latency = time.perf_counter() - turn.started
        prompt_tokens = generation.prompt_tokens if generation else 0
        completion_tokens = generation.completion_tokens if generation else 0
        verbatim = decision.route in (Route.CACHE, Route.CURATED)
        message = self.conversations.record_turn(
            turn.conversation_id,
            turn.user,
            turn.query,
            "".join(turn.parts),
            new_conversation=prepared.new_conversation,
            created_at=prepared.created_at,
            route=decision.route.value,
            intent=decision.label if verbatim else (prediction.label if prediction else None),
            confidence=prediction.confidence if prediction else None,
            latency_ms=latency * 1000.0,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            sources=decision.sources,
            status="error" if error else "normal",
            error=error,
            message_id=turn.message_id,
            language=prepared.language,
            reason=decision.reason.value,
            central=turn.central,
            handoff=self.handoffs.opening(turn, error),
        )
        return Finished(
            message,
            decision.route,
            prompt_tokens,
            completion_tokens,
            latency,
            decision.sources,
            decision.annotation_id,
        )

    def _observe(self, turn: Turn, done: Future[Finished]) -> None:
        """After COMMIT: the answer counts, and is logged. A turn that did not commit is neither (its
        error reaches the shopper through the awaiting request)."""
        if done.exception() is not None:
            return
        finished = done.result()
        prepared = turn.prepared
        if self.metrics is not None:
            label = finished.message.get("intent")
            if label and str(label).startswith("segment:"):
                label = "segment"  # one series for central's segments, whatever their number
            self.metrics.observe_answer(
                finished.route.value, label, finished.latency_s, prepared.generation, prepared.language
            )
        log.info(
            "answered",
            extra={
                "conversation_id": turn.conversation_id,
                "route": finished.route.value,
                "reason": prepared.decision.reason.value,
                "language": prepared.language,
                "latency_ms": finished.latency_s * 1000,
                **({"escalation": turn.central.get("escalation")} if turn.central else {}),
            },
        )

    def _observe_interrupted(self, turn: Turn, error: str, done: Future[Finished]) -> None:
        """After COMMIT of a turn cut short: logged, not counted as an answer."""
        failure = done.exception()
        extra = {"conversation_id": turn.conversation_id, "message_id": turn.message_id, "error": error}
        if failure is not None:
            log.error("an interrupted turn could not be recorded: %r", failure, extra=extra)
        else:
            log.info("interrupted", extra={**extra, "route": turn.prepared.decision.route.value})
