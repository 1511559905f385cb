"""Which route answers a question, in order of cost: curated answer, grounded LLM, or hand-off."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edge.assistant.retrieval import Hit
from edge.assistant.sources import Source, curated_source, knowledge_source
from edge.inference.intent import IntentPrediction
from edge.store.knowledge import ANNOTATIONS_DATASET

_SLOT = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")


class Route(StrEnum):
    CACHE = "cache"
    CURATED = "curated"
    LLM = "llm"
    HANDOFF = "handoff"


@dataclass(frozen=True)
class Decision:
    route: Route
    answer: str | None = None  # set for curated answers
    sources: list[Source] = field(default_factory=list)  # what grounds the LLM, best first
    annotation_id: str | None = None  # set when one of central's annotations answered


@dataclass(frozen=True)
class GroundingLimits:
    """How much text grounds one answer: every character is prompt the LLM must read before its first token."""

    llm_floor: float = 0.3
    max_chars_per_source: int = 600
    max_chars: int = 1200
    annotation_min_score: float = 0.9


def fill_slots(text: str, variables: dict[str, str]) -> str:
    """Replace `{{Store Name}}`-style slots with store settings; an unknown slot reads as its bare name
    ("{{Order History}}" → "Order History"), which is what the Bitext templates name anyway."""
    return _SLOT.sub(lambda m: variables.get(m.group(1), m.group(1)), text)


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary, marked with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(None, 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,;:") + " …"


def segment_text(segment: dict[str, object]) -> str:
    answer = segment.get("answer")
    return f"Q: {segment['content']}\nA: {answer}" if answer else str(segment["content"])


def answers_from_curated(prediction: IntentPrediction, curated: dict[str, str]) -> bool:
    """A confident intent with a curated answer: the cheapest route, no retrieval needed."""
    return not prediction.out_of_scope and prediction.label in curated


def annotation_decision(segment: dict[str, Any], score: float, variables: dict[str, str]) -> Decision:
    """Central's curated question matched: its answer, verbatim but for store slots, without the LLM."""
    answer = fill_slots(str(segment["answer"]), variables)
    return Decision(
        Route.CURATED,
        answer=answer,
        sources=[knowledge_source(segment, answer, score)],
        annotation_id=str(segment["id"]),
    )


def decide(
    prediction: IntentPrediction,
    curated: dict[str, str],
    variables: dict[str, str],
    limits: GroundingLimits,
    hits: Sequence[Hit] = (),
) -> Decision:
    """Confident intent with a curated answer → curated; relevant knowledge or likely intents → LLM
    grounded on them (knowledge first: it matched this very question); nothing relevant → hand-off."""
    if answers_from_curated(prediction, curated):
        return Decision(Route.CURATED, answer=fill_slots(curated[prediction.label], variables))
    if hits and hits[0].segment["dataset_id"] == ANNOTATIONS_DATASET and hits[0].score >= limits.annotation_min_score:
        return annotation_decision(hits[0].segment, hits[0].score, variables)
    candidates = [
        knowledge_source(
            hit.segment, clip(fill_slots(segment_text(hit.segment), variables), limits.max_chars_per_source), hit.score
        )
        for hit in hits
    ] + [
        curated_source(label, clip(fill_slots(curated[label], variables), limits.max_chars_per_source), probability)
        for label, probability in prediction.top_k
        if label in curated and probability >= limits.llm_floor
    ]
    sources, used = [], 0
    for source in candidates:
        if sources and used + len(source["content"]) > limits.max_chars:
            break
        sources.append(source)
        used += len(source["content"])
    if sources:
        return Decision(Route.LLM, sources=sources)
    return Decision(Route.HANDOFF)
