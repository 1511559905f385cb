"""Central is untrusted input (items 13 and 15): a malformed, empty or endless listing never wipes local
knowledge, a dataset or document is deleted only once central confirms it is gone, paging is bounded.

Every test runs the real agent against the fake central (in process) and a real SQLite file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from edge.settings import Settings
from edge.store.db import open_database
from edge.store.knowledge import KnowledgeStore
from edge.store.sync_state import SyncState
from edge.sync.agent import PassResult, SyncAgent
from edge.sync.client import DifyClient
from tests.edge.sync.test_pull import CountingEmbedder
from tests.fake_dify import FakeDify, FakeDifyState, FakeDifyTransport, create_fake_dify
from tests.fake_dify.demo import Central, seed_demo

DATASETS = "/v1/datasets"
DOCUMENTS = "/v1/datasets/*/documents"
SEGMENTS = "/v1/datasets/*/documents/*/segments"
ANNOTATIONS = "/v1/apps/annotations"


@dataclass
class Box:
    """A box's sync agent (real SQLite file) wired to an in-process fake central."""

    agent: SyncAgent
    fake: FakeDify
    central: Central
    db: sqlite_utils.Database
    client: DifyClient

    @property
    def state(self) -> FakeDifyState:
        return self.fake.state

    @property
    def knowledge(self) -> KnowledgeStore:
        return self.agent.knowledge

    def run(self) -> PassResult:
        return self.agent.run_once()

    def stream(self, name: str) -> dict[str, Any]:
        row = SyncState(self.db).get(name)
        assert row is not None, f"stream {name} never ran"
        return row


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    state = FakeDifyState(seed=3)
    central = seed_demo(state)
    fake = create_fake_dify(state)
    transport = FakeDifyTransport(fake)
    settings = Settings(
        data_dir=tmp_path / "data",
        central_url="http://dify.test/v1",
        central_app_key=central.chat_key,
        central_dataset_key=central.dataset_key,
        central_ingest_key=central.workflow_key,
        store_id="berlin-3",
        kiosk_id="k2",
        sync_idle_s=0,
        sync_timeout_s=5,
    )
    db = open_database(settings.database_path)
    client = DifyClient(settings.central_url, timeout_s=5, transport=transport)
    embedder = CountingEmbedder()
    agent = SyncAgent(settings, db, client, embedder_factory=lambda: (embedder, "test-embedder"))
    yield Box(agent, fake, central, db, client)
    client.close()
    transport.close()
    db.conn.close()


def synced(box: Box) -> dict[str, tuple[int, str, bool]]:
    """Every central segment the box holds, by id."""
    return box.knowledge.fingerprints(box.central.dataset_id)


def first_pass(box: Box) -> dict[str, tuple[int, str, bool]]:
    result = box.run()
    assert result.online and set(result.outcomes.values()) == {"ok"}, result
    held = synced(box)
    assert len(held) == 8  # the demo's three documents
    return held


# --- item 13: an empty or malformed listing never wipes local knowledge --------------------------


@pytest.mark.parametrize(
    "how",
    [
        {"drop": ["data"]},  # a 200 without `data`
        {"set": {"data": None}},
        {"set": {"data": {"id": "x"}}},  # an object where the list belongs
        {"body": ["not", "an", "object"]},
        {"set": {"total": "many"}},
    ],
    ids=["no-data", "null-data", "object-data", "list-body", "text-total"],
)
@pytest.mark.parametrize("path", [DATASETS, DOCUMENTS, SEGMENTS])
def test_a_malformed_listing_wipes_nothing_and_the_pass_goes_on(box: Box, path: str, how: dict[str, Any]) -> None:
    held = first_pass(box)
    version = box.knowledge.version()
    box.fake.faults.reshape_body(path, how, times=None)
    for _ in range(2):  # two equal reads used to make an empty listing look stable
        result = box.run()
        assert result.online and result.outcomes["knowledge"] == "failed"
        assert result.outcomes["push"] == "ok" and result.outcomes["annotations"] == "ok"
    assert synced(box) == held and box.knowledge.version() == version
    assert "does not follow the spec" in box.stream("knowledge")["last_error"]


def test_an_empty_listing_deletes_only_what_central_confirms_gone(box: Box) -> None:
    held = first_pass(box)
    empty = {"set": {"data": [], "total": 0, "has_more": False}}
    rule = box.fake.faults.reshape_body(DATASETS, empty, times=None)
    assert box.run().outcomes["knowledge"] == "ok"
    assert synced(box) == held, "GET /datasets/{id} still answers: the listing was wrong, nothing is deleted"
    assert any(e.path == f"/v1/datasets/{box.central.dataset_id}" for e in box.fake.journal.entries())
    assert box.stream("knowledge")["details"]["kept_unlisted"] == 1
    with box.state.lock:  # now central really deletes it
        del box.state.knowledge.datasets[box.central.dataset_id]
    assert box.run().outcomes["knowledge"] == "ok"
    assert synced(box) == {}
    box.fake.faults.remove(rule.id)


def test_an_empty_document_listing_deletes_only_confirmed_documents(box: Box) -> None:
    held = first_pass(box)
    empty = {"set": {"data": [], "total": 0, "has_more": False}}
    rule = box.fake.faults.reshape_body(DOCUMENTS, empty, times=None)
    assert box.run().outcomes["knowledge"] == "ok"
    assert synced(box) == held, "each document still answers GET: nothing is deleted"
    box.fake.faults.remove(rule.id)
    doomed = next(d for d in box.state.knowledge.documents.values() if d.name == "Payments")
    with box.state.lock:
        box.state.knowledge.delete_document(doomed.id)
    assert box.run().outcomes["knowledge"] == "ok"
    assert len(synced(box)) == 6  # the two payment segments went, once central was asked


def test_a_dataset_no_longer_configured_goes_without_asking(box: Box) -> None:
    first_pass(box)
    box.agent.settings = box.agent.settings.model_copy(update={"central_dataset_ids": ["someone-else"]})
    assert box.run().outcomes["knowledge"] == "ok"
    assert synced(box) == {}


# --- item 15: paging is bounded -----------------------------------------------------------------


@pytest.mark.parametrize("path", [DATASETS, SEGMENTS, ANNOTATIONS])
def test_an_endless_listing_is_cut_off_and_wipes_nothing(box: Box, path: str) -> None:
    held = first_pass(box)
    box.client.max_pages = 5
    box.fake.faults.endless(path)
    box.fake.faults.error(path, 500, skip=50, times=None)  # the old agent's only way out
    box.fake.journal.clear()
    result = box.run()
    stream = "annotations" if path == ANNOTATIONS else "knowledge"
    assert result.outcomes[stream] == "failed" and result.outcomes["push"] == "ok"
    assert "pages" in box.stream(stream)["last_error"]
    listed = [e for e in box.fake.journal.entries() if e.method == "GET" and e.query.get("page")]
    assert max(int(e.query["page"][0]) for e in listed) <= 5
    assert synced(box) == held


def test_a_dataset_no_longer_shared_goes_but_a_rate_limit_proves_nothing(box: Box) -> None:
    held = first_pass(box)
    box.fake.faults.reshape_body(DATASETS, {"set": {"data": [], "total": 0, "has_more": False}}, times=None)
    detail = f"/v1/datasets/{box.central.dataset_id}"
    box.fake.faults.knowledge_rate_limit(detail)
    assert box.run().outcomes["knowledge"] == "ok"
    assert synced(box) == held, "Cloud's rate limit is a 403 too, and says nothing about the dataset"
    box.fake.faults.error(detail, 403, code="forbidden", message="Dataset api access is not enabled.")
    assert box.run().outcomes["knowledge"] == "ok"
    assert synced(box) == {}, "central no longer shares it (spec §8(b)1)"
