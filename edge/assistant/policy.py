"""Which route answers a question: a pure function over plain data, cheapest first.

1. one of central's annotations or Q&A segments matching the question closely → its answer, verbatim;
2. a confident intent of the bank → its curated answer, verbatim, in the shopper's language;
3. a question plainly outside a store assistant's work → declined politely;
4. relevant passages (and, if allowed, likely intents) in a language the local LLM writes → grounded
   generation, checked for faithfulness by the pipeline;
5. otherwise → a hand-off to staff.
A verbatim answer is only given in the shopper's language, and only when every slot it uses has a
value in that language: a wrong or half-filled answer costs more than calling a colleague.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edge.assistant.retrieval import Hit
from edge.assistant.sources import Source, curated_source, knowledge_source
from edge.inference.intent import IntentPrediction
from edge.language import Localized, detect, pick
from edge.store.knowledge import ANNOTATIONS_DATASET

_SLOT = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")

# The bank of curated answers: label → language → answer template (with `{{Slot}}`s).
Bank = Mapping[str, Mapping[str, str]]
Variables = Mapping[str, Localized]


class Route(StrEnum):
    CACHE = "cache"
    CURATED = "curated"
    LLM = "llm"
    HANDOFF = "handoff"
    DECLINED = "declined"
    CENTRAL = "central"  # escalated: central Dify answered live (issue #13)


class Reason(StrEnum):
    """Why a route was taken: recorded with the turn, so abstentions can be counted and explained."""

    BUTTON = "button"  # the shopper asked for staff
    ANNOTATION = "annotation"
    MATCH = "match"  # a Q&A segment matched
    INTENT = "intent"
    CONTEXT = "context"  # placed by reading the earlier questions with it
    PASSAGES = "passages"
    OUT_OF_SCOPE = "out_of_scope"
    UNSURE = "unsure"
    NO_TRANSLATION = "no_translation"  # the answer exists, not in the shopper's language
    MISSING_VARIABLE = "missing_variable"  # the answer needs a store setting that has no value
    UNFAITHFUL = "unfaithful"  # the LLM stated a fact its grounding does not hold
    NO_LLM = "no_llm"


@dataclass(frozen=True)
class Decision:
    route: Route
    answer: str | None = None  # set for verbatim answers
    label: str | None = None  # the bank item (intent label, or `segment:<id>`) a verbatim answer came from
    sources: list[Source] = field(default_factory=list)  # what grounds or backs the answer, best first
    annotation_id: str | None = None  # set when one of central's annotations answered
    reason: Reason = Reason.UNSURE


@dataclass(frozen=True)
class Thresholds:
    """Calibrated per language by `quantize` (the bundle's report); settings may override them."""

    intent: float = 0.5  # least intent confidence for a verbatim curated answer
    match: float = 0.9  # least cosine for a Q&A segment or annotation to answer verbatim
    passage: float = 0.8  # least cosine for a passage to ground the LLM
    llm_floor: float = 1.0  # least intent probability for its answer to ground the LLM


@dataclass(frozen=True)
class GroundingLimits:
    """How much text grounds one answer: every character is prompt the LLM must read before its first token."""

    max_chars_per_source: int = 600
    max_chars: int = 1200


@dataclass(frozen=True)
class Question:
    """Everything the decision needs to know about one question."""

    language: str
    prediction: IntentPrediction | None
    hits: Sequence[Hit] = ()


def fill_slots(text: str, variables: Variables, language: str) -> str | None:
    """Replace `{{Store Name}}`-style slots with the store's values in `language`; None when a slot has
    none (an answer must never show a bare slot name or an English value inside a Chinese sentence)."""
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        setting = variables.get(match.group(1))
        found = pick(setting, language) if setting is not None else None
        if not found:
            missing = True
            return ""
        return found

    filled = _SLOT.sub(value, text)
    return None if missing else filled


def slots(text: str) -> set[str]:
    return {match.group(1) for match in _SLOT.finditer(text)}


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary, marked with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(None, 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,;:") + " …"


def segment_text(segment: Mapping[str, Any]) -> str:
    answer = segment.get("answer")
    return f"Q: {segment['content']}\nA: {answer}" if answer else str(segment["content"])


def segment_language(segment: Mapping[str, Any]) -> str:
    return detect(f"{segment.get('content') or ''} {segment.get('answer') or ''}")


def verbatim_segment(segment: Mapping[str, Any], score: float, variables: Variables, language: str) -> Decision:
    """A Q&A segment or annotation answers, verbatim but for store slots, when it speaks the shopper's language."""
    is_annotation = segment.get("dataset_id") == ANNOTATIONS_DATASET
    reason = Reason.ANNOTATION if is_annotation else Reason.MATCH
    if segment_language(segment) != language:
        return Decision(Route.HANDOFF, reason=Reason.NO_TRANSLATION)
    answer = fill_slots(str(segment["answer"]), variables, language)
    if answer is None:
        return Decision(Route.HANDOFF, reason=Reason.MISSING_VARIABLE)
    return Decision(
        Route.CURATED,
        answer=answer,
        label=f"segment:{segment['id']}",
        sources=[knowledge_source(dict(segment), answer, score)],
        annotation_id=str(segment["id"]) if is_annotation else None,
        reason=reason,
    )


def verbatim_intent(label: str, confidence: float, bank: Bank, variables: Variables, language: str) -> Decision:
    template = bank[label].get(language)
    if template is None:
        return Decision(Route.HANDOFF, label=label, reason=Reason.NO_TRANSLATION)
    answer = fill_slots(template, variables, language)
    if answer is None:
        return Decision(Route.HANDOFF, label=label, reason=Reason.MISSING_VARIABLE)
    return Decision(
        Route.CURATED,
        answer=answer,
        label=label,
        sources=[curated_source(label, answer, confidence)],
        reason=Reason.INTENT,
    )


def decide(
    question: Question,
    bank: Bank,
    variables: Variables,
    thresholds: Thresholds,
    limits: GroundingLimits | None = None,
    llm_languages: Sequence[str] = ("en",),
) -> Decision:
    language, prediction = question.language, question.prediction
    qa_hits = [hit for hit in question.hits if hit.segment.get("answer")]
    best_qa = max(qa_hits, key=lambda hit: hit.score, default=None)
    if best_qa is not None and best_qa.score >= thresholds.match:
        return verbatim_segment(best_qa.segment, best_qa.score, variables, language)
    confident = prediction is not None and prediction.confidence >= thresholds.intent
    if confident and prediction is not None and not prediction.abstains and prediction.label in bank:
        return verbatim_intent(prediction.label, prediction.confidence, bank, variables, language)
    if confident and prediction is not None and prediction.abstains:
        return Decision(Route.DECLINED, reason=Reason.OUT_OF_SCOPE)
    if language not in llm_languages:
        return Decision(Route.HANDOFF, reason=Reason.UNSURE)
    return _grounded(question, bank, variables, thresholds, limits or GroundingLimits())


def _grounded(
    question: Question, bank: Bank, variables: Variables, thresholds: Thresholds, limits: GroundingLimits
) -> Decision:
    """Passages that match this very question first, then the answers of likely intents."""
    language, prediction = question.language, question.prediction
    candidates: list[Source] = []
    for hit in question.hits:
        if hit.score < thresholds.passage or segment_language(hit.segment) != language:
            continue
        text = fill_slots(segment_text(hit.segment), variables, language)
        if text is not None:
            candidates.append(knowledge_source(dict(hit.segment), clip(text, limits.max_chars_per_source), hit.score))
    if prediction is not None:
        for label, probability in prediction.top_k:
            template = bank.get(label, {}).get(language)
            if template is None or probability < thresholds.llm_floor:
                continue
            text = fill_slots(template, variables, language)
            if text is not None:
                candidates.append(curated_source(label, clip(text, limits.max_chars_per_source), probability))
    sources: list[Source] = []
    used = 0
    for source in candidates:
        if sources and used + len(source["content"]) > limits.max_chars:
            break
        sources.append(source)
        used += len(source["content"])
    if sources:
        return Decision(Route.LLM, sources=sources, reason=Reason.PASSAGES)
    return Decision(Route.HANDOFF, reason=Reason.UNSURE)
