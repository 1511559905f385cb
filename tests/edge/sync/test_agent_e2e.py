"""The sync agent against the fake Dify on real loopback HTTP: pull, push, faults, and `edge sync` as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.settings import Settings
from edge.store.conversations import ConversationStore
from edge.store.db import open_database
from edge.store.knowledge import ANNOTATIONS_DATASET, KnowledgeStore
from edge.store.outbox import Outbox
from edge.store.parameters import CentralParameters
from edge.sync.agent import SyncAgent
from edge.sync.client import DifyClient
from tests.edge.sync.test_pull import CountingEmbedder
from tests.fake_dify.demo import Central, seed_demo
from tests.fake_dify.live import LiveFakeDify
from tests.fake_dify.state import FakeDifyState

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def central() -> Iterator[tuple[LiveFakeDify, Central]]:
    state = FakeDifyState(seed=7)
    ids = seed_demo(state)
    with LiveFakeDify(state) as fake:
        yield fake, ids


def agent_settings(fake: LiveFakeDify, ids: Central, data_dir: Path, **overrides: object) -> Settings:
    values: dict = dict(
        data_dir=data_dir,
        central_url=fake.api_url,
        central_app_key=ids.chat_key,
        central_dataset_key=ids.dataset_key,
        central_ingest_key=ids.workflow_key,
        store_id="berlin-3",
        kiosk_id="k2",
        sync_idle_s=0,
        sync_timeout_s=5,
        sync_probe_timeout_s=2,
    )
    values.update(overrides)
    return Settings(**values)


def make_agent(settings: Settings) -> tuple[SyncAgent, object]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(settings.database_path)
    embedder = CountingEmbedder()
    agent = SyncAgent(
        settings,
        db,
        DifyClient(settings.central_url, timeout_s=settings.sync_timeout_s),
        embedder_factory=lambda: (embedder, "test-embedder"),
    )
    return agent, db


def add_turns(db, n: int) -> list[str]:
    store = ConversationStore(db, clock=lambda: 1_700_000_000.0)
    ids = []
    for i in range(n):
        conversation = store.create("kiosk", {})["id"]
        for q in ("cancel my order", "thanks"):
            store.record_turn(
                conversation,
                "kiosk",
                f"{q} {i}",
                "ok",
                route="curated",
                intent="order.cancel_order",
                confidence=0.9,
                latency_ms=2.0,
                prompt_tokens=0,
                completion_tokens=0,
                sources=[],
            )
        ids.append(conversation)
    return ids


def central_segments(fake: LiveFakeDify) -> dict[str, str]:
    knowledge = fake.state.knowledge
    out = {}
    for dataset in knowledge.list_datasets():
        for document in knowledge.list_documents(dataset.id):
            for segment in knowledge.list_segments(document.id):
                out[segment.id] = segment.content
    return out


def local_segments(db, exclude: tuple[str, ...] = (ANNOTATIONS_DATASET,)) -> dict[str, str]:
    marks = ",".join("?" * len(exclude))
    sql = f"SELECT id, content FROM knowledge_segments WHERE enabled = 1 AND dataset_id NOT IN ({marks})"
    rows = db.execute(sql, list(exclude)).fetchall()
    return dict(rows)


def test_one_pass_mirrors_central_and_pushes_each_conversation_once(central, tmp_path: Path) -> None:
    fake, ids = central
    agent, db = make_agent(agent_settings(fake, ids, tmp_path / "data"))
    conversations = add_turns(db, 3)
    result = agent.run_once()
    assert result.online and result.outcomes == {
        "parameters": "ok",
        "annotations": "ok",
        "knowledge": "ok",
        "push": "ok",
    }
    assert local_segments(db) == central_segments(fake)
    annotations = KnowledgeStore(db).qa_pairs(ANNOTATIONS_DATASET)
    assert {q for _, q, _ in annotations} == {a.question for a in fake.state.list_annotations(ids.chat_app_id)}
    assert CentralParameters(db).get()["opening_statement"].startswith("Hello! I can help")
    runs = fake.state.runs_of(ids.workflow_app_id)
    assert len(runs) == 3 and Outbox(db).depth() == 0
    sessions = sorted(run.inputs["edge_session_id"] for run in runs)
    assert sessions == sorted(conversations)
    transcript = json.loads(runs[0].inputs["transcript"])
    assert transcript["store_id"] == "berlin-3" and len(transcript["turns"]) == 2
    again = agent.run_once()
    assert again.online and len(fake.state.runs_of(ids.workflow_app_id)) == 3  # nothing sent twice


def test_central_edits_flow_down_and_only_changes_are_embedded(central, tmp_path: Path) -> None:
    fake, ids = central
    agent, db = make_agent(agent_settings(fake, ids, tmp_path / "data"))
    agent.run_once()
    embedder = agent.embedder()[0]
    embedder.seen.clear()
    knowledge = fake.state.knowledge
    document = knowledge.list_documents(ids.dataset_id)[0]
    first, second = knowledge.list_segments(document.id)[:2]
    knowledge.update_segment(first.id, content="Returns are accepted for 60 days now.")
    knowledge.delete_segment(second.id)
    fake.state.add_annotation(ids.chat_app_id, "Do you sell gift cards?", "Yes, at every till.")
    agent.run_once()
    assert sorted(embedder.seen) == ["Do you sell gift cards?", "Returns are accepted for 60 days now."]
    assert local_segments(db) == central_segments(fake)


def test_page_drift_during_a_listing_neither_loses_nor_doubles(central, tmp_path: Path) -> None:
    fake, ids = central
    knowledge = fake.state.knowledge
    document = knowledge.add_document(ids.dataset_id, "Big FAQ", segments=[f"fact number {i}" for i in range(250)])
    agent, db = make_agent(agent_settings(fake, ids, tmp_path / "data"))

    def drift(state) -> None:
        segments = state.knowledge.list_segments(document.id)
        state.knowledge.delete_segment(segments[0].id)  # shifts every later page by one
        state.knowledge.add_segments(document.id, [{"content": "a late fact"}])

    fake.faults.between_pages(f"/v1/datasets/{ids.dataset_id}/documents/{document.id}/segments", 1, drift, times=1)
    assert agent.run_once().outcomes["knowledge"] == "ok"
    assert local_segments(db) == central_segments(fake)


@pytest.mark.parametrize("fault", ["commit_then_502", "drop_after_commit", "rate_limit", "server_error"])
def test_push_faults_settle_to_exactly_one_run_each(central, tmp_path: Path, fault: str) -> None:
    fake, ids = central
    agent, db = make_agent(agent_settings(fake, ids, tmp_path / "data", sync_timeout_s=2))
    add_turns(db, 2)
    faults = fake.faults
    if fault == "commit_then_502":
        faults.commit_then("/v1/workflows/run", 502, times=2)
    elif fault == "drop_after_commit":
        faults.drop("/v1/workflows/run", after=True, times=1)
    elif fault == "rate_limit":
        faults.rate_limit("/v1/workflows/run", times=2)
    else:
        faults.error("/v1/workflows/run", 500, times=2)
    for _ in range(6):
        agent.run_once()
        db.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")  # skip the backoff wait
    runs = fake.state.runs_of(ids.workflow_app_id)
    assert len(runs) == 2 and len({r.inputs["edge_session_id"] for r in runs}) == 2
    assert Outbox(db).depth() == 0 and Outbox(db).parked() == []


def test_revoked_key_stops_its_stream_and_says_so(central, tmp_path: Path) -> None:
    fake, ids = central
    agent, db = make_agent(agent_settings(fake, ids, tmp_path / "data"))
    add_turns(db, 1)
    fake.state.revoke_key(ids.workflow_key)
    result = agent.run_once()
    assert result.outcomes["push"] == "stopped" and result.outcomes["knowledge"] == "ok"
    status = agent.status()
    assert status["streams"]["push"]["state"] == "stopped"
    assert "restart" in status["streams"]["push"]["last_error"]
    assert Outbox(db).depth() == 2 and fake.state.runs_of(ids.workflow_app_id) == []
    assert agent.run_once().outcomes["push"] == "stopped"  # no hammering with a dead key


def test_unreachable_central_is_offline_with_backoff(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        central_url="http://127.0.0.1:9",
        central_app_key="app-xxxxxxxxxxxxxxxxxxxxxxxx",
        sync_probe_timeout_s=0.5,
    )
    agent, _db = make_agent(settings)
    waits = []
    for _ in range(4):
        result = agent.run_once()
        assert not result.online
        waits.append(agent.next_wait_s(result))
    assert agent.status()["streams"]["central"]["state"] == "offline"
    assert all(1.0 <= w <= settings.sync_backoff_max_s for w in waits)


def test_edge_sync_once_and_status_as_processes(central, tmp_path: Path, api_bundle: Path) -> None:
    fake, ids = central
    env = {
        **os.environ,
        "KIOSK_BUNDLE_DIR": str(api_bundle),
        "KIOSK_DATA_DIR": str(tmp_path / "data"),
        "KIOSK_CENTRAL_URL": fake.api_url,
        "KIOSK_CENTRAL_APP_KEY": ids.chat_key,
        "KIOSK_STORE_ID": "berlin-3",
    }
    once = subprocess.run(
        [sys.executable, "-m", "edge", "sync", "once"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert once.returncode == 0, once.stderr
    assert json.loads(once.stdout)["streams"] == {
        "parameters": "ok",
        "annotations": "ok",
        "knowledge": "off",
        "push": "off",
    }
    status = subprocess.run(
        [sys.executable, "-m", "edge", "sync", "status"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    body = json.loads(status.stdout)
    assert body["streams"]["central"]["state"] == "online" and body["outbox_pending"] == 0
    offline = subprocess.run(
        [sys.executable, "-m", "edge", "sync", "once"],
        env={**env, "KIOSK_CENTRAL_URL": "http://127.0.0.1:9"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert offline.returncode == 2
    no_bundle = subprocess.run(
        [sys.executable, "-m", "edge", "sync", "once"],
        env={**env, "KIOSK_BUNDLE_DIR": str(tmp_path / "missing")},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_bundle.returncode == 0 and "Traceback" not in no_bundle.stderr
    assert json.loads(no_bundle.stdout)["streams"]["annotations"] == "failed"  # said, not crashed


def test_vectors_of_the_real_embedder_land_in_the_servers_search(central, tmp_path: Path, embedder_build) -> None:
    from edge.bundle import load_component
    from edge.inference.embedder import Embedder, embedder_id

    fake, ids = central
    component = load_component(embedder_build[0])
    settings = agent_settings(fake, ids, tmp_path / "data", central_app_key=None, central_ingest_key=None)
    settings.data_dir.mkdir(parents=True)
    db = open_database(settings.database_path)
    embedder = Embedder.from_component(component)
    agent = SyncAgent(
        settings,
        db,
        DifyClient(settings.central_url, timeout_s=5),
        embedder_factory=lambda: (embedder, embedder_id(component)),
    )
    assert agent.run_once().outcomes["knowledge"] == "ok"
    index = KnowledgeStore(db).vector_index(embedder_id(component), embedder.config.dimension)
    assert len(index.ids) == len(central_segments(fake))
    np.testing.assert_allclose(np.linalg.norm(index.matrix, axis=1), 1.0, atol=1e-5)


def test_a_chain_without_an_ingest_app_gets_one_document_per_conversation(central, tmp_path: Path) -> None:
    fake, ids = central
    transcripts = fake.state.knowledge.add_dataset("Kiosk transcripts")
    settings = agent_settings(
        fake, ids, tmp_path / "data", central_ingest_key=None, central_transcripts_dataset_id=transcripts.id
    )
    agent, db = make_agent(settings)
    conversations = add_turns(db, 2)
    fake.faults.commit_then(f"/v1/datasets/{transcripts.id}/document/create-by-text", 502, times=1)
    for _ in range(3):
        agent.run_once()
        db.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")
    names = sorted(d.name for d in fake.state.knowledge.list_documents(transcripts.id))
    assert names == sorted(f"edge:berlin-3:k2:{c}" for c in conversations)  # once each, despite the lost reply
    assert Outbox(db).depth() == 0
    local = db.execute("SELECT count(*) FROM knowledge_segments WHERE dataset_id = ?", [transcripts.id]).fetchone()
    assert local[0] == 0  # the box does not pull back its own transcripts as knowledge
