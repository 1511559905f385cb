"""Live escalation: whether a question goes to central, and the outcome of asking it (issue #13).

The pipeline asks `attempt()` once the local decision is known; a question goes to central only when the
setting is on, the local outcome is one that escalates, the shopper did not press the staff button,
central was reachable recently and the circuit breaker lets it through. `stream()` relays central's
text and settles the breaker, the reachability record and the metrics, whatever the ending.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from edge.assistant.policy import Decision, Reason, Route
from edge.central.breaker import Breaker
from edge.central.chat import CentralChat, CentralFailed, ChatAnswer, ChatQuestion
from edge.central.reachability import Reachability
from edge.metrics import Metrics
from edge.settings import Settings
from edge.store.conversations import ConversationStore

log = logging.getLogger(__name__)
ESCALATING_ROUTES = {
    "handoff": {Route.HANDOFF},
    "llm": {Route.LLM},
    "both": {Route.HANDOFF, Route.LLM},
    # also the questions the box declines as outside what it knows: near-domain ones (lockers, smoking,
    # a product's price) are often in central's knowledge; an off-topic one keeps its decline (see pipeline)
    "all": {Route.HANDOFF, Route.LLM, Route.DECLINED},
}
ABSTENTIONS = frozenset({Route.HANDOFF, Route.DECLINED})  # kept unless central's answer cites its knowledge
HISTORY_CHARS = 2000  # the earlier turns sent with a question that opens a central conversation


@dataclass
class Attempt:
    """One question on its way to central."""

    central_conversation_id: str | None  # set for a follow-up in a conversation central already holds
    turns: list[tuple[str, str]]  # the local conversation so far (central's context, and the LLM's on fallback)
    answer: ChatAnswer = field(default_factory=ChatAnswer)
    failure: CentralFailed | None = None

    def record(self) -> dict[str, Any]:
        """What the turn stores about central (`ConversationStore.record_turn(central=...)`)."""
        if self.failure is not None:
            return {"escalation": f"fallback:{self.failure.cause}"}
        first_byte = self.answer.first_byte_s
        return {
            "escalation": "answered",
            "central_message_id": self.answer.message_id,
            "central_conversation_id": self.answer.conversation_id,
            "central_first_byte_ms": first_byte * 1000.0 if first_byte is not None else None,
        }


class Escalator:
    def __init__(
        self,
        settings: Settings,
        chat: CentralChat,
        breaker: Breaker,
        reachability: Reachability,
        conversations: ConversationStore,
        metrics: Metrics | None,
    ) -> None:
        self.settings = settings
        self.chat = chat
        self.breaker = breaker
        self.reachability = reachability
        self.conversations = conversations
        self.metrics = metrics

    def escalates(self, decision: Decision) -> bool:
        return decision.reason is not Reason.BUTTON and decision.route in ESCALATING_ROUTES[self.settings.escalate_on]

    async def attempt(self, conversation_id: str, new: bool, turns: list[tuple[str, str]]) -> Attempt | None:
        """An attempt if central may be asked now; None (counted) when it is not reachable or the breaker is
        open. Both checks are cheap, so an unreachable central costs the shopper no latency."""
        if not await run_in_threadpool(self.reachability.may_ask):
            self._skipped("unreachable")
            return None
        if not self.breaker.allow():
            self._skipped("circuit_open")
            return None
        central_id = None if new else await run_in_threadpool(self.conversations.central_conversation, conversation_id)
        return Attempt(central_id, turns)

    async def stream(self, attempt: Attempt, query: str, user: str, language: str) -> AsyncIterator[str]:
        """Central's answer, chunk by chunk. Raises `CentralFailed` (recorded on `attempt`) on any failure."""
        settled = False
        try:
            try:
                async with aclosing(self._relay(attempt, query, user, language)) as texts:
                    async for text in texts:
                        yield text
            except CentralFailed as exc:
                if not (exc.detail == "404" and attempt.central_conversation_id and attempt.answer.message_id is None):
                    raise
                # Central no longer has the conversation (deleted, or its retention): open a new one, once.
                attempt.central_conversation_id = None
                async with aclosing(self._relay(attempt, query, user, language)) as texts:
                    async for text in texts:
                        yield text
        except CentralFailed as exc:
            attempt.failure, settled = exc, True
            self.breaker.failure()
            self._count("fallback", exc.cause)
            log.warning(
                "central did not answer; answering locally",
                extra={"cause": exc.cause, "detail": exc.detail, "breaker": self.breaker.state},
            )
            raise
        except BaseException:  # the shopper left: neither a success nor central's failure
            self.breaker.release()
            settled = True
            raise
        finally:
            self._observe_first_byte(attempt)
            if not settled:
                self.breaker.success()
                self.reachability.succeeded()
                self._count("answered", None)

    def _relay(self, attempt: Attempt, query: str, user: str, language: str) -> AsyncIterator[str]:
        question = ChatQuestion(
            query=query,
            user=self.central_user(user),
            conversation_id=attempt.central_conversation_id,
            inputs=self._inputs(attempt, language),
        )
        return self.chat.stream(question, attempt.answer)

    def central_user(self, user: str) -> str:
        """Central's end user for a local one: stable, so follow-ups find their central conversation."""
        return f"kiosk-edge:{self.settings.store_id}:{self.settings.kiosk_id}:{user}"[:255]

    def _inputs(self, attempt: Attempt, language: str) -> dict[str, Any]:
        """The shopper's language, and for a question opening a central conversation the local turns before
        it (central's app may declare `kiosk_language` and `kiosk_history`; Dify ignores undeclared inputs)."""
        inputs: dict[str, Any] = {"kiosk_language": language}
        if attempt.central_conversation_id is None and attempt.turns:
            history = "\n".join(f"Q: {question}\nA: {answer}" for question, answer in attempt.turns)
            inputs["kiosk_history"] = history[-HISTORY_CHARS:]
        return inputs

    def _count(self, outcome: str, cause: str | None) -> None:
        if self.metrics is None:
            return
        self.metrics.central_escalations.labels(outcome=outcome).inc()
        if cause is not None:
            self.metrics.central_fallbacks.labels(cause=cause).inc()

    def _skipped(self, why: str) -> None:
        if self.metrics is not None:
            self.metrics.central_skipped.labels(why=why).inc()

    def _observe_first_byte(self, attempt: Attempt) -> None:
        if self.metrics is not None and attempt.answer.first_byte_s is not None:
            self.metrics.central_first_byte.observe(attempt.answer.first_byte_s)
