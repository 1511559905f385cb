"""Which route answers a question, in order of cost: curated answer, grounded LLM, or hand-off."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from edge.inference.intent import IntentPrediction

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
    grounding: list[tuple[str, str]] = field(default_factory=list)  # (label, curated text) for the LLM


def fill_slots(text: str, variables: dict[str, str]) -> str:
    """Replace `{{Store Name}}`-style slots with store settings; unknown slots are left visible."""
    return _SLOT.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def decide(
    prediction: IntentPrediction, curated: dict[str, str], variables: dict[str, str], llm_floor: float
) -> Decision:
    """Confident intent with a curated answer → curated; somewhat relevant → LLM grounded on the
    closest curated answers; nothing relevant → hand-off."""
    if not prediction.out_of_scope and prediction.label in curated:
        return Decision(Route.CURATED, answer=fill_slots(curated[prediction.label], variables))
    grounding = [
        (label, fill_slots(curated[label], variables))
        for label, probability in prediction.top_k
        if label in curated and probability >= llm_floor
    ]
    if grounding:
        return Decision(Route.LLM, grounding=grounding)
    return Decision(Route.HANDOFF)
