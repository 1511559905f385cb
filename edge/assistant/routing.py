"""From a question to a decision: annotation, hot cache, one encoder pass, retrieval, policy, follow-up.

Everything here runs before the first byte of the answer, so whatever fails can still be an HTTP
error. The decision itself is `policy.decide`, a pure function; this module only gathers its inputs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from edge.assistant.bank import BankView
from edge.assistant.cache import AnswerCache
from edge.assistant.policy import (
    Decision,
    GroundingLimits,
    Question,
    Reason,
    Route,
    Thresholds,
    Variables,
    decide,
    verbatim_segment,
)
from edge.assistant.retrieval import Retriever
from edge.inference.head import HeadClassifier
from edge.inference.intent import IntentClassifier, IntentConfig, Understanding
from edge.language import LANGUAGES, detect

History = Callable[[], Awaitable[list[tuple[str, str]]]]
DEFAULT_MATCH = 0.9  # bundles calibrated before per-language thresholds: central's annotations needed 0.9
DEFAULT_PASSAGE = 0.5


@dataclass(frozen=True)
class RoutingConfig:
    thresholds: Mapping[str, Thresholds]  # per language
    limits: GroundingLimits = field(default_factory=GroundingLimits)
    llm_languages: Sequence[str] = ("en",)
    followup_turns: int = 2

    def for_language(self, language: str) -> Thresholds:
        return self.thresholds.get(language) or next(iter(self.thresholds.values()))


def thresholds_from(
    config: IntentConfig,
    *,
    intent: float | None = None,
    match: float | None = None,
    passage: float | None = None,
    llm_floor: float = 1.0,
) -> dict[str, Thresholds]:
    """Per-language thresholds: the settings' overrides, else the bundle's calibration, else defaults."""
    return {
        language: Thresholds(
            intent=intent if intent is not None else config.threshold_for(language),
            match=match if match is not None else config.match_thresholds.get(language, DEFAULT_MATCH),
            passage=passage if passage is not None else config.passage_thresholds.get(language, DEFAULT_PASSAGE),
            llm_floor=llm_floor,
        )
        for language in LANGUAGES
    }


@dataclass
class Routed:
    decision: Decision
    language: str
    understanding: Understanding | None = None


class Router:
    def __init__(
        self,
        classifier: HeadClassifier | IntentClassifier,
        retriever: Retriever | None,
        bank: BankView,
        cache: AnswerCache[Decision],
        variables: Variables,
        config: RoutingConfig,
    ) -> None:
        self.classifier = classifier
        self.retriever = retriever
        self.bank = bank
        self.cache = cache
        self.variables = variables
        self.config = config

    async def route(self, query: str, history: History) -> Routed:
        await self.bank.refresh()
        language = detect(query)
        annotated = self.bank.annotation(query)
        if annotated is not None:
            return Routed(verbatim_segment(annotated, 1.0, self.variables, language), language)
        cached = self.cache.get(query)
        if cached is not None:
            hit = Decision(Route.CACHE, cached.answer, cached.label, cached.sources, reason=cached.reason)
            return Routed(hit, language)
        decision, understanding = await self._decide(query)
        if decision.route is Route.CURATED:
            self.cache.put(query, decision)
        routed = Routed(decision, understanding.language, understanding)
        if self.config.followup_turns and decision.reason in (Reason.UNSURE, Reason.OUT_OF_SCOPE):
            followed = await self._follow_up(query, understanding.language, decision, await history())
            if followed is not None:
                return Routed(followed, understanding.language, understanding)
        return routed

    async def _follow_up(
        self, query: str, language: str, alone: Decision, turns: list[tuple[str, str]]
    ) -> Decision | None:
        """Read a question the box cannot place on its own with the questions before it ("how long is it
        free for?" after "is there parking?"): the last one first, then the last two.

        A question that alone looks off-topic ("what proof do I need?") may only continue the item just
        answered (the same answer again), so an off-topic question after a store question is never
        pulled onto that question's neighbours."""
        earlier = turns[-self.config.followup_turns :]
        answers = {answer for _, answer in earlier}
        for start in range(len(earlier) - 1, -1, -1):
            context = [past for past, _ in earlier[start:]]
            combined = " ".join([*context, query])
            if detect(combined) != language:
                continue
            in_context, _ = await self._decide(combined)
            if in_context.route is not Route.CURATED:
                continue
            if alone.route is Route.DECLINED and in_context.answer not in answers:
                continue
            return Decision(
                Route.CURATED, in_context.answer, in_context.label, in_context.sources, reason=Reason.CONTEXT
            )
        return None

    async def _decide(self, text: str) -> tuple[Decision, Understanding]:
        understanding = await asyncio.wrap_future(self.classifier.submit_understand(text))
        hits = []
        if self.retriever is not None:
            hits = await run_in_threadpool(self.retriever.search, text, understanding.vector)
        language = understanding.language
        question = Question(language, understanding.prediction, hits)
        decision = decide(
            question,
            self.bank.answers,
            self.variables,
            self.config.for_language(language),
            self.config.limits,
            self.config.llm_languages,
        )
        return decision, understanding
