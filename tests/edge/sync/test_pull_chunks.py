"""Item 7, the agent's half: a large knowledge change is written in short transactions, so the server's
turns (another connection, waiting at most its busy timeout) get in between, and a process that dies
between two chunks leaves a consistent store that the next pass completes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edge.store.db import open_database
from edge.store.knowledge import KnowledgeStore
from edge.sync import pull
from edge.sync.pull import apply_diff
from tests.edge.sync.test_pull import CountingEmbedder, seg

ROOT = Path(__file__).resolve().parents[3]


def central(n: int, version: int = 1) -> list:
    return [seg(f"s{i}", f"text {i} v{version}", updated_at=version) for i in range(n)]


class WriteLog:
    """Rows written per transaction on one connection, from SQLite's own statement trace."""

    def __init__(self, conn: sqlite3.Connection, delay_s: float = 0.0) -> None:
        self.sizes: list[int] = []
        self._rows: int | None = None
        self.delay_s = delay_s
        conn.set_trace_callback(self)

    def __call__(self, sql: str) -> None:
        statement = sql.lstrip().upper()
        if statement.startswith("BEGIN"):
            self._rows = 0
        elif statement.startswith(("COMMIT", "ROLLBACK")) and self._rows is not None:
            self.sizes.append(self._rows)
            self._rows = None
        elif statement.startswith(("INSERT INTO KNOWLEDGE_SEGMENTS", "DELETE FROM KNOWLEDGE_SEGMENTS")):
            self._rows = (self._rows or 0) + 1
            if self.delay_s:
                time.sleep(self.delay_s)  # a slow SD card


def test_a_large_change_is_written_in_bounded_transactions(tmp_path: Path) -> None:
    store = KnowledgeStore(open_database(tmp_path / "edge.db"))
    log = WriteLog(store.db.conn)
    size = 3 * pull.CHUNK_ROWS + 7
    assert apply_diff(store, "ds", central(size), CountingEmbedder(), "e") == (size, 0)
    assert max(log.sizes) <= pull.CHUNK_ROWS and sum(log.sizes) == size
    log.sizes.clear()
    assert apply_diff(store, "ds", central(size, version=2)[:5], CountingEmbedder(), "e") == (5, size - 5)
    assert max(log.sizes) <= pull.CHUNK_ROWS and sum(log.sizes) == size
    assert store.count() == 5


def test_the_servers_turns_get_in_while_a_large_change_is_applied(tmp_path: Path) -> None:
    """The server waits at most its busy timeout (here 1 s) for the write lock; the agent's apply takes longer."""
    path = tmp_path / "edge.db"
    store = KnowledgeStore(open_database(path))
    store.db.execute("CREATE TABLE turns (at REAL)")
    WriteLog(store.db.conn, delay_s=0.001)  # ~1.5 s of writing in all
    # The server's connection, writing as its writer does (BEGIN IMMEDIATE), but waiting 1 s at most:
    # whatever retrying the server does on top, the agent must not hold the write lock for long.
    server = sqlite3.connect(str(path), timeout=1.0, isolation_level=None, check_same_thread=False)
    failures: list[str] = []
    written = 0
    done = threading.Event()

    def serve() -> None:
        nonlocal written
        while not done.is_set():
            try:
                server.execute("BEGIN IMMEDIATE")
                server.execute("INSERT INTO turns VALUES (?)", [time.time()])
                server.execute("COMMIT")
                written += 1
            except sqlite3.OperationalError as exc:
                failures.append(str(exc))
            time.sleep(0.02)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        apply_diff(store, "ds", central(1500), CountingEmbedder(), "e")
    finally:
        done.set()
        thread.join()
        server.close()
    assert failures == [] and written > 0
    assert store.count() == 1500


CRASH = """
import os, sys
from pathlib import Path
from edge.store.db import open_database
from edge.store.knowledge import KnowledgeStore
from edge.sync.pull import apply_diff
from tests.edge.sync.test_pull import CountingEmbedder
from tests.edge.sync.test_pull_chunks import central

class Dying(CountingEmbedder):
    calls = 0
    def embed(self, texts):
        Dying.calls += 1
        if Dying.calls == 3:
            os._exit(9)  # the process dies: no rollback, no cleanup
        return super().embed(texts)

store = KnowledgeStore(open_database(Path(sys.argv[1])))
apply_diff(store, "ds", central(int(sys.argv[2]), version=2), Dying(), "e")
"""


def test_a_process_killed_between_chunks_leaves_a_consistent_store_the_next_pass_completes(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    size = 4 * pull.CHUNK_ROWS
    store = KnowledgeStore(open_database(path))
    apply_diff(store, "ds", central(size), CountingEmbedder(), "e")
    died = subprocess.run(
        [sys.executable, "-c", CRASH, str(path), str(size)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert died.returncode == 9, died.stderr
    store = KnowledgeStore(open_database(path))
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    indexed = store.db.execute("SELECT count(*) FROM knowledge_fts_docsize").fetchone()[0]
    assert indexed == store.count() == size, "every row has its full-text entry"
    updated = [i for i, fp in store.fingerprints("ds").items() if fp[0] == 2]
    assert len(updated) == 2 * pull.CHUNK_ROWS, "the two chunks written before the crash are durable"
    rows = store.get_many(updated[:3])
    assert all(row["content"].endswith("v2") for row in rows.values())
    index = store.vector_index("e", 16)
    assert len(index.ids) == size and np.isfinite(index.matrix).all(), "no row lost its vector"
    embedder = CountingEmbedder()
    assert apply_diff(store, "ds", central(size, version=2), embedder, "e") == (size - 2 * pull.CHUNK_ROWS, 0)
    assert all(text.endswith("v2") for text in embedder.seen)
    assert {fp[0] for fp in store.fingerprints("ds").values()} == {2}
