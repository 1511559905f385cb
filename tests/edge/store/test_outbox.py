import pytest
import sqlite_utils

from edge.store.db import memory_database
from edge.store.errors import NotFound
from edge.store.outbox import Outbox


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make() -> tuple[Outbox, FakeClock, sqlite_utils.Database]:
    db, clock = memory_database(), FakeClock()
    return Outbox(db, clock=clock), clock, db


def test_enqueue_and_claim_oldest_first() -> None:
    outbox, _, _ = make()
    ids = [outbox.enqueue("turn", f"m{n}", {"n": n}) for n in range(3)]
    assert outbox.depth() == 3
    claimed = outbox.claim(2)
    assert [row["id"] for row in claimed] == ids[:2]
    assert [row["payload"] for row in claimed] == [{"n": 0}, {"n": 1}]
    assert claimed[0]["status"] == "pending"
    assert claimed[0]["attempts"] == 0
    assert outbox.claim(0) == outbox.claim(-1) == []


def test_claim_leases_rows_until_the_lease_runs_out() -> None:
    outbox, clock, _ = make()
    first, second = outbox.enqueue("turn", "a", {}), outbox.enqueue("turn", "b", {})
    assert [row["id"] for row in outbox.claim(1, lease=30)] == [first]
    assert [row["id"] for row in outbox.claim(10, lease=30)] == [second]
    assert outbox.claim(10) == []
    assert outbox.depth() == 2  # leased rows are still owed
    clock.now += 30
    assert [row["id"] for row in outbox.claim(10)] == [first, second]


def test_mark_done_removes_from_depth_but_keeps_the_row() -> None:
    outbox, _, db = make()
    row_id = outbox.enqueue("feedback", "m1", {"rating": "like"})
    outbox.mark_done(row_id)
    assert outbox.depth() == 0
    assert outbox.claim(10) == []
    done = outbox.get(row_id)
    assert done is not None and done["status"] == "done"
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1


def test_mark_failed_backs_off_then_parks() -> None:
    outbox, clock, db = make()
    row_id = outbox.enqueue("turn", "m1", {})
    outbox.claim(1)
    outbox.mark_failed(row_id, "502 Bad Gateway", retry_in=10, max_attempts=3)
    row = outbox.get(row_id)
    assert row is not None
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 1, "502 Bad Gateway")
    clock.now += 9
    assert outbox.claim(1) == []
    clock.now += 1
    assert [r["id"] for r in outbox.claim(1)] == [row_id]

    outbox.mark_failed(row_id, "timeout", retry_in=10, max_attempts=3)
    assert outbox.parked() == []
    outbox.mark_failed(row_id, "400 invalid_param: query is required", retry_in=10, max_attempts=3)
    [parked] = outbox.parked()
    assert (parked["id"], parked["status"], parked["attempts"]) == (row_id, "parked", 3)
    assert parked["last_error"] == "400 invalid_param: query is required"
    assert outbox.depth() == 0
    clock.now += 3600
    assert outbox.claim(10) == []
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1


def test_max_attempts_of_one_parks_at_once() -> None:
    outbox, _, _ = make()
    row_id = outbox.enqueue("turn", "m1", {})
    outbox.mark_failed(row_id, "unrecoverable", retry_in=0, max_attempts=1)
    assert [row["id"] for row in outbox.parked()] == [row_id]


def test_unknown_rows_are_not_found() -> None:
    outbox, _, _ = make()
    with pytest.raises(NotFound):
        outbox.mark_done(42)
    with pytest.raises(NotFound):
        outbox.mark_failed(42, "x", retry_in=1, max_attempts=3)
    assert outbox.get(42) is None


def test_a_lease_is_all_or_none_names_its_holder_and_runs_out() -> None:
    outbox, clock, _ = make()
    ids = [outbox.enqueue("turn", f"m{n}", {}) for n in range(2)]
    assert outbox.lease(ids, "agent-a", 30)
    assert outbox.holder(ids, besides="agent-b") == "agent-a" and outbox.holder(ids, besides="agent-a") is None
    assert not outbox.lease(ids, "agent-b", 30)  # taken: nothing changes
    assert outbox.leases() == [{"holder": "agent-a", "rows": 2, "until": clock.now + 30}]
    assert outbox.claim(10) == []  # not due while leased
    clock.now += 30
    assert outbox.holder(ids, besides="agent-b") is None and outbox.leases() == []  # ran out: free again
    assert outbox.lease(ids, "agent-b", 30)
    assert not outbox.renew(ids, "agent-a", 30)  # a (late) agent-a must not act on them any more
    assert outbox.renew(ids, "agent-b", 60) and outbox.holder(ids, besides="x") == "agent-b"


def test_rows_backing_off_are_not_leased_and_done_rows_leave_the_lease() -> None:
    outbox, clock, _ = make()
    first, second = outbox.enqueue("turn", "a", {}), outbox.enqueue("turn", "b", {})
    outbox.mark_failed(first, "502", retry_in=10, max_attempts=5)
    assert not outbox.lease([first, second], "agent-a", 30)
    clock.now += 10
    assert outbox.lease([first, second], "agent-a", 30)
    outbox.mark_done(first)
    outbox.mark_failed(second, "timeout", retry_in=5, max_attempts=5)
    assert outbox.leases() == [] and outbox.holder([first, second], besides="agent-b") is None


def test_release_gives_rows_back_without_counting_an_attempt() -> None:
    outbox, clock, _ = make()
    row_id = outbox.enqueue("turn", "a", {})
    assert outbox.lease([row_id], "agent-a", 30)
    outbox.release([row_id], "agent-a", retry_at=clock.now + 5, note="not listed yet")
    row = outbox.get(row_id)
    assert row is not None and (row["attempts"], row["leased_by"], row["last_error"]) == (0, None, "not listed yet")
    assert outbox.claim(1) == []
    clock.now += 5
    assert [r["id"] for r in outbox.claim(1)] == [row_id]


def test_requeue_brings_parked_rows_back_by_reason() -> None:
    outbox, _, _ = make()
    refused, lost = outbox.enqueue("turn", "a", {}), outbox.enqueue("turn", "b", {})
    outbox.mark_failed(refused, "400 invalid_param transcript is too long", retry_in=0, max_attempts=1)
    outbox.mark_failed(lost, "ReadTimeout", retry_in=0, max_attempts=1)
    assert outbox.requeue(reason="TOO LONG") == [refused]
    row = outbox.get(refused)
    assert row is not None and (row["status"], row["attempts"], row["next_attempt_at"]) == ("pending", 0, 0)
    assert [r["id"] for r in outbox.parked()] == [lost]
    assert outbox.requeue() == [lost] and outbox.parked() == [] and outbox.depth() == 2
