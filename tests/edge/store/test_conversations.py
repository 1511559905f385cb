import shutil
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.store.conversations import ConversationStore
from edge.store.db import memory_database, open_database
from edge.store.errors import InvalidParam, NotFound
from edge.store.outbox import Outbox

SORTS = ["created_at", "-created_at", "updated_at", "-updated_at"]
MESSAGE_KEYS = {
    *("id", "conversation_id", "parent_message_id", "inputs", "query", "answer", "status", "error"),
    *("message_files", "feedback", "retriever_resources", "agent_thoughts", "created_at", "message_tokens"),
    *("answer_tokens", "total_tokens", "provider_response_latency", "route", "intent", "confidence"),
}


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite_utils.Database]:
    database = open_database(tmp_path / "edge.db")
    yield database
    database.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db: sqlite_utils.Database, clock: FakeClock) -> ConversationStore:
    return ConversationStore(db, clock=clock)


def turn(store: ConversationStore, conversation_id: str, user: str, n: int = 0, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "route": "intent",
        "intent": "card_arrival",
        "confidence": 0.9,
        "latency_ms": 250.0,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "sources": [{"document_name": "faq.md", "score": 0.8}],
        "language": "zh",
        "reason": "intent",
    }
    fields.update(overrides)
    return store.record_turn(conversation_id, user, f"question {n}", f"answer {n}", **fields)


@contextmanager
def not_found(message: str) -> Iterator[None]:
    """Like pytest.raises(NotFound), but the message must match Dify's wording exactly."""
    with pytest.raises(NotFound) as caught:
        yield
    assert caught.value.message == message
    assert str(caught.value) == message


def count(db: sqlite_utils.Database, table: str) -> int:
    return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_create_and_get(store: ConversationStore, clock: FakeClock) -> None:
    created = store.create("alice", {"store": "berlin-3"})
    assert created == {
        "id": created["id"],
        "name": "New conversation",
        "inputs": {"store": "berlin-3"},
        "status": "normal",
        "introduction": "",
        "created_at": int(clock.now),
        "updated_at": int(clock.now),
    }
    assert store.get(created["id"], "alice") == created


def test_another_users_conversation_looks_missing(store: ConversationStore) -> None:
    conversation = store.create("alice", {})
    failures = []
    for attempt in (
        lambda: store.get(conversation["id"], "mallory"),
        lambda: store.get("00000000-0000-0000-0000-000000000000", "alice"),
        lambda: store.delete(conversation["id"], "mallory"),
        lambda: store.rename(conversation["id"], "mallory", "mine now"),
        lambda: store.messages(conversation["id"], "mallory", None, 20),
        lambda: turn(store, conversation["id"], "mallory"),
    ):
        with pytest.raises(NotFound) as caught:
            attempt()
        failures.append((type(caught.value), caught.value.message, str(caught.value)))
    assert set(failures) == {(NotFound, "Conversation Not Exists.", "Conversation Not Exists.")}
    assert store.get(conversation["id"], "alice")["name"] == "New conversation"


def test_delete_hides_the_conversation(store: ConversationStore) -> None:
    kept, gone = store.create("alice", {}), store.create("alice", {})
    store.delete(gone["id"], "alice")
    with not_found("Conversation Not Exists."):
        store.get(gone["id"], "alice")
    with not_found("Conversation Not Exists."):
        store.delete(gone["id"], "alice")
    with not_found("Last Conversation Not Exists."):
        store.list("alice", gone["id"], 20)
    assert [c["id"] for c in store.list("alice", None, 20)[0]] == [kept["id"]]


def test_rename_bumps_updated_at(store: ConversationStore, clock: FakeClock) -> None:
    conversation = store.create("alice", {})
    clock.now += 60
    renamed = store.rename(conversation["id"], "alice", "Refund question")
    assert renamed["name"] == "Refund question"
    assert renamed["updated_at"] == conversation["updated_at"] + 60
    with pytest.raises(InvalidParam):
        store.rename(conversation["id"], "alice", "  ")


def test_list_is_scoped_and_validated(store: ConversationStore) -> None:
    mine = store.create("alice", {})
    store.create("bob", {})
    assert store.list("alice", None, 20) == ([mine], False)
    with not_found("Last Conversation Not Exists."):
        store.list("alice", "unknown", 20)
    bobs = store.list("bob", None, 1)[0][0]
    with not_found("Last Conversation Not Exists."):
        store.list("alice", bobs["id"], 20)
    with pytest.raises(InvalidParam):
        store.list("alice", None, 20, sort_by="name")
    with pytest.raises(InvalidParam):
        store.list("alice", None, 0)


def walk(store: ConversationStore, user: str, limit: int, sort_by: str) -> tuple[list[str], list[bool], list[int]]:
    ids: list[str] = []
    flags: list[bool] = []
    sizes: list[int] = []
    last_id = None
    while True:
        page, has_more = store.list(user, last_id, limit, sort_by)
        ids += [item["id"] for item in page]
        flags.append(has_more)
        sizes.append(len(page))
        if not has_more:
            return ids, flags, sizes
        assert len(flags) < 1000, "paging did not terminate"
        last_id = page[-1]["id"]


@pytest.mark.parametrize("sort_by", SORTS)
def test_equal_timestamps_across_page_boundaries(store: ConversationStore, sort_by: str) -> None:
    created = {store.create("alice", {})["id"] for _ in range(5)}  # the clock never moves: all equal
    ids, flags, sizes = walk(store, "alice", 2, sort_by)
    assert sorted(ids) == sorted(created)
    assert len(ids) == len(set(ids)) == 5
    assert flags == [True, True, False]
    assert sizes == [2, 2, 1]


@pytest.mark.parametrize("sort_by", SORTS)
def test_list_order(store: ConversationStore, clock: FakeClock, sort_by: str) -> None:
    first = store.create("alice", {})
    clock.now += 10
    second = store.create("alice", {})
    clock.now += 10
    turn(store, first["id"], "alice")  # first is now the most recently updated
    ids = [item["id"] for item in store.list("alice", None, 20, sort_by)[0]]
    ascending = [first["id"], second["id"]] if "created_at" in sort_by else [second["id"], first["id"]]
    assert ids == (ascending[::-1] if sort_by.startswith("-") else ascending)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2)), max_size=20),
    limit=st.integers(1, 6),
    sort_by=st.sampled_from(SORTS),
)
def test_keyset_paging_never_skips_or_repeats(rows: list[tuple[int, int]], limit: int, sort_by: str) -> None:
    clock = FakeClock(1000)
    store = ConversationStore(memory_database(), clock=clock)
    expected = []
    for created, bump in rows:
        clock.now = 1000 + created
        conversation = store.create("alice", {})
        clock.now += bump
        conversation = store.rename(conversation["id"], "alice", "renamed") if bump else conversation
        expected.append(conversation)
    store.create("bob", {})
    field = sort_by.removeprefix("-")
    expected.sort(key=lambda c: (c[field], c["id"]), reverse=sort_by.startswith("-"))

    ids, flags, sizes = walk(store, "alice", limit, sort_by)

    assert ids == [c["id"] for c in expected]
    assert flags == [True] * (len(flags) - 1) + [False]
    assert all(size == limit for size in sizes[:-1])
    assert len(sizes) == max(1, -(-len(expected) // limit))


def test_record_turn_returns_a_dify_message_and_bumps_the_conversation(
    store: ConversationStore, db: sqlite_utils.Database, clock: FakeClock
) -> None:
    conversation = store.create("alice", {"lang": "de"})
    clock.now += 30
    message = turn(store, conversation["id"], "alice", 1, message_id="m-1")
    assert set(message) == MESSAGE_KEYS
    assert message["id"] == "m-1"
    assert message["inputs"] == {"lang": "de"}
    assert (message["query"], message["answer"], message["status"], message["error"]) == (
        "question 1",
        "answer 1",
        "normal",
        None,
    )
    assert (message["message_tokens"], message["answer_tokens"], message["total_tokens"]) == (10, 5, 15)
    assert message["provider_response_latency"] == pytest.approx(0.25)
    assert message["retriever_resources"] == [{"document_name": "faq.md", "score": 0.8}]
    assert message["feedback"] is None
    assert store.get(conversation["id"], "alice")["updated_at"] == conversation["updated_at"] + 30
    [row] = Outbox(db, clock=clock).claim(10)
    assert (row["kind"], row["ref"]) == ("turn", "m-1")
    assert row["payload"] == {
        "conversation_id": conversation["id"],
        "message_id": "m-1",
        "user": "alice",
        "query": "question 1",
        "answer": "answer 1",
        "route": "intent",
        "intent": "card_arrival",
        "confidence": 0.9,
        "created_at": message["created_at"],
        "language": "zh",  # central's team sees which language each turn was answered in, and why
        "reason": "intent",
    }
    with pytest.raises(InvalidParam):
        turn(store, conversation["id"], "alice", 2, message_id="m-1")
    assert count(db, "messages") == count(db, "outbox") == 1


def assert_nothing_written(db: sqlite_utils.Database, store: ConversationStore, conversation: dict[str, Any]) -> None:
    assert count(db, "messages") == 0
    assert count(db, "outbox") == 0
    assert store.get(conversation["id"], "alice")["updated_at"] == conversation["updated_at"]
    assert not db.conn.in_transaction


def test_record_turn_failing_at_the_outbox_writes_nothing(
    store: ConversationStore, db: sqlite_utils.Database, clock: FakeClock
) -> None:
    conversation = store.create("alice", {})
    clock.now += 5
    db.execute("CREATE TRIGGER broken BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'outbox is broken'); END")
    with pytest.raises(sqlite3.DatabaseError, match="outbox is broken"):
        turn(store, conversation["id"], "alice")
    assert_nothing_written(db, store, conversation)
    db.execute("DROP TRIGGER broken")
    turn(store, conversation["id"], "alice")
    assert count(db, "messages") == count(db, "outbox") == 1


def test_record_turn_with_an_unserialisable_payload_writes_nothing(
    store: ConversationStore, db: sqlite_utils.Database, clock: FakeClock
) -> None:
    conversation = store.create("alice", {})
    clock.now += 5
    # SQLite stores bytes happily, so the message row is written before JSON for the outbox fails.
    with pytest.raises(TypeError):
        turn(store, conversation["id"], "alice", intent=b"not json")
    assert_nothing_written(db, store, conversation)


def test_record_turn_in_a_copy_without_an_outbox_writes_nothing(tmp_path: Path) -> None:
    path, copy = tmp_path / "edge.db", tmp_path / "copy.db"
    db = open_database(path)
    conversation = ConversationStore(db).create("alice", {})
    db.close()
    shutil.copy(path, copy)
    broken = open_database(copy)
    try:
        broken.execute("DROP TABLE outbox")
        store = ConversationStore(broken)
        with pytest.raises(sqlite3.OperationalError, match="outbox"):
            turn(store, conversation["id"], "alice")
        assert count(broken, "messages") == 0
        assert not broken.conn.in_transaction
    finally:
        broken.close()


def test_data_survives_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    db = open_database(path)
    store = ConversationStore(db)
    conversation = store.create("alice", {"k": "v"})
    message = turn(store, conversation["id"], "alice")
    store.set_feedback(message["id"], "alice", "like", "helpful")
    db.close()

    reopened = open_database(path)
    try:
        store = ConversationStore(reopened)
        assert store.get(conversation["id"], "alice")["inputs"] == {"k": "v"}
        [again], has_more = store.messages(conversation["id"], "alice", None, 20)
        assert (again["id"], again["feedback"], has_more) == (message["id"], {"rating": "like"}, False)
        assert Outbox(reopened).depth() == 2
    finally:
        reopened.close()


def test_messages_page_backwards_oldest_first_within_a_page(store: ConversationStore) -> None:
    conversation = store.create("alice", {})
    ids = [turn(store, conversation["id"], "alice", n)["id"] for n in range(5)]

    page, has_more = store.messages(conversation["id"], "alice", None, 2)
    assert ([m["id"] for m in page], has_more) == (ids[3:5], True)
    page, has_more = store.messages(conversation["id"], "alice", page[0]["id"], 2)
    assert ([m["id"] for m in page], has_more) == (ids[1:3], True)
    page, has_more = store.messages(conversation["id"], "alice", page[0]["id"], 2)
    assert ([m["id"] for m in page], has_more) == (ids[0:1], False)
    assert [m["query"] for m in store.messages(conversation["id"], "alice", None, 5)[0]] == [
        f"question {n}" for n in range(5)
    ]
    assert store.messages(conversation["id"], "alice", None, 5)[1] is False


def test_messages_first_id_must_belong_to_the_conversation(store: ConversationStore) -> None:
    conversation, other = store.create("alice", {}), store.create("alice", {})
    elsewhere = turn(store, other["id"], "alice")
    for first_id in ("unknown", elsewhere["id"]):
        with not_found("First Message Not Exists."):
            store.messages(conversation["id"], "alice", first_id, 20)


def test_recent_turns_are_the_last_good_ones_oldest_first(store: ConversationStore) -> None:
    conversation = store.create("alice", {})
    for n in range(4):
        turn(store, conversation["id"], "alice", n)
    turn(store, conversation["id"], "alice", 99, status="error", error="llm timed out")
    assert store.recent_turns(conversation["id"], 2) == [("question 2", "answer 2"), ("question 3", "answer 3")]
    assert len(store.recent_turns(conversation["id"], 10)) == 4
    assert store.recent_turns(conversation["id"], 0) == []


def test_message_owner(store: ConversationStore) -> None:
    conversation = store.create("alice", {})
    message = turn(store, conversation["id"], "alice")
    assert store.message_owner(message["id"]) == (conversation["id"], "alice")
    assert store.message_owner("unknown") is None


def feedback_row(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return list(db.query("SELECT message_id, user, rating, content FROM feedback"))


def test_feedback_upsert_and_revoke(store: ConversationStore, db: sqlite_utils.Database) -> None:
    conversation = store.create("alice", {})
    message = turn(store, conversation["id"], "alice")
    store.set_feedback(message["id"], "alice", "like", None)
    store.set_feedback(message["id"], "alice", "like", None)  # idempotent
    assert feedback_row(db) == [{"message_id": message["id"], "user": "alice", "rating": "like", "content": None}]
    store.set_feedback(message["id"], "alice", "dislike", "wrong store hours")
    assert feedback_row(db)[0]["rating"] == "dislike"
    assert store.messages(conversation["id"], "alice", None, 1)[0][0]["feedback"] == {"rating": "dislike"}
    store.set_feedback(message["id"], "alice", None, None)
    assert feedback_row(db) == []
    assert store.messages(conversation["id"], "alice", None, 1)[0][0]["feedback"] is None
    payloads = [row["payload"] for row in Outbox(db).claim(10) if row["kind"] == "feedback"]
    assert [p["rating"] for p in payloads] == ["like", "like", "dislike", None]
    assert payloads[2]["content"] == "wrong store hours"


def test_feedback_errors_write_nothing(store: ConversationStore, db: sqlite_utils.Database) -> None:
    conversation = store.create("alice", {})
    message = turn(store, conversation["id"], "alice")
    outbox_before = count(db, "outbox")
    with pytest.raises(InvalidParam, match="rating cannot be None"):
        store.set_feedback(message["id"], "alice", None, None)
    with pytest.raises(InvalidParam):
        store.set_feedback(message["id"], "alice", "love", None)
    for message_id, user in ((message["id"], "mallory"), ("unknown", "alice")):
        with pytest.raises(NotFound) as caught:
            store.set_feedback(message_id, user, "like", None)
        assert caught.value.message == "Message Not Exists."
    assert feedback_row(db) == []
    assert count(db, "outbox") == outbox_before


def test_concurrent_record_turn_loses_nothing(store: ConversationStore, db: sqlite_utils.Database) -> None:
    conversation = store.create("alice", {})
    start = threading.Barrier(8)

    def worker(thread: int) -> list[str]:
        start.wait()
        return [turn(store, conversation["id"], "alice", thread * 100 + n)["id"] for n in range(25)]

    with ThreadPoolExecutor(8) as pool:
        ids = [message_id for batch in pool.map(worker, range(8)) for message_id in batch]

    assert len(set(ids)) == 200
    assert count(db, "messages") == 200
    assert {row[0] for row in db.execute("SELECT ref FROM outbox WHERE kind = 'turn'")} == set(ids)
    assert db.execute("SELECT count(DISTINCT seq) FROM messages").fetchone()[0] == 200
    page, has_more = store.messages(conversation["id"], "alice", None, 100)
    assert (len(page), has_more) == (100, True)


def test_concurrent_writers_on_separate_connections(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    setup = open_database(path)
    conversation = ConversationStore(setup).create("alice", {})
    start = threading.Barrier(4)

    def worker(thread: int) -> int:
        db = open_database(path)  # like a second process: its own connection and lock
        try:
            store, outbox = ConversationStore(db), Outbox(db)
            start.wait()
            for n in range(20):
                turn(store, conversation["id"], "alice", thread * 100 + n)
                for row in outbox.claim(5):
                    outbox.mark_done(row["id"])
            return thread
        finally:
            db.close()

    with ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(worker, range(4))) == [0, 1, 2, 3]
    try:
        assert count(setup, "messages") == count(setup, "outbox") == 80
    finally:
        setup.close()
