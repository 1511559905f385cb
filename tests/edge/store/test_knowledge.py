"""Knowledge segments: atomic apply, fingerprints for the sync diff, FTS5 kept in step (CJK as bigrams)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge.store.db import open_database
from edge.store.errors import InvalidParam
from edge.store.knowledge import SEED_DATASET, KnowledgeStore, Segment, fts_query

DIM = 4


def segment(segment_id: str, content: str, **fields: object) -> Segment:
    values: dict = dict(dataset_id="d1", document_id="doc1", updated_at=1, index_node_hash=f"h-{content}")
    values.update(fields)
    return Segment(id=segment_id, content=content, **values)


@pytest.fixture
def store(tmp_path: Path) -> KnowledgeStore:
    return KnowledgeStore(open_database(tmp_path / "k.db"))


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_apply_upserts_deletes_and_moves_the_version(store: KnowledgeStore) -> None:
    start = store.version()
    store.apply([segment("a", "parking behind the store"), segment("b", "gift cards never expire")], None, None)
    assert store.version() == start + 1 and store.count() == 2
    assert store.search_text("Where is PARKING?", 5) == ["a"]
    store.apply([segment("a", "bicycle racks at the entrance", updated_at=2)], None, None, deletes=["b"])
    assert store.search_text("parking", 5) == []  # the update removed the old text from the index
    assert store.search_text("bicycle", 5) == ["a"]
    assert store.search_text("gift", 5) == []
    assert store.fingerprints("d1") == {"a": (2, "h-bicycle racks at the entrance", True)}
    store.apply([], None, None)
    assert store.version() == start + 2  # nothing changed, nothing moved


def test_disabled_segments_are_not_found(store: KnowledgeStore) -> None:
    store.apply([segment("a", "parking", enabled=False)], np.stack([unit(1, 0, 0, 0)]), "e1")
    assert store.search_text("parking", 5) == []
    assert store.vector_index("e1", DIM).ids == []
    assert store.fingerprints("d1")["a"][2] is False


def test_vectors_belong_to_one_embedder(store: KnowledgeStore) -> None:
    store.apply([segment("a", "x"), segment("b", "y")], np.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0)]), "e1")
    index = store.vector_index("e1", DIM)
    assert index.ids == ["a", "b"] and index.matrix.shape == (2, DIM)
    assert store.vector_index("e2", DIM).ids == []
    assert sorted(store.missing_vectors("e2")) == [("a", "x"), ("b", "y")]
    assert store.missing_vectors("e1") == []


def test_set_vectors_skips_rows_whose_text_changed_meanwhile(store: KnowledgeStore) -> None:
    store.apply([segment("a", "old text")], None, None)
    pending = store.missing_vectors("e1")
    store.apply([segment("a", "new text")], None, None)
    written = store.set_vectors([p[0] for p in pending], np.stack([unit(1, 1, 0, 0)]), "e1", [p[1] for p in pending])
    assert written == 0 and store.missing_vectors("e1") == [("a", "new text")]


def test_apply_is_all_or_nothing(store: KnowledgeStore) -> None:
    store.apply([segment("a", "kept")], None, None)
    with pytest.raises(ValueError):
        store.apply([segment("b", "new"), segment("c", "new")], np.stack([unit(1, 0, 0, 0)]), "e1")
    broken = segment("d", "x", dataset_id=None)  # NOT NULL dataset_id fails mid-transaction
    with pytest.raises(sqlite3.IntegrityError):
        store.apply([segment("b", "first"), broken], None, None, deletes=["a"])
    assert store.count() == 1 and store.search_text("kept", 5) == ["a"]


@pytest.mark.parametrize(
    "text", ['"', "NEAR(a b)", "parking*", "a OR", "-(", "AND", "col:parking", "^x", "'; DROP TABLE x; --"]
)
def test_fts_syntax_in_questions_is_inert(store: KnowledgeStore, text: str) -> None:
    store.apply([segment("a", "parking and a drop box near the col")], None, None)
    store.search_text(text, 5)  # must not raise


def test_fts_query_quotes_each_word() -> None:
    assert fts_query('Where is "parking"?') == '"where" OR "is" OR "parking"'
    assert fts_query("?!") is None


def test_seed_is_one_document_inserted_once(store: KnowledgeStore, tmp_path: Path) -> None:
    csv_path = tmp_path / "store_faq.csv"
    csv_path.write_text('question,answer\nIs there parking?,"Yes, behind the store."\nGift cards?,At every till.\n')
    assert store.seed_from_csv(csv_path) == 2
    assert store.seed_from_csv(csv_path) == 0
    rows = store.get_many(list(store.fingerprints(str(SEED_DATASET))))
    assert {row["document_name"] for row in rows.values()} == {"store_faq"}
    assert {row["answer"] for row in rows.values()} == {"Yes, behind the store.", "At every till."}
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\nonly a question,\n")
    with pytest.raises(InvalidParam, match=r"bad\.csv:2"):
        store.seed_from_csv(bad)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("q,a\nx,y\n")
    with pytest.raises(InvalidParam, match="question and answer"):
        store.seed_from_csv(wrong)


def test_chinese_full_text_finds_a_word_inside_a_run_of_characters(store: KnowledgeStore) -> None:
    """FTS5's word tokenizer makes "我的退款什么时候到账" one token; bigrams find "退款" inside it."""
    store.apply(
        [
            segment("refund", "我的退款什么时候到账", answer="退款一般在五个工作日内到账。"),
            segment("parking", "可以停车吗", answer="商场后面有停车场。"),
            segment("mixed", "iPhone 15 有货吗"),
        ],
        None,
        None,
    )
    assert store.search_text("退款", 5) == ["refund"]
    assert store.search_text("怎么申请退款？", 5)[0] == "refund"
    assert store.search_text("停车", 5) == ["parking"]
    assert store.search_text("停车场在哪", 5) == ["parking"]  # the answer is indexed too
    assert store.search_text("iphone", 5) == ["mixed"]
    store.apply([], None, None, deletes=["refund"])
    assert store.search_text("退款", 5) == []


def test_an_older_index_is_rebuilt_with_bigrams(tmp_path: Path) -> None:
    """m007 re-indexes segments stored under the old word tokenizer."""
    import sqlite_utils

    from edge.store.db import connection_lock
    from edge.store.migrations import MIGRATIONS, migrate

    db = sqlite_utils.Database(sqlite3.connect(str(tmp_path / "old.db"), check_same_thread=False))
    connection_lock(db)
    migrate(db, MIGRATIONS[:6])
    db.execute(
        "INSERT INTO knowledge_segments (id, dataset_id, document_id, content, answer, keywords)"
        " VALUES ('r', 'd', 'doc', '我的退款什么时候到账', NULL, '[]')"
    )
    migrate(db)
    assert KnowledgeStore(db).search_text("退款", 5) == ["r"]
