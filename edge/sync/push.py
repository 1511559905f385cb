"""Push, edge → central: each conversation, once idle, becomes one record on central -- sent once.

Dify has no idempotency keys and no import of past conversations (spec §7, §8(a)), so the record is
one run of an ingest workflow app whose `user` is derived from the store, the kiosk, the
conversation and the record's part number. The record is written ahead (`pushed_records`, status
`sending`, with the exact outbox rows it carries) before anything is sent; every attempt first looks
the `user` up on central, so a retry after a lost response finds the first run instead of creating a
second. A run that may exist -- still `running`, or sent less than `settle_s` ago and not listed yet --
is waited for, never re-sent. Outbox rows are marked done only after central confirmed.

Two agents can share the database (the `edge sync run` sidecar and an operator's `edge sync once`):
a record's outbox rows are leased to one of them while it works, and the other says who has them.

Turns that arrive after a conversation was pushed (the shopper came back), and feedback on turns
already pushed, go in its next part. So do hand-off changes: a conversation whose hand-off is open or
claimed waits (`handoff_hold_s`, from the opening) so that one record usually carries the whole story --
reason, claim, close and waits -- and a change after the push (a late close) goes in the next part.
Staff alerts (`alert` rows) are not this stream's: the alert sender owns them.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlite_utils

from edge.store.db import connection_lock, transaction
from edge.store.errors import NotFound
from edge.store.handoffs import ACTIVE, HANDOFF_ROW, Handoffs
from edge.store.outbox import Outbox
from edge.sync.client import DifyClient, Rejected, SyncError, Unreachable

log = logging.getLogger(__name__)
SENDING, DONE, PARKED = "sending", "done", "parked"
TURN, FEEDBACK, HANDOFF = "turn", "feedback", HANDOFF_ROW
KINDS = (TURN, FEEDBACK, HANDOFF)  # the outbox rows a record carries (never `alert`: the alert sender's)
_KIND_MARKS = ", ".join("?" for _ in KINDS)
HANDOFF_FIELDS = (
    "id", "kiosk_id", "language", "reason", "detail", "status", "opened_at", "claimed_at", "claimed_by",
    "closed_at", "closed_by", "abandoned_at", "calls", "time_to_claim_s", "time_to_close_s", "waited_s",
)  # fmt: skip
LANDED, RUNNING, ABSENT = "landed", "running", "absent"
FINISHED_OK = ("succeeded", "partial-succeeded")  # the run exists with its inputs: the record landed
UNFINISHED = ("running", "paused")


@dataclass(frozen=True)
class Lookup:
    """What central holds for one record: `landed` (`ref`: the run or document id), `running` (it exists but
    has not finished: wait for it), or `absent`."""

    state: str
    ref: str | None = None


class RecordSink(Protocol):
    """Where a conversation record goes. The default is a workflow run; a chain without an ingest app can
    plug in another sink (a knowledge document per conversation, an export file) with the same contract:
    `find` must say whether `end_user`'s record landed or may still land (`session` is the record's
    `edge_session_id`, for sinks that search by content), `send` must create it once."""

    def find(self, end_user: str, session: str) -> Lookup: ...

    def send(self, end_user: str, record: dict[str, Any]) -> str: ...


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _session_of(entry: dict[str, Any]) -> str | None:
    by = entry.get("created_by_end_user")
    return by.get("session_id") if isinstance(by, dict) else None


def lookup_runs(entries: list[dict[str, Any]], end_user: str) -> Lookup:
    """The state of `end_user`'s record from workflow-log entries: only an exact end-user match counts (an
    entry without an end user was started by an account, or is another user's on a server that ignored the
    filter). A finished run wins over a running one; failed or stopped runs only are a refusal."""
    ours = [entry for entry in entries if isinstance(entry, dict) and _session_of(entry) == end_user]
    runs = [entry.get("workflow_run") or {} for entry in ours]
    for run, entry in zip(runs, ours, strict=True):
        if run.get("status") in FINISHED_OK:
            return Lookup(LANDED, str(run.get("id") or entry.get("id")))
    for run, entry in zip(runs, ours, strict=True):
        if run.get("status") in UNFINISHED or run.get("status") is None:
            return Lookup(RUNNING, str(run.get("id") or entry.get("id")))
    if runs:
        run = runs[0]
        raise Rejected(f"central's ingest workflow {run.get('status')} for {end_user}: {run.get('error')}")
    return Lookup(ABSENT)


class WorkflowSink:
    """One `POST /workflows/run` per record on the ingest workflow app; `GET /workflows/logs` to find it.

    The logs are filtered on the run's end user; Dify releases before that filter ignore it and answer
    every user's latest runs. Entries of other users in the answer show it: from then on the run is
    looked up by its `edge_session_id` (a `keyword` search on the run's inputs, read to the last page).
    """

    def __init__(self, client: DifyClient, ingest_key: str) -> None:
        self.client = client
        self.ingest_key = ingest_key
        self.user_filter = True  # False once central was seen ignoring `created_by_end_user_session_id`

    def find(self, end_user: str, session: str) -> Lookup:
        if self.user_filter:
            entries = self.client.workflow_runs_by_user(self.ingest_key, end_user)
            if all(isinstance(entry, dict) and _session_of(entry) == end_user for entry in entries):
                return lookup_runs(entries, end_user)
            self.user_filter = False
            log.warning(
                "central ignores the end-user filter of /workflows/logs (an older Dify): looking runs up by keyword"
            )
        return lookup_runs(self.client.workflow_runs_by_keyword(self.ingest_key, session), end_user)

    def send(self, end_user: str, record: dict[str, Any]) -> str:
        # The input variables of spec §8(a) A3; the ingest app declares them (times as ISO 8601 text).
        inputs = {
            "store_id": record["store_id"],
            "kiosk_id": record["kiosk_id"],
            "edge_session_id": session_id(record["conversation_id"], record["part"]),
            "started_at": _iso(record["started_at"]),
            "ended_at": _iso(record["ended_at"]),
            "transcript": json.dumps(record, ensure_ascii=False),
        }
        body = self.client.run_workflow(self.ingest_key, end_user, inputs)
        data = body.get("data") or {}
        if data.get("status") not in (None, *FINISHED_OK):
            raise Rejected(f"central's ingest workflow {data.get('status')}: {data.get('error')}")
        return str(body.get("workflow_run_id") or data.get("id"))


class DocumentSink:
    """A chain without an ingest workflow: one knowledge document per record in a transcripts dataset
    (spec §8(a) A4), named after the record's end user and looked up by that name before creating."""

    def __init__(self, client: DifyClient, dataset_key: str, dataset_id: str) -> None:
        self.client = client
        self.dataset_key = dataset_key
        self.dataset_id = dataset_id

    def find(self, end_user: str, session: str) -> Lookup:
        found = self.client.documents_named(self.dataset_key, self.dataset_id, end_user)
        return Lookup(LANDED, str(found[0]["id"])) if found else Lookup(ABSENT)

    def send(self, end_user: str, record: dict[str, Any]) -> str:
        lines = [
            f"{turn['created_at']} [{turn['route']}] Q: {turn['query']}\nA: {turn['answer']}"
            for turn in record["turns"]
        ]
        lines += [
            f"{item['updated_at']} feedback on {item['message_id']}: {item['rating'] or 'revoked'}"
            + (f" {item['content']}" if item["content"] else "")
            for item in record["feedback"]
        ]
        header = json.dumps({k: v for k, v in record.items() if k not in ("turns", "feedback")}, ensure_ascii=False)
        body = self.client.create_document(
            self.dataset_key, self.dataset_id, end_user, header + "\n\n" + "\n\n".join(lines)
        )
        return str((body.get("document") or {}).get("id"))


@dataclass(frozen=True)
class PushPolicy:
    store_id: str
    kiosk_id: str
    idle_s: float
    max_attempts: int
    backoff_base_s: float = 5.0
    backoff_max_s: float = 600.0
    settle_s: float = 60.0  # after a send that may have reached central, how long its run may stay unlisted
    wait_s: float = 10.0  # how long one pass waits for a run that may exist before leaving it for later
    poll_s: float = 0.5
    lease_s: float = 120.0  # how long a record's rows stay this agent's; renewed while waiting and before the send
    handoff_hold_s: float = 1800.0  # a conversation with an active hand-off opened less long ago waits for it


@dataclass
class PushReport:
    sent: int = 0
    found: int = 0  # already on central: a retry after a lost response
    waiting: int = 0  # a run that may exist on central is not finished or not listed yet: not re-sent
    failed: int = 0
    parked: int = 0
    turns: int = 0
    feedback: int = 0
    handoffs: int = 0  # hand-off changes (opened, claimed, closed, abandoned, called again) carried
    busy_rows: int = 0  # outbox rows another sync agent is working on
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def session_id(conversation_id: str, part: int) -> str:
    """The record's `edge_session_id`: the conversation, and the part after the first."""
    return conversation_id if part == 1 else f"{conversation_id}:{part}"


def end_user(policy: PushPolicy, conversation_id: str, part: int) -> str:
    """Stable Dify `user` of one record: the same on every retry, distinct for every record."""
    return f"edge:{policy.store_id}:{policy.kiosk_id}:{session_id(conversation_id, part)}"


def agent_id() -> str:
    """Names a pusher in its leases, so a second agent can say who is working."""
    return f"pid {os.getpid()} on {socket.gethostname()} ({uuid.uuid4().hex[:6]})"


def requeue_parked(
    db: sqlite_utils.Database, *, reason: str | None = None, clock: Callable[[], float] = time.time
) -> int:
    """`edge sync retry`: parked outbox rows (all, or those whose reason contains `reason`) back to pending,
    and the records that carried them back to `sending` -- the same record, so the look-up before its next
    send still finds a run that landed after all. Returns how many rows were re-queued."""
    with transaction(db):
        ids = set(Outbox(db, clock=clock).requeue(reason=reason))
        if ids:
            for conversation_id, part, carried in db.execute(
                "SELECT conversation_id, part, outbox_ids FROM pushed_records WHERE status = ?", [PARKED]
            ).fetchall():
                if ids & set(json.loads(carried)):
                    db.execute(
                        "UPDATE pushed_records SET status = ?, last_error = NULL, updated_at = ?"
                        " WHERE conversation_id = ? AND part = ?",
                        [SENDING, clock(), conversation_id, part],
                    )
    return len(ids)


def backoff(attempts: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: spreads hundreds of boxes coming back online at once."""
    return rng.uniform(0, min(max_s, base_s * 2 ** max(0, attempts)))


class Pusher:
    def __init__(
        self,
        db: sqlite_utils.Database,
        sink: RecordSink,
        policy: PushPolicy,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        *,
        holder: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.db = db
        self.sink = sink
        self.policy = policy
        self.clock = clock
        self.rng = rng or random.Random()
        self.holder = holder or agent_id()
        self.sleep = sleep
        self.outbox = Outbox(db, clock=clock)

    def run(self, limit: int = 500) -> PushReport:
        """Push every idle conversation with pending turns or feedback (and finish records left `sending`)."""
        report = PushReport()
        for conversation_id in self._due(limit):
            self._push(conversation_id, report)  # AuthFailed stops the whole stream; rows stay pending
        for lease in self.outbox.leases():
            if lease["holder"] != self.holder:
                report.busy_rows += lease["rows"]
                report.notes.append(
                    f"another sync agent ({lease['holder']}) is pushing {lease['rows']} outbox row(s) until"
                    f" {_iso(lease['until'])}: this pass left them to it"
                )
        return report

    # --- choosing work --------------------------------------------------------------------------

    def _due(self, limit: int) -> list[str]:
        """Conversations with pending rows due now whose last turn is older than the idle time, and whose
        active hand-off (if any) was opened `handoff_hold_s` ago or more: until then a colleague may still
        claim and close it, and the record would carry half of its story. A record already written ahead
        (`sending`) is not held: its rows are fixed."""
        now = self.clock()
        with connection_lock(self.db):
            rows = self.db.execute(
                f"""SELECT json_extract(o.payload, '$.conversation_id') AS cid
                   FROM outbox o
                   WHERE o.kind IN ({_KIND_MARKS}) AND o.status = 'pending' AND o.next_attempt_at <= ?
                   GROUP BY cid
                   HAVING (SELECT max(m.created_at) FROM messages m WHERE m.conversation_id = cid) <= ?
                      AND (NOT EXISTS (SELECT 1 FROM handoffs h WHERE h.conversation_id = cid
                                       AND h.status IN {ACTIVE} AND h.opened_at > ?)
                           OR EXISTS (SELECT 1 FROM pushed_records p WHERE p.conversation_id = cid
                                      AND p.status = '{SENDING}'))
                   ORDER BY min(o.id) LIMIT ?""",
                [*KINDS, now, now - self.policy.idle_s, now - self.policy.handoff_hold_s, limit],
            ).fetchall()
        return [row[0] for row in rows]

    def _take(self, conversation_id: str) -> dict[str, Any] | str | None:
        """The record to work on for this conversation, its rows leased to this agent: the one being sent,
        or a new one written ahead of the send. A string: the other agent working it. None: nothing due."""
        now = self.clock()
        with transaction(self.db):
            rows = list(
                self.db.query(
                    "SELECT * FROM pushed_records WHERE conversation_id = ? AND status = ? ORDER BY part LIMIT 1",
                    [conversation_id, SENDING],
                )
            )
            record = rows[0] if rows else None
            if record is not None:
                ids = json.loads(record["outbox_ids"])
            else:
                ids = [
                    row[0]
                    for row in self.db.execute(
                        f"SELECT id FROM outbox WHERE kind IN ({_KIND_MARKS}) AND status = 'pending'"
                        " AND json_extract(payload, '$.conversation_id') = ? ORDER BY id",
                        [*KINDS, conversation_id],
                    ).fetchall()
                ]
            if not ids:
                return None
            other = self.outbox.holder(ids, besides=self.holder)
            if other is not None:
                return other
            if not self.outbox.lease(ids, self.holder, self.policy.lease_s):
                return None  # backing off, or finished meanwhile
            if record is None:
                last = self.db.execute(
                    "SELECT coalesce(max(part), 0) FROM pushed_records WHERE conversation_id = ?", [conversation_id]
                ).fetchone()[0]
                part = last + 1
                record = {
                    "conversation_id": conversation_id,
                    "part": part,
                    "end_user": end_user(self.policy, conversation_id, part),
                    "status": SENDING,
                    "outbox_ids": json.dumps(ids),
                    "created_at": now,
                    "updated_at": now,
                    "sent_at": None,
                }
                self.db["pushed_records"].insert(record)
            return record

    # --- one conversation ------------------------------------------------------------------------

    def _push(self, conversation_id: str, report: PushReport) -> None:
        record = self._take(conversation_id)
        if not isinstance(record, dict):
            return  # nothing due, or another agent has it (`run` says so once for all its rows)
        ids: list[int] = json.loads(record["outbox_ids"])
        try:
            lookup = self._look_up(record, ids)
            if lookup is None:
                return  # the lease ran out while waiting and another agent took the record over
            if lookup.state == LANDED:
                run_id = lookup.ref or ""
                report.found += 1
            elif lookup.state == RUNNING:
                error = f"central's run {lookup.ref} for {record['end_user']} is still running: waiting for it"
                self._retry_later(record, ids, error)
                report.waiting += 1
                return
            elif self._may_be_unlisted(record):
                self._wait_for_listing(record, ids)
                report.waiting += 1
                return
            elif not self._before_send(record, ids):
                return  # the lease ran out and another agent took the record over
            else:
                try:
                    run_id = self.sink.send(record["end_user"], self._build(record, ids))
                except SyncError as exc:
                    if not exc.maybe_delivered:  # refused or never sent: no run can exist
                        self._set_sent_at(record, None)
                    raise
                report.sent += 1
        except Rejected as exc:
            self._park(record, ids, str(exc))
            report.parked += 1
            report.errors.append(str(exc))
            return
        except Unreachable as exc:
            self._retry_later(record, ids, str(exc))
            report.failed += 1
            report.errors.append(str(exc))
            return
        except BaseException:  # AuthFailed (the stream stops) or a bug: the rows are due again at once
            self.outbox.release(ids, self.holder, retry_at=self.clock())
            raise
        self._confirm(record, ids, run_id)
        kinds = self._kinds(ids)
        report.turns += kinds.get(TURN, 0)
        report.feedback += kinds.get(FEEDBACK, 0)
        report.handoffs += kinds.get(HANDOFF, 0)

    def _look_up(self, record: dict[str, Any], ids: list[int]) -> Lookup | None:
        """Central's answer for the record; while its run may exist and is not finished, wait (a while,
        keeping the lease). None: the lease was lost meanwhile."""
        session = session_id(record["conversation_id"], record["part"])
        lookup = self.sink.find(record["end_user"], session)
        polls = int(self.policy.wait_s / self.policy.poll_s) if self.policy.poll_s > 0 else 0
        for _ in range(polls):
            if lookup.state == LANDED or (lookup.state == ABSENT and not self._may_be_unlisted(record)):
                break
            if not self.outbox.renew(ids, self.holder, self.policy.lease_s):
                return None
            self.sleep(self.policy.poll_s)
            lookup = self.sink.find(record["end_user"], session)
        return lookup

    def _may_be_unlisted(self, record: dict[str, Any]) -> bool:
        """A send that may have reached central is recent: its run may exist and not be listed yet."""
        sent_at = record.get("sent_at")
        return sent_at is not None and self.clock() < sent_at + self.policy.settle_s

    def _wait_for_listing(self, record: dict[str, Any], ids: list[int]) -> None:
        """Not a failure: come back when central had `settle_s` to list the run, then re-send only if absent."""
        retry_at = record["sent_at"] + self.policy.settle_s
        note = f"sent at {_iso(record['sent_at'])}, not listed on central yet: waiting, not re-sending"
        self.outbox.release(ids, self.holder, retry_at=retry_at, note=note)

    def _before_send(self, record: dict[str, Any], ids: list[int]) -> bool:
        """Still this agent's record (lease renewed), and noted as sent from now on: a run may exist."""
        with transaction(self.db):
            if not self.outbox.renew(ids, self.holder, self.policy.lease_s):
                return False
            self._set_sent_at(record, self.clock())
        return True

    def _set_sent_at(self, record: dict[str, Any], sent_at: float | None) -> None:
        with transaction(self.db):
            self.db.execute(
                "UPDATE pushed_records SET sent_at = ? WHERE conversation_id = ? AND part = ?",
                [sent_at, record["conversation_id"], record["part"]],
            )
        record["sent_at"] = sent_at

    def _kinds(self, ids: list[int]) -> dict[str, int]:
        marks = ",".join("?" * len(ids))
        with connection_lock(self.db):
            rows = self.db.execute(f"SELECT kind, count(*) FROM outbox WHERE id IN ({marks}) GROUP BY kind", ids)
            return dict(rows.fetchall())

    def _build(self, record: dict[str, Any], ids: list[int]) -> dict[str, Any]:
        """The transcript of the turns this record carries, with routes, intents and hand-offs, and the
        feedback it carries: on its own turns inside them, on turns pushed before in `feedback`. Each
        hand-off whose changes it carries is in `handoff_details` as it stands now (reason, claim, close,
        waits): a later change goes in the next part with the hand-off's state then."""
        marks = ",".join("?" * len(ids))
        with connection_lock(self.db):
            rows = list(
                self.db.query(
                    f"""SELECT m.id, m.user, m.query, m.answer, m.status, m.error, m.route, m.intent, m.confidence,
                           m.latency_ms, m.prompt_tokens, m.completion_tokens, m.sources, m.created_at,
                           m.escalation, m.central_message_id, m.central_conversation_id
                        FROM outbox o JOIN messages m ON m.id = o.ref
                        WHERE o.id IN ({marks}) AND o.kind = ? ORDER BY m.seq""",
                    [*ids, TURN],
                )
            )
            given = self.db.execute(
                f"SELECT payload FROM outbox WHERE id IN ({marks}) AND kind = ? ORDER BY id", [*ids, FEEDBACK]
            ).fetchall()
            changes = self.db.execute(
                f"SELECT ref, json_extract(payload, '$.at') FROM outbox WHERE id IN ({marks}) AND kind = ? ORDER BY id",
                [*ids, HANDOFF],
            ).fetchall()
        handoffs = Handoffs(self.db, clock=self.clock)
        details = []
        for handoff_id in dict.fromkeys(ref for ref, _ in changes):
            try:
                item = handoffs.get(handoff_id)
            except NotFound:  # deleted meanwhile (retention keeps it while a row is pending: a bug, not a loss)
                continue
            details.append({key: item[key] for key in HANDOFF_FIELDS})
        details.sort(key=lambda item: (item["opened_at"], item["id"]))
        latest: dict[str, dict[str, Any]] = {}
        for (payload,) in given:  # the last word on each message wins (a like, then a revocation)
            item = json.loads(payload)
            latest[item["message_id"]] = item
        turns = [
            {
                "message_id": row["id"],
                "user": row["user"],
                "query": row["query"],
                "answer": row["answer"],
                "status": row["status"],
                "error": row["error"],
                "route": row["route"],
                "intent": row["intent"],
                "confidence": row["confidence"],
                "latency_ms": row["latency_ms"],
                "prompt_tokens": row["prompt_tokens"],
                "completion_tokens": row["completion_tokens"],
                "sources": [
                    {k: s.get(k) for k in ("dataset_id", "document_id", "segment_id", "document_name", "score")}
                    for s in json.loads(row["sources"] or "[]")
                ],
                "created_at": row["created_at"],
                "feedback": _feedback(latest.pop(row["id"], None)),
                **_escalation(row),
            }
            for row in rows
        ]
        later = [
            {k: item.get(k) for k in ("message_id", "rating", "content", "updated_at")} for item in latest.values()
        ]
        times = [turn["created_at"] for turn in turns] + [item["updated_at"] for item in later]
        times += [at for _, at in changes if at is not None]
        times = times or [0]
        return {
            "store_id": self.policy.store_id,
            "kiosk_id": self.policy.kiosk_id,
            "conversation_id": record["conversation_id"],
            "part": record["part"],
            "started_at": min(times),
            "ended_at": max(times),
            "handoffs": sum(turn["route"] == "handoff" for turn in turns),
            "handoff_details": details,  # the hand-offs this record carries changes of, as they stand now
            "escalated": sum(turn["escalated"] for turn in turns),  # central already holds these answers
            "turns": turns,
            "feedback": later,  # on turns of earlier parts; a `rating` of None revokes
        }

    def _confirm(self, record: dict[str, Any], ids: list[int], run_id: str) -> None:
        now = self.clock()
        with transaction(self.db):
            self.db.execute(
                "UPDATE pushed_records SET status = ?, workflow_run_id = ?, last_error = NULL, updated_at = ?"
                " WHERE conversation_id = ? AND part = ?",
                [DONE, run_id, now, record["conversation_id"], record["part"]],
            )
            for outbox_id in ids:
                self.outbox.mark_done(outbox_id)

    def _retry_later(self, record: dict[str, Any], ids: list[int], error: str) -> None:
        """Central may answer later: back off (with jitter), parking the rows after `max_attempts`."""
        marks = ",".join("?" * len(ids))
        with transaction(self.db):
            attempts = self.db.execute(f"SELECT max(attempts) FROM outbox WHERE id IN ({marks})", ids).fetchone()[0]
            delay = backoff(attempts or 0, self.policy.backoff_base_s, self.policy.backoff_max_s, self.rng)
            for outbox_id in ids:
                self.outbox.mark_failed(outbox_id, error, retry_in=delay, max_attempts=self.policy.max_attempts)
            parked = self.db.execute(
                f"SELECT count(*) FROM outbox WHERE status = 'parked' AND id IN ({marks})", ids
            ).fetchone()[0]
            if parked:
                self._set_status(record, PARKED, f"gave up after {self.policy.max_attempts} attempts: {error}")

    def _park(self, record: dict[str, Any], ids: list[int], error: str) -> None:
        """A refusal that retrying will not change: park the rows with the reason, never delete them."""
        with transaction(self.db):
            for outbox_id in ids:
                self.outbox.mark_failed(outbox_id, error, retry_in=0.0, max_attempts=1)
            self._set_status(record, PARKED, error)

    def _set_status(self, record: dict[str, Any], status: str, error: str) -> None:
        self.db.execute(
            "UPDATE pushed_records SET status = ?, last_error = ?, updated_at = ?"
            " WHERE conversation_id = ? AND part = ?",
            [status, error, self.clock(), record["conversation_id"], record["part"]],
        )


def _escalation(row: dict[str, Any]) -> dict[str, Any]:
    """An escalated turn is marked, with central's ids, so central's team does not count it twice (central
    holds that question and answer in its own conversation already); a fallback says why."""
    escalation = row["escalation"] or ""
    escalated = escalation.startswith("answered")
    marks: dict[str, Any] = {"escalated": escalated}
    if escalated:
        marks["central_message_id"] = row["central_message_id"]
        marks["central_conversation_id"] = row["central_conversation_id"]
    if escalation and escalation != "answered":
        # `fallback:<cause>`: central was asked, the box answered; `answered_ungrounded`: central's answer
        # cited no knowledge, so the box handed the shopper to a colleague after it
        marks["escalation"] = escalation
    return marks


def _feedback(item: dict[str, Any] | None) -> dict[str, Any] | None:
    return {"rating": item["rating"], "content": item.get("content")} if item and item.get("rating") else None
