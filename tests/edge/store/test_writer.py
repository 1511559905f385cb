"""The group-commit writer: results only after COMMIT, a failing write undone alone, everything drained at close,
and a turn never dropped because another process holds the write lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edge.store.conversations import ConversationStore
from edge.store.db import is_busy, open_database
from edge.store.writer import Writer


@pytest.fixture
def db(tmp_path: Path):
    database = open_database(tmp_path / "w.db")
    database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    yield database
    database.close()


def insert(db, value: str | None) -> int:
    return db.execute("INSERT INTO t (v) VALUES (?)", [value]).lastrowid


def test_concurrent_writes_share_transactions_and_fail_alone(db, tmp_path: Path) -> None:
    writer = Writer(db, max_batch=16)
    gate = threading.Event()
    writer.start()

    async def scenario() -> list:
        blocker = asyncio.ensure_future(writer.run(gate.wait))  # holds the writer so the others queue up
        await asyncio.sleep(0.05)
        writes = [writer.run(insert, db, None if i == 3 else f"v{i}") for i in range(10)]
        tasks = [asyncio.ensure_future(w) for w in writes]
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    writer.close()
    assert isinstance(results[3], Exception)  # NOT NULL: this write alone was rolled back
    assert all(isinstance(r, int) for i, r in enumerate(results) if i != 3)
    assert writer.writes == 11 and writer.batches < writer.writes  # grouped, not one COMMIT each
    other = open_database(tmp_path / "w.db")  # a second connection sees only committed data
    assert sorted(row[0] for row in other.execute("SELECT v FROM t").fetchall()) == sorted(
        f"v{i}" for i in range(10) if i != 3
    )
    other.close()


def test_close_drains_the_queue_and_refuses_new_work(db) -> None:
    writer = Writer(db)
    writer.start()

    async def scenario() -> None:
        futures = [asyncio.ensure_future(writer.run(insert, db, f"x{i}")) for i in range(20)]
        await asyncio.sleep(0)
        await asyncio.to_thread(writer.close)
        await asyncio.gather(*futures)
        with pytest.raises(RuntimeError, match="not running"):
            await writer.run(insert, db, "late")

    asyncio.run(scenario())
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 20


def record(store: ConversationStore, conversation_id: str, query: str) -> dict:
    return store.record_turn(
        conversation_id, "u", query, "an answer", route="curated", intent="order.where", confidence=0.9,
        latency_ms=1.0, prompt_tokens=0, completion_tokens=0, sources=[],
    )  # fmt: skip


def test_a_turn_waits_out_another_process_holding_the_write_lock(tmp_path: Path) -> None:
    """The sync agent holds the write lock longer than one wait: the turn retries until it commits, and the
    server's reads go on meanwhile (before: "database is locked" after 5 s, the turn dropped, reads 5 s)."""
    db = open_database(tmp_path / "edge.db")
    store = ConversationStore(db)
    conversation = store.create("u", {})["id"]
    writer = Writer(db, lock_wait_s=0.1)
    writer.start()
    agent = sqlite3.connect(tmp_path / "edge.db", isolation_level=None, check_same_thread=False)
    agent.execute("BEGIN IMMEDIATE")
    agent.execute("UPDATE conversations SET name = 'by the agent'")

    async def scenario() -> tuple[list[dict], float, float]:
        started = time.perf_counter()
        turns = [asyncio.ensure_future(writer.run(record, store, conversation, f"q{i}")) for i in range(5)]
        await asyncio.sleep(0.3)
        read_started = time.perf_counter()
        assert (await asyncio.to_thread(store.get, conversation, "u"))["name"] == "New conversation"
        read_s = time.perf_counter() - read_started
        assert not any(turn.done() for turn in turns)
        await asyncio.sleep(0.7)
        await asyncio.to_thread(agent.execute, "COMMIT")
        results = await asyncio.gather(*turns)
        return results, read_s, time.perf_counter() - started

    try:
        results, read_s, waited_s = asyncio.run(scenario())
        assert [r["query"] for r in results] == [f"q{i}" for i in range(5)]
        assert read_s < 0.2
        assert waited_s >= 1.0 and writer.retries >= 5
        messages, _ = store.messages(conversation, "u", None, 10)
        assert len(messages) == 5
        assert store.get(conversation, "u")["name"] == "by the agent"  # the agent's write committed too
    finally:
        writer.close()
        agent.close()
        db.close()


def test_close_gives_up_on_a_database_locked_past_the_drain_deadline(db, tmp_path: Path) -> None:
    """Waiting is bounded by shutdown only: what cannot commit within `drain_s` of close() fails, loudly."""
    writer = Writer(db, lock_wait_s=0.05, drain_s=0.3)
    writer.start()
    agent = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    agent.execute("BEGIN IMMEDIATE")
    try:
        future = writer.submit(insert, db, "never")
        time.sleep(0.3)
        assert not future.done()  # still retrying: no deadline before shutdown
        started = time.perf_counter()
        writer.close()
        assert time.perf_counter() - started < 2.0
        assert is_busy(future.exception())
    finally:
        agent.execute("ROLLBACK")
        agent.close()


def test_a_cancelled_caller_does_not_cancel_its_write(db) -> None:
    """The shopper's connection going away while its turn is queued must not lose the turn."""
    writer = Writer(db)
    gate = threading.Event()
    writer.start()

    async def scenario() -> None:
        blocker = writer.submit(gate.wait)
        task = asyncio.ensure_future(writer.run(insert, db, "kept"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        await asyncio.wrap_future(blocker)

    asyncio.run(scenario())
    writer.close()
    assert db.execute("SELECT v FROM t").fetchall() == [("kept",)]


def test_submit_after_close_is_refused(db) -> None:
    writer = Writer(db)
    writer.start()
    writer.close()
    with pytest.raises(RuntimeError, match="not running"):
        writer.submit(insert, db, "late")
