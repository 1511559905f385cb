"""The data volume: its usage in /metrics, a readiness warning before it fills, and a clear 503 once it is full."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlite_utils
from fastapi import FastAPI
from fastapi.testclient import TestClient

from edge.api import ops
from edge.api.errors import install_error_handlers
from edge.metrics import Metrics
from edge.settings import Settings
from edge.store.conversations import ConversationStore
from edge.store.db import open_database
from edge.store.disk import StorageFull
from edge.store.writer import Writer
from tests.edge.api.conftest import AUTH


def fill(db: sqlite_utils.Database) -> None:
    """SQLite refuses to grow the file from now on, failing exactly as on a full disk (SQLITE_FULL)."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages}")


def unfill(db: sqlite_utils.Database) -> None:
    db.execute("PRAGMA max_page_count=1073741823")


def a_turn(store: ConversationStore, conversation_id: str) -> dict:
    return store.record_turn(
        conversation_id, "kiosk-1", "where is my refund?", "x" * 20_000, new_conversation={"inputs": {}},
        route="curated", intent=None, confidence=None, latency_ms=1.0, prompt_tokens=0, completion_tokens=0,
        sources=[],
    )  # fmt: skip


@pytest.fixture
def ops_app(tmp_path: Path) -> Iterator[tuple[FastAPI, sqlite_utils.Database]]:
    """The ops routes and the error handlers, with no bundle: readiness, metrics and error shapes only."""
    settings = Settings(data_dir=tmp_path / "data")
    db = open_database(settings.database_path)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(ops.router)
    app.state.settings, app.state.ready, app.state.metrics = settings, True, Metrics()
    app.state.log = logging.getLogger("edge.test")
    store = ConversationStore(db)

    @app.post("/v1/conversations/{conversation_id}/name")
    def rename(conversation_id: str) -> dict:  # a write outside the turn writer, as the real route's
        a_turn(store, conversation_id)
        return {"result": "success"}

    @app.post("/v1/chat/completions")
    def completions() -> dict:
        a_turn(store, "openai")
        return {}

    yield app, db
    db.close()


def test_metrics_report_the_data_volume_and_the_database(ops_app: tuple[FastAPI, sqlite_utils.Database]) -> None:
    app, _ = ops_app
    text = TestClient(app).get("/metrics").text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith("kiosk_")}
    total, used, free = (values[f'kiosk_data_volume_bytes{{state="{state}"}}'] for state in ("total", "used", "free"))
    assert total > 0 and 0 < used <= total and 0 < free <= total
    assert values["kiosk_database_bytes"] > 0


def test_readiness_warns_before_the_volume_is_full_and_stays_ready(
    ops_app: tuple[FastAPI, sqlite_utils.Database],
) -> None:
    app, _ = ops_app
    client = TestClient(app)
    calm = client.get("/readyz")
    assert calm.status_code == 200 and "warnings" not in calm.json()
    assert calm.json()["disk_free_bytes"] > 0
    app.state.settings = app.state.settings.model_copy(update={"disk_warn_free_mb": 10**9})  # 1 PB: always low
    low = client.get("/readyz")
    assert low.status_code == 200 and low.json()["status"] == "ready"
    [warning] = low.json()["warnings"]
    assert warning.startswith("data volume low: ") and "KIOSK_DISK_WARN_FREE_MB" in warning


def test_a_full_volume_is_a_503_in_each_family_shape(ops_app: tuple[FastAPI, sqlite_utils.Database]) -> None:
    app, db = ops_app
    fill(db)
    client = TestClient(app, raise_server_exceptions=False)
    dify = client.post("/v1/conversations/c1/name")
    assert dify.status_code == 503
    assert dify.json() == {"code": "storage_full", "message": StorageFull().message, "status": 503}
    openai = client.post("/v1/chat/completions")
    assert openai.status_code == 503
    assert openai.json()["error"]["code"] == "storage_full" and openai.json()["error"]["type"] == "server_error"
    assert client.get("/readyz").status_code == 200  # still serving
    unfill(db)
    assert client.post("/v1/conversations/c2/name").status_code == 200  # space freed: back without a restart


def test_the_turn_writer_reports_a_full_volume_as_storage_full(tmp_path: Path) -> None:
    db = open_database(tmp_path / "kiosk.sqlite3")
    writer = Writer(db)
    writer.start()
    store = ConversationStore(db)
    try:
        fill(db)
        with pytest.raises(StorageFull) as full:
            asyncio.run(writer.run(a_turn, store, "c1"))
        assert "database or disk is full" in str(full.value.__cause__)
        unfill(db)
        assert asyncio.run(writer.run(a_turn, store, "c2"))["conversation_id"] == "c2"
    finally:
        writer.close()
        db.close()


@pytest.mark.slow
def test_a_shopper_on_a_full_box_is_told_so(client: TestClient) -> None:
    """The real app: a full volume answers the chat 503 `storage_full` (blocking) or an error event with that
    status (streaming, after the first byte), keeps serving probes, and recovers once space is freed."""
    db = client.app.state.conversations.db
    body = {"query": "I want to cancel my order", "user": "shopper"}
    fill(db)
    for _ in range(200):  # the first turns still fit in the free room of the file's last pages
        blocking = client.post("/v1/chat-messages", headers=AUTH, json=body)
        if blocking.status_code != 200:
            break
    assert blocking.status_code == 503
    assert blocking.json() == {"code": "storage_full", "message": StorageFull().message, "status": 503}
    stream = client.post("/v1/chat-messages", headers=AUTH, json={**body, "response_mode": "streaming"})
    events = [json.loads(line[6:]) for line in stream.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["event"] == "error"
    assert (events[-1]["status"], events[-1]["code"]) == (503, "storage_full")
    assert client.get("/readyz").status_code == 200
    unfill(db)
    assert client.post("/v1/chat-messages", headers=AUTH, json=body).status_code == 200


def test_a_write_locked_out_by_another_process_is_a_503_to_retry(tmp_path: Path) -> None:
    """A write outside the turn writer (rename, delete, feedback) that waits out the busy timeout while the
    sync agent holds the write lock is a 503 with Retry-After in the family's shape, not a 500."""
    db = open_database(tmp_path / "kiosk.sqlite3", busy_timeout_ms=100)
    store = ConversationStore(db)
    app = FastAPI()
    install_error_handlers(app)
    app.state.log = logging.getLogger("edge.test")

    @app.post("/v1/conversations/{conversation_id}/name")
    def rename(conversation_id: str) -> dict:
        a_turn(store, conversation_id)
        return {"result": "success"}

    agent = sqlite3.connect(tmp_path / "kiosk.sqlite3", isolation_level=None)
    try:
        agent.execute("BEGIN IMMEDIATE")
        answer = TestClient(app, raise_server_exceptions=False).post("/v1/conversations/c1/name")
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert answer.json()["code"] == "service_unavailable" and answer.json()["status"] == 503
        agent.execute("ROLLBACK")
        assert TestClient(app).post("/v1/conversations/c1/name").status_code == 200
    finally:
        agent.close()
        db.close()
