"""Retention deletes wholly pushed conversations older than KIOSK_RETENTION_DAYS, never unpushed ones, and
hands the space back; the sync agent runs it."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlite_utils

from edge.settings import Settings
from edge.store.conversations import ConversationStore
from edge.store.db import open_database, transaction
from edge.store.handoffs import Handoffs, Opening
from edge.store.retention import DAY_S, Retention
from edge.sync.agent import SyncAgent
from edge.sync.client import DifyClient

NOW = 1_800_000_000.0
ANSWER = (
    "You can cancel an order from your account page within 14 days of delivery; the refund reaches your card "
    "in three to five working days. A colleague at the service desk can also help you with it."
)
SOURCES = json.dumps([{"dataset_id": "d", "document_id": "doc", "segment_id": "s", "score": 0.82}])


def grow(
    db: sqlite_utils.Database,
    conversations: int,
    *,
    turns: int = 3,
    age_days: tuple[float, float] = (0.0, 365.0),
    pushed: bool = True,
    prefix: str = "c",
) -> list[str]:
    """`conversations` of `turns` turns each, their ages spread evenly over `age_days`, written the way the
    server writes them (message + outbox row, and, when pushed, `done` rows and a `done` record) -- in bulk:
    one transaction of executemany per table."""
    ids = [f"{prefix}{n:07d}" for n in range(conversations)]
    young, old = age_days
    conversation_rows, message_rows, outbox_rows, record_rows = [], [], [], []
    for n, conversation_id in enumerate(ids):
        at = int(NOW - (young + (old - young) * n / max(1, conversations - 1)) * DAY_S)
        conversation_rows.append((conversation_id, f"kiosk-{n % 7}", "{}", at - 60 * turns, at))
        for turn in range(turns):
            message_id = f"{conversation_id}-m{turn}"
            created = at - 60 * (turns - 1 - turn)
            query = f"how do I cancel order {n}-{turn}?"
            message_rows.append(
                (message_id, conversation_id, f"kiosk-{n % 7}", query, ANSWER, "curated", "order.cancel_order",
                 0.93, 12.5, SOURCES, created, "en")
            )  # fmt: skip
            payload = {
                "message_id": message_id, "conversation_id": conversation_id, "user": f"kiosk-{n % 7}",
                "query": query, "answer": ANSWER, "route": "curated", "intent": "order.cancel_order",
                "confidence": 0.93, "created_at": created, "language": "en", "reason": None,
            }  # fmt: skip
            status = "done" if pushed else "pending"
            outbox_rows.append(("turn", message_id, json.dumps(payload), status, created, created))
        if pushed:
            outbox_ids = json.dumps(list(range(len(outbox_rows) - turns, len(outbox_rows))))
            record_rows.append((conversation_id, 1, f"edge:s:k:{conversation_id}", "done", outbox_ids, at, at))
    with transaction(db):
        db.conn.executemany(
            "INSERT INTO conversations (id, user, inputs, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            conversation_rows,
        )
        db.conn.executemany(
            "INSERT INTO messages (id, conversation_id, user, query, answer, route, intent, confidence, latency_ms,"
            " sources, created_at, language) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            message_rows,
        )
        db.conn.executemany(
            "INSERT INTO outbox (kind, ref, payload, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            outbox_rows,
        )
        db.conn.executemany(
            "INSERT INTO pushed_records (conversation_id, part, end_user, status, outbox_ids, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            record_rows,
        )
    return ids


def count(db: sqlite_utils.Database, table: str) -> int:
    return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def conversation_ids(db: sqlite_utils.Database) -> set[str]:
    return {row[0] for row in db.execute("SELECT id FROM conversations").fetchall()}


@pytest.fixture
def db(tmp_path: Path) -> sqlite_utils.Database:
    database = open_database(tmp_path / "kiosk.sqlite3")
    yield database
    database.close()


def retention(db: sqlite_utils.Database, days: float = 90, **options: object) -> Retention:
    return Retention(db, days, clock=lambda: NOW, **{"pause_s": 0, **options})


def test_deletes_only_old_conversations_that_central_holds(db: sqlite_utils.Database) -> None:
    old = grow(db, 4, age_days=(100, 200), prefix="old")
    young = grow(db, 2, age_days=(0, 80), prefix="young")
    pending = grow(db, 1, age_days=(300, 300), pushed=False, prefix="pending")
    parked = grow(db, 1, age_days=(300, 300), prefix="parked")
    sending = grow(db, 1, age_days=(300, 300), prefix="sending")
    rated = grow(db, 1, age_days=(300, 300), prefix="rated")
    with transaction(db):
        db.execute("UPDATE outbox SET status = 'parked' WHERE ref LIKE 'parked%'")
        db.execute("UPDATE pushed_records SET status = 'sending' WHERE conversation_id LIKE 'sending%'")
        # feedback given after the push: its outbox row is not done, so the conversation stays
        db.execute("INSERT INTO feedback (message_id, user, rating) VALUES (?, 'kiosk-0', 'like')", [f"{rated[0]}-m0"])
        db.execute("INSERT INTO outbox (kind, ref, payload) VALUES ('feedback', ?, '{}')", [f"{rated[0]}-m0"])
        db.execute("INSERT INTO feedback (message_id, user, rating) VALUES (?, 'kiosk-0', 'like')", [f"{old[0]}-m1"])

    report = retention(db, batch=3).run()

    kept = {*young, *pending, *parked, *sending, *rated}
    assert conversation_ids(db) == kept
    assert (report.conversations, report.messages, report.outbox_rows, report.kept_unpushed) == (4, 12, 12, 4)
    remaining_messages = {row[0] for row in db.execute("SELECT DISTINCT conversation_id FROM messages").fetchall()}
    assert remaining_messages == kept
    assert count(db, "outbox") == 3 * len(kept) + 1
    assert count(db, "feedback") == 1
    assert {row[0] for row in db.execute("SELECT conversation_id FROM pushed_records").fetchall()} == kept - set(
        pending
    )


def hand_off(db: sqlite_utils.Database, conversation_id: str) -> str:
    """A hand-off in `conversation_id` as the store writes it (alert on: a `handoff` and an `alert` row),
    claimed and closed, back when the conversation happened; returns its id."""
    handoffs = Handoffs(db, clock=lambda: NOW - 300 * DAY_S)
    opening = Opening(conversation_id, "kiosk-0", f"{conversation_id}-m2", "k1", "en", "button", None, "help", True)
    with transaction(db):
        handoff_id = handoffs.open_in_transaction(opening)["id"]
    handoffs.claim(handoff_id, "Li")
    handoffs.close(handoff_id, "Li")
    return handoff_id


def rows_of(db: sqlite_utils.Database, handoff_id: str) -> list[tuple[str, str]]:
    return db.execute("SELECT kind, status FROM outbox WHERE ref = ? ORDER BY id", [handoff_id]).fetchall()


def test_an_old_conversation_waits_for_its_hand_off_and_alert_rows_then_goes_with_its_hand_offs(
    db: sqlite_utils.Database,
) -> None:
    late_close, alerting, finished = grow(db, 3, age_days=(300, 300))
    waiting = hand_off(db, late_close)  # closed after its record went: that change is still to push
    retrying = hand_off(db, alerting)  # on central, but the webhook has not taken the alert yet
    gone = hand_off(db, finished)
    with transaction(db):
        db.execute("UPDATE outbox SET status = 'done' WHERE kind IN ('handoff', 'alert')")
        db.execute(
            "UPDATE outbox SET status = 'pending' WHERE ref = ? AND json_extract(payload, '$.event') = ?",
            [waiting, "closed"],
        )
        db.execute("UPDATE outbox SET status = 'parked' WHERE ref = ? AND kind = 'alert'", [retrying])
    assert rows_of(db, gone) == [("handoff", "done"), ("alert", "done"), ("handoff", "done"), ("handoff", "done")]

    report = retention(db).run()

    assert conversation_ids(db) == {late_close, alerting}
    assert (report.conversations, report.kept_unpushed, report.handoffs) == (1, 2, 1)
    assert report.outbox_rows == 3 + 4  # its turns' rows and its hand-off's
    assert rows_of(db, gone) == []
    assert {row[0] for row in db.execute("SELECT id FROM handoffs").fetchall()} == {waiting, retrying}

    with transaction(db):
        db.execute("UPDATE outbox SET status = 'done'")  # pushed, and the alert sent after all
    report = retention(db).run()
    assert (report.conversations, report.handoffs, report.outbox_rows) == (2, 2, 2 * (3 + 4))
    assert [count(db, table) for table in ("conversations", "messages", "handoffs", "outbox")] == [0, 0, 0, 0]


def test_zero_days_keeps_everything(db: sqlite_utils.Database) -> None:
    grow(db, 3, age_days=(400, 500))
    assert retention(db, days=0).run().conversations == 0
    assert retention(db, days=0).run_if_due() is None
    assert count(db, "conversations") == 3


def test_a_shopper_coming_back_keeps_the_conversation(db: sqlite_utils.Database) -> None:
    [conversation_id] = grow(db, 1, age_days=(120, 120))
    store = ConversationStore(db, clock=lambda: NOW)
    store.record_turn(
        conversation_id, "kiosk-0", "and the refund?", "Three to five days.", route="curated", intent=None,
        confidence=None, latency_ms=1.0, prompt_tokens=0, completion_tokens=0, sources=[],
    )  # fmt: skip
    assert retention(db).run().conversations == 0
    assert conversation_ids(db) == {conversation_id}


def test_runs_at_most_hourly_and_a_failure_is_logged_not_raised(
    db: sqlite_utils.Database, caplog: pytest.LogCaptureFixture
) -> None:
    now = [NOW]
    job = Retention(db, 90, clock=lambda: now[0], pause_s=0)
    grow(db, 2, age_days=(100, 100))
    assert job.run_if_due().conversations == 2
    grow(db, 2, age_days=(100, 100), prefix="later")
    assert job.run_if_due() is None
    now[0] += 3600
    db.execute("DROP INDEX idx_outbox_ref")
    db.execute("ALTER TABLE outbox RENAME TO outbox_gone")  # a broken database: the run fails
    with caplog.at_level(logging.ERROR):
        assert job.run_if_due() is None
    assert "retention failed" in caplog.text


def test_the_sync_agent_runs_retention_even_while_central_is_unreachable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, central_url="http://central.invalid/v1", retention_days=30)
    database = open_database(settings.database_path)
    grow(database, 5, age_days=(40, 60))

    def offline(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route to central", request=request)

    client = DifyClient(settings.central_url, timeout_s=1, transport=httpx.MockTransport(offline))
    agent = SyncAgent(settings, database, client, clock=lambda: NOW)

    class OnePass(threading.Event):
        """The passes' first wait ends the run; the staff-alert loop beside them (its own thread) just waits."""

        def wait(self, timeout: float | None = None) -> bool:
            if threading.current_thread() is not threading.main_thread():
                return super().wait(timeout)
            self.set()
            return True

    agent.run_forever(OnePass())
    assert count(database, "conversations") == 0
    database.close()


def test_an_older_file_reuses_the_space_it_cannot_hand_back(tmp_path: Path) -> None:
    """A file created before retention existed has auto_vacuum=NONE: nothing is handed back without a VACUUM,
    but the freed pages hold new turns, so the file stops growing."""
    import sqlite3

    path = tmp_path / "old.sqlite3"
    sqlite3.connect(path).execute("CREATE TABLE before_retention (x)").connection.close()  # not a new file
    db = open_database(path)
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    grow(db, 2_000, age_days=(100, 200))
    report = retention(db).run()
    assert report.conversations == 2_000 and report.pages_reclaimed == 0 and report.free_pages > 0
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    grow(db, 1_000, age_days=(0, 10), prefix="new")
    assert db.execute("PRAGMA page_count").fetchone()[0] == pages
    db.close()


@pytest.mark.slow
def test_a_year_of_one_store_shrinks_to_the_retention_window(tmp_path: Path) -> None:
    """300,000 turns (100,000 conversations of 3 over 365 days), 1 % of the old ones never pushed: after 90
    days' retention the file holds the last quarter of the year plus the unpushed, and is that much smaller."""
    path = tmp_path / "kiosk.sqlite3"
    db = open_database(path)
    started = time.perf_counter()
    grow(db, 99_000, age_days=(0, 365))
    unpushed = grow(db, 1_000, age_days=(100, 365), pushed=False, prefix="unpushed")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    built_s = time.perf_counter() - started
    size_before = path.stat().st_size
    assert count(db, "messages") == 300_000

    # The server, meanwhile: a turn every 20 ms on its own connection, as `edge serve` beside the agent.
    server = open_database(path)
    store = ConversationStore(server, clock=lambda: NOW)
    waits: list[float] = []
    done = threading.Event()

    def answer_shoppers() -> None:
        while not done.is_set():
            began = time.perf_counter()
            store.record_turn(
                f"live-{len(waits)}", "kiosk-9", "is there parking?", "Yes, behind the store.",
                new_conversation={"inputs": {}}, route="curated", intent=None, confidence=None, latency_ms=1.0,
                prompt_tokens=0, completion_tokens=0, sources=[],
            )  # fmt: skip
            waits.append(time.perf_counter() - began)
            done.wait(0.02)

    shoppers = threading.Thread(target=answer_shoppers)
    shoppers.start()
    try:
        started = time.perf_counter()
        report = retention(db, days=90, pause_s=0.01).run()
        retention_s = time.perf_counter() - started
    finally:
        done.set()
        shoppers.join()
        server.close()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    size_after = path.stat().st_size

    window = sum(1 for n in range(99_000) if 365 * n / 98_999 < 90)
    assert report.conversations == 99_000 - window
    assert report.kept_unpushed == 1_000
    assert count(db, "conversations") == window + 1_000 + len(waits)
    assert count(db, "messages") == 3 * (window + 1_000) + len(waits)
    assert max(waits) < 2.0  # short transactions: a turn waits for one batch at most, never for the whole run
    assert set(unpushed) <= conversation_ids(db)
    assert report.pages_reclaimed > 0 and report.free_pages == 0
    assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert size_after < size_before * 0.4
    print(
        f"\n300,000 turns: built in {built_s:.1f} s, {size_before / 2**20:.0f} MB; retention (90 days) deleted "
        f"{report.conversations} conversations / {report.messages} turns in {retention_s:.1f} s, reclaimed "
        f"{report.pages_reclaimed} pages: {size_after / 2**20:.0f} MB; {len(waits)} turns written meanwhile, "
        f"slowest {max(waits) * 1000:.0f} ms"
    )
    db.close()
