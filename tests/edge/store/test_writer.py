"""The group-commit writer: results only after COMMIT, a failing write undone alone, everything drained at close."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from edge.store.db import open_database
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
