"""Central is untrusted input (item 14): one malformed item is skipped and reported, its local copy is
kept, the rest of its listing is applied, and the other streams -- push included -- go on."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from edge.store.knowledge import ANNOTATIONS_DATASET
from tests.edge.sync.test_untrusted_listing import (
    ANNOTATIONS,
    DATASETS,
    DOCUMENTS,
    SEGMENTS,
    Box,
    box,
    first_pass,
    synced,
)

__all__ = ["box"]  # the fixture, imported for this module's tests

MALFORMED = [
    pytest.param(SEGMENTS, {"position": "third"}, (), id="segment-position-text"),
    pytest.param(SEGMENTS, {"updated_at": "yesterday"}, (), id="segment-updated_at-text"),
    pytest.param(SEGMENTS, {"enabled": "yes"}, (), id="segment-enabled-text"),
    pytest.param(SEGMENTS, {"keywords": "a,b"}, (), id="segment-keywords-text"),
    pytest.param(SEGMENTS, {}, ("id",), id="segment-no-id"),
    pytest.param(SEGMENTS, {"id": 7}, (), id="segment-numeric-id"),
    pytest.param(DOCUMENTS, {}, ("id",), id="document-no-id"),
    pytest.param(DOCUMENTS, {"position": "first"}, (), id="document-position-text"),
    pytest.param(DATASETS, {}, ("id",), id="dataset-no-id"),
    pytest.param(DATASETS, {"name": ["x"]}, (), id="dataset-name-list"),
]


@pytest.mark.parametrize(("path", "fields", "drop"), MALFORMED)
def test_a_malformed_item_is_skipped_and_reported(
    box: Box, path: str, fields: dict[str, Any], drop: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    held = first_pass(box)
    box.fake.faults.malformed_item(path, 0, fields=fields, drop=drop, times=None)
    with caplog.at_level(logging.WARNING, logger="edge.sync.pull"):
        result = box.run()
    assert result.outcomes == {"parameters": "ok", "annotations": "ok", "knowledge": "ok", "push": "ok"}
    assert synced(box) == held, "the malformed item's local copy is kept, the others are unchanged"
    row = box.stream("knowledge")
    assert row["details"]["skipped"] >= 1 and "skipped" in row["last_error"]
    assert any("skipped" in record.getMessage() for record in caplog.records)


def test_the_rest_of_a_listing_is_applied_around_a_malformed_item(box: Box) -> None:
    held = first_pass(box)
    segments = sorted(box.state.knowledge.segments.values(), key=lambda s: (s.document_id, s.position))
    edited = [s for s in segments if s.document_id == segments[0].document_id]
    with box.state.lock:  # central edits two segments of one document; one of them arrives malformed
        for segment in edited[:2]:
            box.state.knowledge.update_segment(segment.id, content=segment.content + " (updated)")
    bad_path = f"/v1/datasets/*/documents/{edited[0].document_id}/segments"
    box.fake.faults.malformed_item(bad_path, 0, fields={"position": "first"}, times=None)
    assert box.run().outcomes["knowledge"] == "ok"
    now = synced(box)
    assert now[edited[0].id] == held[edited[0].id], "the malformed one keeps its old local copy"
    assert now[edited[1].id] != held[edited[1].id], "the well-formed one is updated"
    assert box.stream("knowledge")["details"]["skipped"] == 1


@pytest.mark.parametrize(
    ("fields", "drop"), [({}, ("id",)), ({"question": {"en": "?"}}, ()), ({"answer": 42}, ())], ids=["no-id", "q", "a"]
)
def test_a_malformed_annotation_is_skipped_and_nothing_is_deleted(
    box: Box, fields: dict[str, Any], drop: tuple[str, ...]
) -> None:
    first_pass(box)
    before = box.knowledge.fingerprints(ANNOTATIONS_DATASET)
    assert len(before) == 3
    box.fake.faults.malformed_item(ANNOTATIONS, 0, fields=fields, drop=drop, times=None)
    result = box.run()
    assert result.outcomes["annotations"] == "ok" and result.outcomes["push"] == "ok"
    assert box.knowledge.fingerprints(ANNOTATIONS_DATASET) == before
    assert box.stream("annotations")["details"]["skipped"] == 1
