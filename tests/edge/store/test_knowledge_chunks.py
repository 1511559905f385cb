"""Item 7: the knowledge store deletes a large dataset in short transactions, not one long one."""

from __future__ import annotations

from pathlib import Path

from edge.store.db import open_database
from edge.store.knowledge import SEED_DATASET, KnowledgeStore, Segment


def test_a_large_dataset_is_deleted_a_chunk_a_transaction(tmp_path: Path) -> None:
    store = KnowledgeStore(open_database(tmp_path / "k.db"))
    rows = [Segment(id=f"s{i}", dataset_id="big", document_id="doc", content=f"text {i}") for i in range(35)]
    store.apply([*rows, Segment(id="kept", dataset_id=str(SEED_DATASET), document_id="d", content="x")], None, None)
    commits: list[str] = []
    store.db.conn.set_trace_callback(lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None)
    version = store.version()
    assert store.delete_dataset("big", chunk=10) == 35
    assert len(commits) == 4 and store.version() == version + 4  # 10 + 10 + 10 + 5
    assert store.dataset_ids() == {str(SEED_DATASET)} and store.search_text("text", 5) == []
    assert store.db.execute("SELECT count(*) FROM knowledge_fts_docsize").fetchone()[0] == 1
