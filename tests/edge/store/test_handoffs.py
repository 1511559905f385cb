"""The hand-off state machine (`edge.store.handoffs`): opened with its turn, claimed by the first colleague
only, closed, abandoned, each change queued for central -- on real SQLite files, with two connections
racing where two staff tablets (or the server and a second process) would."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from edge.store.conversations import ConversationStore
from edge.store.db import open_database
from edge.store.errors import Conflict, NotFound
from edge.store.handoffs import (
    ABANDONED,
    ABSTENTION,
    ALERT_ROW,
    BUTTON,
    CLAIMED,
    CLOSED,
    ERROR,
    HANDOFF_ROW,
    OPEN,
    Handoffs,
    Opening,
)

USER = "kiosk-abc"


class Clock:
    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "kiosk.sqlite3"


@pytest.fixture
def db(path: Path) -> Iterator[sqlite_utils.Database]:
    database = open_database(path)
    yield database
    database.close()


@pytest.fixture
def store(db: sqlite_utils.Database, clock: Clock) -> ConversationStore:
    return ConversationStore(db, clock=clock)


def opening(reason: str = BUTTON, *, alert: bool = False, language: str = "en", kiosk: str = "kiosk-1") -> Opening:
    """What the recorder passes; `record_turn` fills in the conversation, user and message."""
    return Opening("", "", "", kiosk, language, reason, None, "where is the toilet?", alert)


def handoff_turn(
    store: ConversationStore,
    conversation: str | None = None,
    *,
    reason: str = BUTTON,
    alert: bool = False,
    user: str = USER,
) -> tuple[str, dict[str, Any]]:
    """A turn that hands the shopper over (in a new conversation when `conversation` is None); returns
    (conversation id, the turn's message)."""
    new = None
    if conversation is None:
        conversation, new = str(uuid.uuid4()), {"inputs": {}}
    message = store.record_turn(
        conversation,
        user,
        "I need a person",
        "A colleague is coming.",
        new_conversation=new,
        route="handoff",
        intent=None,
        confidence=None,
        latency_ms=1.0,
        prompt_tokens=0,
        completion_tokens=0,
        sources=[],
        handoff=opening(reason, alert=alert),
    )
    return conversation, message


def changes(db: sqlite_utils.Database, handoff_id: str) -> list[str]:
    """The events queued for central for one hand-off, in order."""
    return [
        row["payload"]
        for row in db.query(
            "SELECT json_extract(payload, '$.event') AS payload FROM outbox WHERE kind = ? AND ref = ? ORDER BY id",
            [HANDOFF_ROW, handoff_id],
        )
    ]


# --- opening with the turn ------------------------------------------------------------------------


def test_a_hand_off_turn_opens_one_with_the_turn_and_queues_it(store: ConversationStore, clock: Clock) -> None:
    conversation, message = handoff_turn(store, reason=ABSTENTION, alert=True)
    [item] = store.handoffs.active()
    assert (item["conversation_id"], item["user"], item["message_id"]) == (conversation, USER, message["id"])
    assert (item["status"], item["reason"], item["opened_at"], item["calls"]) == (OPEN, ABSTENTION, clock.now, 1)
    assert item["claimed_at"] is None and item["waited_s"] == 0.0
    kinds = [row[0] for row in store.db.execute("SELECT kind FROM outbox ORDER BY id").fetchall()]
    assert kinds == ["turn", HANDOFF_ROW, ALERT_ROW]
    [alert] = store.db.query("SELECT ref, payload FROM outbox WHERE kind = ?", [ALERT_ROW])
    assert alert["ref"] == item["id"]


def test_a_turn_that_fails_takes_its_hand_off_with_it(store: ConversationStore, db: sqlite_utils.Database) -> None:
    conversation, _ = handoff_turn(store)  # a first, committed hand-off turn; then it is closed
    store.handoffs.close(store.handoffs.active()[0]["id"], "Li")
    before = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("messages", "outbox")}
    # The disk fills just as the alert row is written: the last write of the transaction.
    db.execute(
        "CREATE TEMP TRIGGER full_disk BEFORE INSERT ON outbox WHEN NEW.kind = 'alert'"
        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        handoff_turn(store, conversation, alert=True)
    assert store.handoffs.active() == []  # no hand-off without its turn ...
    after = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("messages", "outbox")}
    assert after == before  # ... and no turn, no outbox row without the hand-off
    assert [item["status"] for item in store.handoffs.of_conversation(conversation)] == [CLOSED]


def test_a_hand_off_that_cannot_be_stored_takes_its_turn_with_it(
    store: ConversationStore, db: sqlite_utils.Database
) -> None:
    bad = Opening("", "", "", "kiosk-1", None, BUTTON, None, "q")  # type: ignore[arg-type]  # language NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        store.record_turn(
            "conv-x", USER, "q", "a", new_conversation={"inputs": {}}, route="handoff", intent=None,
            confidence=None, latency_ms=1.0, prompt_tokens=0, completion_tokens=0, sources=[], handoff=bad,
        )  # fmt: skip
    tables = ("conversations", "messages", "handoffs", "outbox")
    assert {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables} == dict.fromkeys(tables, 0)


def test_a_second_call_while_one_is_active_is_counted_on_it(store: ConversationStore, clock: Clock) -> None:
    conversation, _ = handoff_turn(store)
    [first] = store.handoffs.active()
    clock.now += 20
    handoff_turn(store, conversation, reason=ERROR)
    store.handoffs.claim(first["id"], "Li")
    clock.now += 5
    handoff_turn(store, conversation)  # claimed is active too
    [item] = store.handoffs.of_conversation(conversation)
    assert (item["id"], item["calls"], item["reason"], item["opened_at"]) == (
        first["id"],
        3,
        BUTTON,
        first["opened_at"],
    )
    assert changes(store.db, item["id"]) == [OPEN, "called", CLAIMED, "called"]
    store.handoffs.close(item["id"], "Li")
    clock.now += 5
    handoff_turn(store, conversation)  # after the close, a new call is a new hand-off
    assert [h["status"] for h in store.handoffs.of_conversation(conversation)] == [CLOSED, OPEN]


def test_two_connections_recording_hand_off_turns_at_once_open_one(path: Path, clock: Clock) -> None:
    """The server's writer and a second process (or two kiosk requests) on one WAL file: the partial unique
    index and the immediate transaction leave one active hand-off, every call counted on it."""
    setup = open_database(path)
    conversation = ConversationStore(setup, clock=clock).create(USER, {})["id"]
    setup.close()
    databases = [open_database(path) for _ in range(2)]
    stores = [ConversationStore(database, clock=clock) for database in databases]
    rounds = 15
    gate = threading.Barrier(2)
    errors: list[BaseException] = []

    def record(store: ConversationStore) -> None:
        try:
            for _ in range(rounds):
                gate.wait(5)
                handoff_turn(store, conversation)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    [item] = stores[0].handoffs.of_conversation(conversation)
    assert item["status"] == OPEN and item["calls"] == 2 * rounds
    for database in databases:
        database.close()


# --- claim, close, abandon ------------------------------------------------------------------------


def test_claim_then_close_records_who_and_when(store: ConversationStore, clock: Clock) -> None:
    handoff_turn(store)
    [item] = store.handoffs.active()
    opened = item["opened_at"]
    clock.now += 12.5
    claimed = store.handoffs.claim(item["id"], "  Li\x07 ")
    assert (claimed["status"], claimed["claimed_by"], claimed["claimed_at"]) == (CLAIMED, "Li", opened + 12.5)
    assert claimed["time_to_claim_s"] == 12.5 and claimed["waited_s"] == 12.5
    clock.now += 100
    closed = store.handoffs.close(item["id"], "Wang")
    assert (closed["status"], closed["closed_by"], closed["time_to_close_s"]) == (CLOSED, "Wang", 112.5)
    assert closed["waited_s"] == 12.5  # the wait ended with the claim
    assert store.handoffs.active() == [] and store.handoffs.counts()[CLOSED] == 1
    assert changes(store.db, item["id"]) == [OPEN, CLAIMED, CLOSED]


def test_close_without_claim_and_close_twice_is_a_no_op(store: ConversationStore, clock: Clock) -> None:
    handoff_turn(store)
    [item] = store.handoffs.active()
    clock.now += 30
    closed = store.handoffs.close(item["id"], "Li")
    assert closed["claimed_at"] is None and closed["waited_s"] == 30.0
    rev = store.handoffs.revision()
    clock.now += 30
    again = store.handoffs.close(item["id"], "Wang")
    assert again == closed  # nothing moved: not the second name, not the time
    assert store.handoffs.revision() == rev
    assert changes(store.db, item["id"]) == [OPEN, CLOSED]


def test_claiming_a_closed_one_is_refused_with_who_closed_it(store: ConversationStore) -> None:
    handoff_turn(store)
    [item] = store.handoffs.active()
    store.handoffs.close(item["id"], "Wang")
    with pytest.raises(Conflict, match="closed by Wang"):
        store.handoffs.claim(item["id"], "Li")
    assert store.handoffs.get(item["id"])["claimed_by"] is None


def test_claim_and_close_after_abandon_are_refused(store: ConversationStore, clock: Clock) -> None:
    conversation, _ = handoff_turn(store)
    [item] = store.handoffs.active()
    clock.now += 40
    [abandoned] = store.handoffs.abandon_user(USER)  # "Start over" at the kiosk
    assert (abandoned["status"], abandoned["abandoned_at"], abandoned["waited_s"]) == (ABANDONED, clock.now, 40.0)
    rev = store.handoffs.revision()
    with pytest.raises(Conflict, match="shopper has left") as claim:
        store.handoffs.claim(item["id"], "Li")
    assert claim.value.status == 409 and claim.value.code == "conflict"
    with pytest.raises(Conflict, match="shopper has left"):
        store.handoffs.close(item["id"], "Li")
    assert store.handoffs.get(item["id"]) == abandoned
    assert store.handoffs.revision() == rev
    assert changes(store.db, item["id"]) == [OPEN, ABANDONED]
    assert store.handoffs.abandon_conversation(conversation) == []  # nothing open is left


def test_abandon_leaves_a_claimed_one_claimed(store: ConversationStore) -> None:
    conversation, _ = handoff_turn(store)
    [item] = store.handoffs.active()
    store.handoffs.claim(item["id"], "Li")
    assert store.handoffs.abandon_user(USER) == []
    store.delete(conversation, USER)
    assert store.handoffs.get(item["id"])["status"] == CLAIMED


def test_deleting_the_conversation_abandons_its_open_hand_off(store: ConversationStore) -> None:
    conversation, _ = handoff_turn(store)
    store.delete(conversation, USER)
    [item] = store.handoffs.of_conversation(conversation)
    assert item["status"] == ABANDONED


def test_an_unknown_hand_off_is_not_found(store: ConversationStore) -> None:
    for move in (store.handoffs.claim, store.handoffs.close):
        with pytest.raises(NotFound):
            move("no-such-id", "Li")


# --- two staff at once ----------------------------------------------------------------------------


STAFF = ("Li", "Wang")


def two_tablets_at_once(path: Path, rounds: int, press: Callable[[Handoffs, str, str], Any]) -> tuple[
    list[sqlite_utils.Database], list[str], dict[int, list[tuple[str, Any]]]
]:  # fmt: skip
    """`rounds` open hand-offs; two threads, each with its own connection to the WAL file as two requests
    have, press on each together (a barrier per round). Returns the connections, the hand-offs' ids and
    each round's `(name, what press returned or raised)`."""
    databases = [open_database(path) for _ in range(2)]
    stores = [ConversationStore(database) for database in databases]
    handoff_ids = []
    for _ in range(rounds):
        conversation, _ = handoff_turn(stores[0])
        [item] = stores[0].handoffs.of_conversation(conversation)
        handoff_ids.append(item["id"])
    gate = threading.Barrier(2)
    outcomes: dict[int, list[tuple[str, Any]]] = {n: [] for n in range(rounds)}

    def tablet(index: int) -> None:
        for n, handoff_id in enumerate(handoff_ids):
            gate.wait(5)
            try:
                outcomes[n].append((STAFF[index], press(stores[index].handoffs, handoff_id, STAFF[index])))
            except Conflict as exc:
                outcomes[n].append((STAFF[index], exc))

    threads = [threading.Thread(target=tablet, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return databases, handoff_ids, outcomes


def test_two_staff_claiming_at_once_on_two_connections_one_wins(path: Path) -> None:
    """Two tablets press "I'm coming" together: every time exactly one claim wins, and the other is told
    who has it."""
    databases, handoff_ids, outcomes = two_tablets_at_once(path, 40, Handoffs.claim)
    for n, handoff_id in enumerate(handoff_ids):
        won = [(name, got) for name, got in outcomes[n] if not isinstance(got, Conflict)]
        lost = [(name, got) for name, got in outcomes[n] if isinstance(got, Conflict)]
        assert len(won) == 1 and len(lost) == 1, outcomes[n]
        winner = won[0][0]
        assert won[0][1]["claimed_by"] == winner
        assert lost[0][1].message == f"Already claimed by {winner}."
        stored = ConversationStore(databases[1]).handoffs.get(handoff_id)
        assert (stored["status"], stored["claimed_by"]) == (CLAIMED, winner)
        assert changes(databases[0], handoff_id) == [OPEN, CLAIMED]  # one claim queued, not two
    for database in databases:
        database.close()


def test_two_staff_pressing_done_at_once_close_it_once(path: Path) -> None:
    """Both "Done"s succeed (closing twice is no error), but only one of them closed it: the transitions
    counter and the queued change count one."""
    databases, handoff_ids, outcomes = two_tablets_at_once(path, 30, Handoffs.close_once)
    for n, handoff_id in enumerate(handoff_ids):
        assert all(item["status"] == CLOSED for _, (item, _) in outcomes[n]), outcomes[n]
        assert sorted(closed for _, (_, closed) in outcomes[n]) == [False, True], outcomes[n]
        assert changes(databases[0], handoff_id) == [OPEN, CLOSED]
    for database in databases:
        database.close()


# --- restart --------------------------------------------------------------------------------------


def test_open_hand_offs_survive_a_restart_of_the_box(path: Path) -> None:
    clock = Clock()
    db = open_database(path)
    store = ConversationStore(db, clock=clock)
    conversation, _ = handoff_turn(store)
    waiting, _ = handoff_turn(store, user="kiosk-other")
    [first] = store.handoffs.of_conversation(conversation)
    store.handoffs.claim(store.handoffs.of_conversation(waiting)[0]["id"], "Li")
    rev = store.handoffs.revision()
    db.close()  # power cut, reboot, `edge serve` starts again

    clock.now += 300
    reopened = open_database(path)
    fresh = ConversationStore(reopened, clock=clock)
    [again, claimed] = fresh.handoffs.active()  # longest waiting first
    assert again["id"] == first["id"] and again["status"] == OPEN
    assert again["opened_at"] == first["opened_at"] and again["waited_s"] == 300.0  # the wait went on
    assert claimed["claimed_by"] == "Li" and fresh.handoffs.revision() == rev
    won = fresh.handoffs.claim(first["id"], "Wang")
    assert won["time_to_claim_s"] == 300.0 and fresh.handoffs.revision() > rev
    reopened.close()


# --- every sequence -------------------------------------------------------------------------------

ORDER = {OPEN: 0, CLAIMED: 1, CLOSED: 2, ABANDONED: 2}
MOVES = {(OPEN, CLAIMED), (OPEN, CLOSED), (OPEN, ABANDONED), (CLAIMED, CLOSED)}


class HandoffMachine(RuleBasedStateMachine):
    """Openings, second calls, claims, closes and abandons in any order, against a model of what each
    should do; the store's rows must agree with the model after every step."""

    conversations = Bundle("conversations")

    @initialize()
    def start(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.clock = Clock()
        self.db = open_database(Path(self.tmp.name) / "kiosk.sqlite3")
        self.store = ConversationStore(self.db, clock=self.clock)
        self.model: dict[str, dict[str, Any]] = {}  # hand-off id -> {status, conversation, user, calls}
        self.seen: dict[str, dict[str, Any]] = {}  # the last stored row of each hand-off
        self.revision = 0
        self.events = 0  # changes the model expects queued for central
        self.users = ["kiosk-a", "kiosk-b"]

    def teardown(self) -> None:
        if hasattr(self, "db"):
            self.db.close()
            self.tmp.cleanup()

    def _active(self, conversation: str) -> str | None:
        found = [
            h for h, m in self.model.items() if m["conversation"] == conversation and m["status"] in (OPEN, CLAIMED)
        ]
        assert len(found) <= 1
        return found[0] if found else None

    def _changed(self) -> None:
        revision = self.store.handoffs.revision()
        assert revision > self.revision, "a change must bump the revision"
        self.revision = revision

    def _unchanged(self) -> None:
        assert self.store.handoffs.revision() == self.revision

    @rule(target=conversations, user=st.sampled_from([0, 1]), reason=st.sampled_from([BUTTON, ABSTENTION, ERROR]))
    def new_conversation_hands_over(self, user: int, reason: str) -> str:
        conversation, _ = handoff_turn(self.store, reason=reason, user=self.users[user])
        [item] = self.store.handoffs.of_conversation(conversation)
        self.model[item["id"]] = {"status": OPEN, "conversation": conversation, "user": self.users[user], "calls": 1}
        self.events += 1
        self._changed()
        return conversation

    @rule(conversation=conversations)
    def calls_again(self, conversation: str) -> None:
        user = next(m["user"] for m in self.model.values() if m["conversation"] == conversation)
        active = self._active(conversation)
        handoff_turn(self.store, conversation, user=user)
        self.events += 1  # a second call is a change too: central's record carries the count
        if active is not None:
            self.model[active]["calls"] += 1
        else:
            ids = {h["id"] for h in self.store.handoffs.of_conversation(conversation)} - set(self.model)
            [new] = ids
            self.model[new] = {"status": OPEN, "conversation": conversation, "user": user, "calls": 1}
        self._changed()

    @rule(conversation=conversations, staff=st.sampled_from(["Li", "Wang"]))
    def claim(self, conversation: str, staff: str) -> None:
        handoff_id = self._latest(conversation)
        expected = self.model[handoff_id]
        if expected["status"] == OPEN:
            assert self.store.handoffs.claim(handoff_id, staff)["claimed_by"] == staff
            expected.update(status=CLAIMED, claimed_by=staff)
            self.events += 1
            self._changed()
        else:
            with pytest.raises(Conflict) as refused:
                self.store.handoffs.claim(handoff_id, staff)
            if expected["status"] == CLAIMED:
                assert refused.value.message == f"Already claimed by {expected['claimed_by']}."
            self._unchanged()

    @rule(conversation=conversations, staff=st.sampled_from(["Li", "Wang"]))
    def close(self, conversation: str, staff: str) -> None:
        handoff_id = self._latest(conversation)
        expected = self.model[handoff_id]
        if expected["status"] == ABANDONED:
            with pytest.raises(Conflict):
                self.store.handoffs.close(handoff_id, staff)
            self._unchanged()
        elif expected["status"] == CLOSED:
            assert self.store.handoffs.close(handoff_id, staff)["status"] == CLOSED
            self._unchanged()
        else:
            assert self.store.handoffs.close(handoff_id, staff)["closed_by"] == staff
            expected["status"] = CLOSED
            self.events += 1
            self._changed()

    @rule(user=st.sampled_from([0, 1]))
    def kiosk_reset(self, user: int) -> None:
        left = [h for h, m in self.model.items() if m["user"] == self.users[user] and m["status"] == OPEN]
        abandoned = self.store.handoffs.abandon_user(self.users[user])
        assert sorted(item["id"] for item in abandoned) == sorted(left)
        for handoff_id in left:
            self.model[handoff_id]["status"] = ABANDONED
            self.events += 1
        if left:
            self._changed()
        else:
            self._unchanged()

    @rule(seconds=st.sampled_from([0.0, 0.25, 7.0, 3600.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    def _latest(self, conversation: str) -> str:
        return [h for h, m in self.model.items() if m["conversation"] == conversation][-1]

    @invariant()
    def rows_agree_with_the_model(self) -> None:
        if not hasattr(self, "db"):
            return
        rows = {row["id"]: row for row in self.db.query("SELECT * FROM handoffs")}
        assert set(rows) == set(self.model)
        active_per_conversation: dict[str, int] = {}
        for handoff_id, row in rows.items():
            expected = self.model[handoff_id]
            assert (row["status"], row["calls"]) == (expected["status"], expected["calls"])
            if row["status"] in (OPEN, CLAIMED):
                active_per_conversation[row["conversation_id"]] = (
                    active_per_conversation.get(row["conversation_id"], 0) + 1
                )
            # times ordered, and set exactly for the states that have them
            assert row["opened_at"] <= (row["claimed_at"] or row["opened_at"]) <= (row["closed_at"] or float("inf"))
            assert (row["claimed_at"] is not None) == (row["claimed_by"] is not None)
            assert (row["closed_at"] is not None) == (row["status"] == CLOSED)
            assert (row["abandoned_at"] is not None) == (row["status"] == ABANDONED)
            if row["abandoned_at"] is not None:
                assert row["abandoned_at"] >= row["opened_at"] and row["claimed_at"] is None
            # status only moves forward, by an allowed move; each change of a row bumps its rev
            before = self.seen.get(handoff_id)
            if before is not None:
                assert ORDER[row["status"]] >= ORDER[before["status"]]
                if row["status"] != before["status"]:
                    assert (before["status"], row["status"]) in MOVES
                    assert row["rev"] > before["rev"]
                if row != before:
                    assert row["rev"] > before["rev"]
                else:
                    assert row["rev"] == before["rev"]
            self.seen[handoff_id] = row
        assert all(count <= 1 for count in active_per_conversation.values())
        revs = [row["rev"] for row in rows.values()]
        assert len(revs) == len(set(revs))  # every change has its own revision
        if rows:
            assert max(revs) == self.store.handoffs.revision()
        # one queued change per change (and per second call), never one for a refusal or a repeated close
        queued = self.db.execute("SELECT count(*) FROM outbox WHERE kind = ?", [HANDOFF_ROW]).fetchone()[0]
        assert queued == self.events


TestHandoffMachine = HandoffMachine.TestCase
TestHandoffMachine.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
