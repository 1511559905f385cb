"""Central's state as JSON and back: to look at after a failed end-to-end test, or to start a demo from."""

from __future__ import annotations

import dataclasses
from typing import Any

from tests.fake_dify.knowledge import Dataset, Document, Segment
from tests.fake_dify.state import (
    Annotation,
    ApiKey,
    App,
    Clock,
    Conversation,
    EndUser,
    FakeDifyState,
    Message,
    WorkflowRun,
)

TABLES: dict[str, type] = {
    "keys": ApiKey,
    "apps": App,
    "end_users": EndUser,
    "annotations": Annotation,
    "conversations": Conversation,
    "messages": Message,
    "workflow_runs": WorkflowRun,
}
KNOWLEDGE_TABLES: dict[str, type] = {"datasets": Dataset, "documents": Document, "segments": Segment}


def _row(row: Any) -> dict[str, Any]:
    data = dataclasses.asdict(row)
    if isinstance(row, ApiKey) and row.dataset_ids is not None:
        data["dataset_ids"] = sorted(row.dataset_ids)
    return data


def snapshot(state: FakeDifyState) -> dict[str, Any]:
    """Every row, plus the clock and the owner; keys included (this is a fake)."""
    with state.lock:
        data: dict[str, Any] = {name: [_row(r) for r in getattr(state, name).values()] for name in TABLES}
        data |= {name: [_row(r) for r in getattr(state.knowledge, name).values()] for name in KNOWLEDGE_TABLES}
        data["clock"] = dataclasses.asdict(state.clock)
        data["owner"] = {"id": state.owner_id, "name": state.owner_name}
        data["server_version"] = state.server_version
        data["seq"] = state._seq
        return data


def restore(data: dict[str, Any], *, seed: int | None = None) -> FakeDifyState:
    """A state holding the snapshot's rows; new ids come from `seed` (they cannot collide with UUIDs)."""
    state = FakeDifyState(seed=seed, clock=Clock(**data["clock"]), server_version=data["server_version"])
    state.owner_id, state.owner_name = data["owner"]["id"], data["owner"]["name"]
    state._seq = data["seq"]
    for name, cls in TABLES.items():
        table = getattr(state, name)
        for row in data[name]:
            item = cls(**row)
            if isinstance(item, ApiKey):
                item.dataset_ids = None if item.dataset_ids is None else frozenset(item.dataset_ids)
                table[item.token] = item
            else:
                table[item.id] = item
    for name, cls in KNOWLEDGE_TABLES.items():
        getattr(state.knowledge, name).update({row["id"]: cls(**row) for row in data[name]})
    return state
