"""Hand-offs to store staff: the state machine behind the staff page, stored beside the turns.

A hand-off opens in the same transaction as the turn that hands the shopper over (the staff button, an
abstention, an error), so a box that crashes right after answering "let me call a colleague" still
shows the call after its restart. One conversation has at most one active hand-off (a partial unique
index): a second call while one is active is counted on it (`calls`), not opened again.

    open ──claim──▶ claimed ──close──▶ closed
      │                                  ▲
      ├──────────────close───────────────┘   (a colleague helped without claiming first)
      └──abandon (the kiosk was reset, the conversation deleted)──▶ abandoned

Every transition is one conditional UPDATE (`WHERE status = ...`), so of two staff claiming at once
exactly one wins and the other is told who did. Each change bumps `rev`, the staff page's cursor, and
queues an outbox row (`handoff`) so central gets the hand-off's times with the conversation's record.
An opening may also queue an `alert` row, sent to the store's webhook by the sync agent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from edge.store.db import connection_lock, transaction
from edge.store.errors import Conflict, NotFound
from edge.store.outbox import Outbox

OPEN, CLAIMED, CLOSED, ABANDONED = "open", "claimed", "closed", "abandoned"
ACTIVE = (OPEN, CLAIMED)
STATES = (OPEN, CLAIMED, CLOSED, ABANDONED)
BUTTON, ABSTENTION, ERROR = "button", "abstention", "error"
REASONS = (BUTTON, ABSTENTION, ERROR)
HANDOFF_ROW, ALERT_ROW = "handoff", "alert"  # outbox kinds: a change for central, a message for the webhook
HANDOFF_NOT_EXISTS = "Hand-off Not Exists."
TRANSCRIPT_TURNS = 20
STAFF_NAME_MAX = 40
KIOSK_ID_MAX = 64

_COLUMNS = (
    "id, conversation_id, user, message_id, kiosk_id, language, reason, detail, question, status, opened_at,"
    " claimed_at, claimed_by, closed_at, closed_by, abandoned_at, calls, rev"
)


@dataclass(frozen=True)
class Opening:
    """What a hand-off turn tells the store: who, where, in which language, and why."""

    conversation_id: str
    user: str
    message_id: str
    kiosk_id: str
    language: str
    reason: str  # button | abstention | error
    detail: str | None  # the policy's own reason (unsure, no_translation, no_llm, ...)
    question: str
    alert: bool = False  # queue a webhook message too (the setting is on)


def staff_name(name: str | None) -> str:
    """A staff member's name as stored and shown: printable, trimmed, at most 40 characters."""
    cleaned = "".join(ch for ch in (name or "") if ch.isprintable()).strip()
    return cleaned[:STAFF_NAME_MAX] or "staff"


def _item(row: dict[str, Any], now: float) -> dict[str, Any]:
    """A hand-off as the staff page and the record show it: times in epoch seconds, waits in seconds."""
    opened = row["opened_at"]
    ended = row["claimed_at"] or row["closed_at"] or row["abandoned_at"]
    return {
        **row,
        "waited_s": round((ended if ended is not None else now) - opened, 3),
        "time_to_claim_s": round(row["claimed_at"] - opened, 3) if row["claimed_at"] is not None else None,
        "time_to_close_s": round(row["closed_at"] - opened, 3) if row["closed_at"] is not None else None,
    }


class Handoffs:
    """The store's hand-offs, for one database; safe to share between threads."""

    def __init__(self, db: sqlite_utils.Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._lock = connection_lock(db)
        self._outbox = Outbox(db, clock=clock)

    # --- writes --------------------------------------------------------------------------------

    def open_in_transaction(self, opening: Opening) -> dict[str, Any]:
        """Open a hand-off for the turn, or count the call on the conversation's active one. Joins the
        caller's transaction (`record_turn`): the turn and its hand-off commit together or not at all."""
        now = self.clock()
        with transaction(self.db):
            active = self.db.execute(
                f"SELECT id FROM handoffs WHERE conversation_id = ? AND status IN {ACTIVE}", [opening.conversation_id]
            ).fetchone()
            if active is not None:
                self.db.execute(
                    "UPDATE handoffs SET calls = calls + 1, rev = ? WHERE id = ?", [self._next_rev(), active[0]]
                )
                # a change too: central's next record carries the new count (this turn may go in a later part)
                self._changed(active[0], opening.conversation_id, "called", now)
                return self._get(active[0])
            handoff_id = str(uuid.uuid4())
            self.db.execute(
                f"INSERT INTO handoffs ({_COLUMNS}) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, 1, ?)",
                [
                    handoff_id,
                    opening.conversation_id,
                    opening.user,
                    opening.message_id,
                    opening.kiosk_id[:KIOSK_ID_MAX],
                    opening.language,
                    opening.reason,
                    opening.detail,
                    opening.question,
                    OPEN,
                    now,
                    self._next_rev(),
                ],
            )
            self._changed(handoff_id, opening.conversation_id, OPEN, now)
            if opening.alert:
                self._outbox.enqueue(
                    ALERT_ROW,
                    handoff_id,
                    {
                        "handoff_id": handoff_id,
                        "conversation_id": opening.conversation_id,
                        "kiosk_id": opening.kiosk_id,
                        "language": opening.language,
                        "reason": opening.reason,
                        "question": opening.question,
                        "opened_at": now,
                    },
                )
            return self._get(handoff_id)

    def claim(self, handoff_id: str, staff: str) -> dict[str, Any]:
        """`staff` is on the way. First claim wins: a later one gets `Conflict` naming who has it."""
        return self._move(handoff_id, (OPEN,), CLAIMED, "claimed_at = ?, claimed_by = ?", staff)

    def close(self, handoff_id: str, staff: str) -> dict[str, Any]:
        """Done: the shopper was helped. From open (helped without a claim) or claimed (by anyone: a
        colleague may finish what another started). Closing a closed hand-off again changes nothing."""
        return self.close_once(handoff_id, staff)[0]

    def close_once(self, handoff_id: str, staff: str) -> tuple[dict[str, Any], bool]:
        """`close`, and whether this call closed it (False when it was closed already): two colleagues
        pressing "Done" at once count one transition."""
        with transaction(self.db):
            current = self._get(handoff_id)
            if current["status"] == CLOSED:
                return current, False
            return self._move(handoff_id, ACTIVE, CLOSED, "closed_at = ?, closed_by = ?", staff), True

    def abandon_user(self, user: str) -> list[dict[str, Any]]:
        """The kiosk session `user` was reset (idle, "Start over", a reload): its open hand-offs were left.
        A claimed one stays claimed: the colleague is already with the shopper, or on the way."""
        return self._abandon("user = ?", user)

    def abandon_conversation(self, conversation_id: str) -> list[dict[str, Any]]:
        """The conversation was deleted by its client: its open hand-off was left."""
        return self._abandon("conversation_id = ?", conversation_id)

    def _abandon(self, where: str, value: str) -> list[dict[str, Any]]:
        # Nearly every reset leaves no hand-off: a read answers that without taking the write lock,
        # which a page load would otherwise wait for behind the sync agent's writes.
        with self._lock:
            if not self.db.execute(
                f"SELECT 1 FROM handoffs WHERE {where} AND status = ? LIMIT 1", [value, OPEN]
            ).fetchone():
                return []
        now = self.clock()
        with transaction(self.db):
            ids = [
                row[0]
                for row in self.db.execute(
                    f"SELECT id FROM handoffs WHERE {where} AND status = ?", [value, OPEN]
                ).fetchall()
            ]
            for handoff_id in ids:
                self.db.execute(
                    "UPDATE handoffs SET status = ?, abandoned_at = ?, rev = ? WHERE id = ? AND status = ?",
                    [ABANDONED, now, self._next_rev(), handoff_id, OPEN],
                )
                row = self._get(handoff_id)
                self._changed(handoff_id, row["conversation_id"], ABANDONED, now)
            return [self._get(handoff_id) for handoff_id in ids]

    def _move(self, handoff_id: str, sources: tuple[str, ...], target: str, sets: str, staff: str) -> dict[str, Any]:
        now = self.clock()
        marks = ", ".join("?" for _ in sources)
        with transaction(self.db):
            cursor = self.db.execute(
                f"UPDATE handoffs SET status = ?, {sets}, rev = ? WHERE id = ? AND status IN ({marks})",
                [target, now, staff_name(staff), self._next_rev(), handoff_id, *sources],
            )
            current = self._get(handoff_id)
            if cursor.rowcount == 0:
                raise Conflict(_refusal(current, target))
            self._changed(handoff_id, current["conversation_id"], target, now)
            return current

    def _changed(self, handoff_id: str, conversation_id: str, event: str, at: float) -> None:
        """Queue the change for central: the conversation's next record carries the hand-off's times."""
        payload = {"handoff_id": handoff_id, "conversation_id": conversation_id, "event": event, "at": at}
        self._outbox.enqueue(HANDOFF_ROW, handoff_id, payload)

    def _next_rev(self) -> int:
        return self.db.execute("SELECT coalesce(max(rev), 0) + 1 FROM handoffs").fetchone()[0]

    # --- reads ---------------------------------------------------------------------------------

    def _get(self, handoff_id: str) -> dict[str, Any]:
        with self._lock:
            rows = list(self.db.query(f"SELECT {_COLUMNS} FROM handoffs WHERE id = ?", [handoff_id]))
        if not rows:
            raise NotFound(HANDOFF_NOT_EXISTS)
        return _item(rows[0], self.clock())

    def get(self, handoff_id: str) -> dict[str, Any]:
        return self._get(handoff_id)

    def revision(self) -> int:
        """Bumped by every change: the staff page's events compare it to know when to send a new list."""
        with self._lock:
            return self.db.execute("SELECT coalesce(max(rev), 0) FROM handoffs").fetchone()[0]

    def active(self) -> list[dict[str, Any]]:
        """Open and claimed hand-offs, longest waiting first."""
        return self._select(f"status IN {ACTIVE}", [])

    def opened_since(self, since: float) -> list[dict[str, Any]]:
        """Every hand-off opened at or after `since` (the staff page asks from its local midnight), newest first."""
        return self._select("opened_at >= ?", [since], order="opened_at DESC, rev DESC")

    def latest_for_user(self, user: str) -> dict[str, Any] | None:
        """The kiosk session's newest hand-off, or None: what the kiosk page shows the shopper."""
        rows = self._select("user = ?", [user], order="opened_at DESC, rev DESC", limit=1)
        return rows[0] if rows else None

    def of_conversation(self, conversation_id: str) -> list[dict[str, Any]]:
        return self._select("conversation_id = ?", [conversation_id])

    def _select(
        self, where: str, params: list[Any], *, order: str = "opened_at, rev", limit: int = 500
    ) -> list[dict[str, Any]]:
        now = self.clock()
        with self._lock:
            rows = list(
                self.db.query(
                    f"SELECT {_COLUMNS} FROM handoffs WHERE {where} ORDER BY {order} LIMIT ?", [*params, limit]
                )
            )
        return [_item(row, now) for row in rows]

    def transcript(self, conversation_id: str, turns: int = TRANSCRIPT_TURNS) -> list[dict[str, Any]]:
        """The conversation so far, oldest first (the last `turns`): what a colleague reads on the way."""
        with self._lock:
            rows = list(
                self.db.query(
                    "SELECT query, answer, route, created_at FROM messages WHERE conversation_id = ?"
                    " ORDER BY seq DESC LIMIT ?",
                    [conversation_id, turns],
                )
            )
        rows.reverse()
        return rows

    def counts(self) -> dict[str, int]:
        """How many hand-offs are in each state (the `/metrics` gauge reads open and claimed)."""
        with self._lock:
            found = dict(self.db.execute("SELECT status, count(*) FROM handoffs GROUP BY status").fetchall())
        return {state: int(found.get(state, 0)) for state in STATES}


def _refusal(current: dict[str, Any], target: str) -> str:
    status = current["status"]
    if status == CLAIMED:
        return f"Already claimed by {current['claimed_by']}."
    if status == CLOSED:
        return f"Already done (closed by {current['closed_by']})."
    if status == ABANDONED:
        return "The shopper has left: the kiosk was reset before anyone claimed this hand-off."
    return f"Cannot move a hand-off from {status} to {target}."
