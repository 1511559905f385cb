"""Central's answers checked against the contract before the sync agent believes them.

Central is untrusted input: a proxy, an older or newer Dify, or a bug can answer 200 with a body that
is not what `specs/dify-api.md` and Dify's OpenAPI document promise. A listing read as empty wipes
local knowledge, a field of the wrong type raises deep inside a pull, so every body is checked here
first. Only the fields the agent reads are checked, with the types the OpenAPI document gives them
(`tests/edge/sync/test_untrusted_spec.py` holds these tables to the document); unknown fields are
ignored, as Dify keeps adding them. A missing optional field, or a null one, reads as absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


class Invalid(ValueError):
    """A body or an item that breaks the contract; the message names every problem found."""


@dataclass(frozen=True)
class Field:
    """One field as the OpenAPI document types it; `items` types an array's elements."""

    type: str
    items: str | None = None
    required: bool = False


ID = Field("string", required=True)
# OpenAPI component → the fields the agent reads (the test compares these with the document).
DATASET = {"id": ID, "name": Field("string")}
DOCUMENT = {
    "id": ID,
    "name": Field("string"),
    "position": Field("integer"),
    "indexing_status": Field("string"),
    "enabled": Field("boolean"),
    "archived": Field("boolean"),
}
SEGMENT = {
    "id": ID,
    "position": Field("integer"),
    "content": Field("string"),
    "answer": Field("string"),
    "keywords": Field("array", items="string"),
    "index_node_hash": Field("string"),
    "enabled": Field("boolean"),
    "status": Field("string"),
    "updated_at": Field("number"),
}
ANNOTATION = {"id": ID, "question": Field("string"), "answer": Field("string")}
PARAMETERS = {
    "opening_statement": Field("string"),
    "suggested_questions": Field("array", items="string"),
    "suggested_questions_after_answer": Field("object"),
    "speech_to_text": Field("object"),
    "text_to_speech": Field("object"),
    "retriever_resource": Field("object"),
    "annotation_reply": Field("object"),
    "more_like_this": Field("object"),
    "sensitive_word_avoidance": Field("object"),
    "user_input_form": Field("array", items="object"),
    "file_upload": Field("object"),
    "system_parameters": Field("object"),
}
SCHEMAS = {
    "Dataset": DATASET,
    "Document": DOCUMENT,
    "Segment": SEGMENT,
    "AnnotationItem": ANNOTATION,
    "AppParametersResponse": PARAMETERS,
}


def _is(value: Any, json_type: str) -> bool:
    if isinstance(value, bool) and json_type in ("integer", "number"):
        return False  # JSON true is not 1
    return isinstance(value, _JSON_TYPES[json_type])


def _a(json_type: str) -> str:
    return ("an " if json_type[0] in "aeiou" else "a ") + json_type


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def problems(value: Any, fields: dict[str, Field]) -> list[str]:
    """What is wrong with `value` as an object with `fields`; empty when it is fine."""
    if not isinstance(value, dict):
        return [f"{_short(value)} is not an object"]
    found = []
    for name, spec in fields.items():
        item = value.get(name)
        if item is None:
            if spec.required:
                found.append(f"`{name}` is missing")
        elif not _is(item, spec.type):
            found.append(f"`{name}` {_short(item)} is not {_a(spec.type)}")
        elif spec.items is not None and not all(_is(element, spec.items) for element in item):
            found.append(f"`{name}` holds something that is not {_a(spec.items)}")
        elif spec.required and spec.type == "string" and not item:
            found.append(f"`{name}` is empty")
    return found


def check(value: Any, fields: dict[str, Field], what: str) -> dict[str, Any]:
    """`value` if it is an object with `fields`, else `Invalid` naming every problem."""
    found = problems(value, fields)
    if found:
        raise Invalid(f"{what}: " + "; ".join(found))
    return value


@dataclass(frozen=True)
class Page:
    """One page of a page/limit listing (spec §1.5): its items, unchecked, and `total` when given."""

    items: list[Any]
    total: int | None


def listing_page(body: Any) -> Page:
    """`{data: [...], total, ...}`. No `data`, or one that is not a list, is refused: read as an empty
    page it would tell the agent that central holds nothing. A missing `total` is tolerated (the caller
    bounds the paging), one of the wrong type is not."""
    if not isinstance(body, dict):
        raise Invalid(f"the page is {_short(body)}, not an object")
    data = body.get("data")
    if not isinstance(data, list):
        raise Invalid("the page has no `data` list" if data is None else f"`data` {_short(data)} is not a list")
    total = body.get("total")
    if total is not None and (not _is(total, "integer") or total < 0):
        raise Invalid(f"`total` {_short(total)} is not a count")
    return Page(data, total)


def item_id(item: Any) -> str | None:
    """The item's id if it has a usable one (a non-empty string), else None."""
    value = item.get("id") if isinstance(item, dict) else None
    return value if isinstance(value, str) and value else None
