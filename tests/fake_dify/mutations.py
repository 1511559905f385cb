"""Named edits of central's state, as JSON: for the control API and for page-drift hooks.

In-process tests can call the `FakeDifyState` methods directly; these names exist so a test that
drives a live fake over HTTP (or a demo operator with curl) can do the same edits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.fake_dify.render import annotation, document, segment
from tests.fake_dify.state import FakeDifyState

Mutation = Callable[[FakeDifyState, dict[str, Any]], Any]


def _revoke_key(state: FakeDifyState, spec: dict[str, Any]) -> None:
    state.revoke_key(spec["token"])


def _set_app_api(state: FakeDifyState, spec: dict[str, Any]) -> None:
    state.set_app_api(spec["app_id"], bool(spec.get("enabled", False)))


def _set_dataset_api(state: FakeDifyState, spec: dict[str, Any]) -> None:
    state.knowledge.set_dataset_api(spec["dataset_id"], bool(spec.get("enabled", False)))


def _add_document(state: FakeDifyState, spec: dict[str, Any]) -> dict[str, Any]:
    return document(state, state.knowledge.add_document(spec["dataset_id"], spec["name"], spec.get("text", "")))


def _update_document(state: FakeDifyState, spec: dict[str, Any]) -> dict[str, Any]:
    row = state.knowledge.update_document_text(spec["document_id"], name=spec.get("name"), text=spec.get("text"))
    return document(state, row)


def _reindex_document(state: FakeDifyState, spec: dict[str, Any]) -> dict[str, Any]:
    return document(state, state.knowledge.reindex_document(spec["document_id"]))


def _delete_document(state: FakeDifyState, spec: dict[str, Any]) -> None:
    state.knowledge.delete_document(spec["document_id"])


def _set_document_status(state: FakeDifyState, spec: dict[str, Any]) -> None:
    state.knowledge.set_document_status(spec["dataset_id"], spec["document_ids"], spec["action"])


def _add_segment(state: FakeDifyState, spec: dict[str, Any]) -> dict[str, Any]:
    item = {k: spec[k] for k in ("content", "answer", "keywords") if k in spec}
    return segment(state, state.knowledge.add_segments(spec["document_id"], [item])[0])


def _update_segment(state: FakeDifyState, spec: dict[str, Any]) -> dict[str, Any]:
    changes = {k: spec[k] for k in ("content", "answer", "keywords", "enabled") if k in spec}
    return segment(state, state.knowledge.update_segment(spec["segment_id"], **changes))


def _delete_segment(state: FakeDifyState, spec: dict[str, Any]) -> None:
    state.knowledge.delete_segment(spec["segment_id"])


def _add_annotation(state: FakeDifyState, spec: dict[str, Any]) -> dict[str, Any]:
    return annotation(state.add_annotation(spec["app_id"], spec["question"], spec["answer"]))


def _update_annotation(state: FakeDifyState, spec: dict[str, Any]) -> dict[str, Any]:
    return annotation(state.update_annotation(spec["annotation_id"], spec["question"], spec["answer"]))


def _delete_annotation(state: FakeDifyState, spec: dict[str, Any]) -> None:
    state.delete_annotation(spec["annotation_id"])


def _advance_clock(state: FakeDifyState, spec: dict[str, Any]) -> dict[str, Any]:
    state.clock.advance(float(spec["seconds"]))
    return {"now": state.clock.ts()}


def _skew_clock(state: FakeDifyState, spec: dict[str, Any]) -> dict[str, Any]:
    state.clock.skew = float(spec["seconds"])
    return {"now": state.clock.ts()}


def _set_index_step(state: FakeDifyState, spec: dict[str, Any]) -> None:
    state.knowledge.index_step_seconds = float(spec["seconds"])


MUTATIONS: dict[str, Mutation] = {
    "revoke_key": _revoke_key,
    "set_app_api": _set_app_api,
    "set_dataset_api": _set_dataset_api,
    "add_document": _add_document,
    "update_document": _update_document,
    "reindex_document": _reindex_document,
    "delete_document": _delete_document,
    "set_document_status": _set_document_status,
    "add_segment": _add_segment,
    "update_segment": _update_segment,
    "delete_segment": _delete_segment,
    "add_annotation": _add_annotation,
    "update_annotation": _update_annotation,
    "delete_annotation": _delete_annotation,
    "advance_clock": _advance_clock,
    "skew_clock": _skew_clock,
    "set_index_step": _set_index_step,
}


def apply_mutation(state: FakeDifyState, spec: dict[str, Any]) -> Any:
    """Run `{"op": name, ...arguments}`; KeyError for an unknown op, id or missing argument."""
    op = spec.get("op")
    if op not in MUTATIONS:
        raise KeyError(f"unknown mutation {op!r}; known: {', '.join(sorted(MUTATIONS))}")
    with state.lock:
        return MUTATIONS[op](state, spec)
