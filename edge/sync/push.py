"""Push, edge → central: each conversation, once idle, becomes one record on central -- sent once.

Dify has no idempotency keys and no import of past conversations (spec §7, §8(a)), so the record is
one run of an ingest workflow app whose `user` is derived from the store, the kiosk, the
conversation and the record's part number. The record is written ahead (`pushed_records`, status
`sending`, with the exact turns it carries) before anything is sent; every attempt first looks the
`user` up in the workflow logs, so a retry after a lost response finds the first run instead of
creating a second. Outbox rows are marked done only after central confirmed.

Turns that arrive after a conversation was pushed (the shopper came back) go in its next part.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlite_utils

from edge.store.db import connection_lock, transaction
from edge.store.outbox import Outbox
from edge.sync.client import DifyClient, Rejected, Unreachable

log = logging.getLogger(__name__)
SENDING, DONE, PARKED = "sending", "done", "parked"
TURN = "turn"


class RecordSink(Protocol):
    """Where a conversation record goes. The default is a workflow run; a chain without an ingest app can
    plug in another sink (a knowledge document per conversation, an export file) with the same contract:
    `find` must answer whether `end_user`'s record already landed, `send` must create it once."""

    def find(self, end_user: str) -> str | None: ...

    def send(self, end_user: str, record: dict[str, Any]) -> str: ...


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


class WorkflowSink:
    """One `POST /workflows/run` per record on the ingest workflow app; `GET /workflows/logs` to find it."""

    def __init__(self, client: DifyClient, ingest_key: str) -> None:
        self.client = client
        self.ingest_key = ingest_key

    def find(self, end_user: str) -> str | None:
        for entry in self.client.workflow_runs_by_user(self.ingest_key, end_user):
            run = entry.get("workflow_run") or {}
            by = entry.get("created_by_end_user") or {}
            if by.get("session_id") not in (None, end_user):
                continue  # a server that ignored the filter: only our own user counts
            if run.get("status") == "succeeded":
                return str(run.get("id") or entry.get("id"))
            if run.get("status") in ("failed", "stopped"):
                raise Rejected(f"central's ingest workflow {run.get('status')} for {end_user}: {run.get('error')}")
        return None

    def send(self, end_user: str, record: dict[str, Any]) -> str:
        # The input variables of spec §8(a) A3; the ingest app declares them (times as ISO 8601 text).
        part = "" if record["part"] == 1 else f":{record['part']}"
        inputs = {
            "store_id": record["store_id"],
            "kiosk_id": record["kiosk_id"],
            "edge_session_id": record["conversation_id"] + part,
            "started_at": _iso(record["started_at"]),
            "ended_at": _iso(record["ended_at"]),
            "transcript": json.dumps(record, ensure_ascii=False),
        }
        body = self.client.run_workflow(self.ingest_key, end_user, inputs)
        data = body.get("data") or {}
        if data.get("status") not in (None, "succeeded"):
            raise Rejected(f"central's ingest workflow {data.get('status')}: {data.get('error')}")
        return str(body.get("workflow_run_id") or data.get("id"))


class DocumentSink:
    """A chain without an ingest workflow: one knowledge document per record in a transcripts dataset
    (spec §8(a) A4), named after the record's end user and looked up by that name before creating."""

    def __init__(self, client: DifyClient, dataset_key: str, dataset_id: str) -> None:
        self.client = client
        self.dataset_key = dataset_key
        self.dataset_id = dataset_id

    def find(self, end_user: str) -> str | None:
        found = self.client.documents_named(self.dataset_key, self.dataset_id, end_user)
        return str(found[0]["id"]) if found else None

    def send(self, end_user: str, record: dict[str, Any]) -> str:
        lines = [
            f"{turn['created_at']} [{turn['route']}] Q: {turn['query']}\nA: {turn['answer']}"
            for turn in record["turns"]
        ]
        header = json.dumps({k: v for k, v in record.items() if k != "turns"}, ensure_ascii=False)
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


@dataclass
class PushReport:
    sent: int = 0
    found: int = 0  # already on central: a retry after a lost response
    failed: int = 0
    parked: int = 0
    turns: int = 0
    errors: list[str] = field(default_factory=list)


def end_user(policy: PushPolicy, conversation_id: str, part: int) -> str:
    """Stable Dify `user` of one record: the same on every retry, distinct for every record."""
    suffix = "" if part == 1 else f":{part}"
    return f"edge:{policy.store_id}:{policy.kiosk_id}:{conversation_id}{suffix}"


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
    ) -> None:
        self.db = db
        self.sink = sink
        self.policy = policy
        self.clock = clock
        self.rng = rng or random.Random()
        self.outbox = Outbox(db, clock=clock)

    def run(self, limit: int = 500) -> PushReport:
        """Push every idle conversation with pending turns (and finish records left `sending`)."""
        report = PushReport()
        for conversation_id in self._due(limit):
            self._push(conversation_id, report)  # AuthFailed stops the whole stream; rows stay pending
        return report

    # --- choosing work --------------------------------------------------------------------------

    def _due(self, limit: int) -> list[str]:
        """Conversations with pending turns due now whose last turn is older than the idle time."""
        now = self.clock()
        with connection_lock(self.db):
            rows = self.db.execute(
                """SELECT json_extract(o.payload, '$.conversation_id') AS cid
                   FROM outbox o
                   WHERE o.kind = ? AND o.status = 'pending' AND o.next_attempt_at <= ?
                   GROUP BY cid
                   HAVING (SELECT max(m.created_at) FROM messages m WHERE m.conversation_id = cid) <= ?
                   ORDER BY min(o.id) LIMIT ?""",
                [TURN, now, now - self.policy.idle_s, limit],
            ).fetchall()
        return [row[0] for row in rows]

    def _open_record(self, conversation_id: str) -> dict[str, Any] | None:
        """The record being sent for this conversation, or a new one written ahead of the send."""
        now = self.clock()
        with transaction(self.db):
            rows = list(
                self.db.query(
                    "SELECT * FROM pushed_records WHERE conversation_id = ? AND status = ? ORDER BY part LIMIT 1",
                    [conversation_id, SENDING],
                )
            )
            if rows:
                return rows[0]
            pending = [
                row[0]
                for row in self.db.execute(
                    "SELECT id FROM outbox WHERE kind = ? AND status = 'pending'"
                    " AND json_extract(payload, '$.conversation_id') = ? ORDER BY id",
                    [TURN, conversation_id],
                ).fetchall()
            ]
            if not pending:
                return None
            part = (
                1
                + (
                    self.db.execute(
                        "SELECT coalesce(max(part), 0) FROM pushed_records WHERE conversation_id = ?", [conversation_id]
                    ).fetchone()[0]
                )
            )
            record = {
                "conversation_id": conversation_id,
                "part": part,
                "end_user": end_user(self.policy, conversation_id, part),
                "status": SENDING,
                "outbox_ids": json.dumps(pending),
                "created_at": now,
                "updated_at": now,
            }
            self.db["pushed_records"].insert(record)
            return record

    # --- one conversation ------------------------------------------------------------------------

    def _push(self, conversation_id: str, report: PushReport) -> None:
        record = self._open_record(conversation_id)
        if record is None:
            return
        ids: list[int] = json.loads(record["outbox_ids"])
        try:
            run_id = self.sink.find(record["end_user"])
            if run_id is not None:
                report.found += 1
            else:
                run_id = self.sink.send(record["end_user"], self._build(record, ids))
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
        self._confirm(record, ids, run_id)
        report.turns += len(ids)

    def _build(self, record: dict[str, Any], ids: list[int]) -> dict[str, Any]:
        """The transcript of the turns this record carries, with routes, intents, hand-offs and feedback."""
        marks = ",".join("?" * len(ids))
        with connection_lock(self.db):
            rows = list(
                self.db.query(
                    f"""SELECT m.id, m.user, m.query, m.answer, m.status, m.error, m.route, m.intent, m.confidence,
                           m.latency_ms, m.prompt_tokens, m.completion_tokens, m.sources, m.created_at,
                           f.rating AS feedback_rating, f.content AS feedback_content
                        FROM outbox o JOIN messages m ON m.id = o.ref
                        LEFT JOIN feedback f ON f.message_id = m.id AND f.user = m.user
                        WHERE o.id IN ({marks}) ORDER BY m.seq""",
                    ids,
                )
            )
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
                "feedback": (
                    {"rating": row["feedback_rating"], "content": row["feedback_content"]}
                    if row["feedback_rating"]
                    else None
                ),
            }
            for row in rows
        ]
        times = [turn["created_at"] for turn in turns] or [0]
        return {
            "store_id": self.policy.store_id,
            "kiosk_id": self.policy.kiosk_id,
            "conversation_id": record["conversation_id"],
            "part": record["part"],
            "started_at": min(times),
            "ended_at": max(times),
            "handoffs": sum(turn["route"] == "handoff" for turn in turns),
            "turns": turns,
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
        """Central may answer later: back off (with jitter), parking the turns after `max_attempts`."""
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
        """A refusal that retrying will not change: park the turns with the reason, never delete them."""
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
