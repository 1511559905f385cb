"""Conversations, messages and feedback, with the scoping and paging Dify's chat API promises.

Every read is scoped to the Dify `user`: another user's conversation or message must be
indistinguishable from a missing one, so both raise the same `NotFound` (spec §2.3-§2.8, §7).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import sqlite_utils

from edge.store.db import connection_lock, transaction
from edge.store.errors import (
    CONVERSATION_NOT_EXISTS,
    FIRST_MESSAGE_NOT_EXISTS,
    LAST_CONVERSATION_NOT_EXISTS,
    MESSAGE_NOT_EXISTS,
    InvalidParam,
    NotFound,
)
from edge.store.handoffs import Handoffs, Opening
from edge.store.outbox import Outbox

SORT_FIELDS = {"created_at", "updated_at"}
RATINGS = {"like", "dislike"}
# What an escalated turn records about central (migration 10); `record_turn(central=...)`.
CENTRAL_FIELDS = ("central_message_id", "central_conversation_id", "central_first_byte_ms", "escalation")
_MESSAGE_SELECT = """SELECT m.*, c.inputs AS conversation_inputs, f.rating AS feedback_rating
    FROM messages m JOIN conversations c ON c.id = m.conversation_id
    LEFT JOIN feedback f ON f.message_id = m.id AND f.user = m.user"""


def _conversation_item(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "inputs": json.loads(row["inputs"] or "{}"),
        "status": row["status"],
        "introduction": row["introduction"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _message_item(row: dict[str, Any]) -> dict[str, Any]:
    prompt, completion = row["prompt_tokens"] or 0, row["completion_tokens"] or 0
    rating = row["feedback_rating"]
    return {
        "id": row["id"],
        "conversation_id": row["conversation_id"],
        "parent_message_id": None,
        "inputs": json.loads(row["conversation_inputs"] or "{}"),
        "query": row["query"],
        "answer": row["answer"],
        "status": row["status"],
        "error": row["error"],
        "message_files": [],
        "feedback": {"rating": rating} if rating else None,
        "retriever_resources": json.loads(row["sources"] or "[]"),
        "agent_thoughts": [],
        "created_at": row["created_at"],
        "message_tokens": prompt,
        "answer_tokens": completion,
        "total_tokens": prompt + completion,
        "provider_response_latency": (row["latency_ms"] or 0.0) / 1000.0,
        "route": row["route"],
        "intent": row["intent"],
        "confidence": row["confidence"],
    }


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise InvalidParam("limit must be at least 1")


class ConversationStore:
    """Conversations and their turns, for one database; safe to share between threads."""

    def __init__(self, db: sqlite_utils.Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._lock = connection_lock(db)
        self._outbox = Outbox(db, clock=clock)
        self.handoffs = Handoffs(db, clock=clock)

    def _now(self) -> int:
        return int(self.clock())

    def _row(self, conversation_id: str, user: str, message: str = CONVERSATION_NOT_EXISTS) -> dict[str, Any]:
        with self._lock:
            rows = list(
                self.db.query(
                    "SELECT * FROM conversations WHERE id = ? AND user = ? AND deleted = 0", [conversation_id, user]
                )
            )
        if not rows:
            raise NotFound(message)
        return rows[0]

    def create(self, user: str, inputs: dict[str, Any], name: str = "New conversation") -> dict[str, Any]:
        """Start a conversation; its `inputs` are frozen here, as Dify freezes them at turn 1."""
        now, conversation_id = self._now(), str(uuid.uuid4())
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO conversations (id, user, name, inputs, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                [conversation_id, user, name, json.dumps(inputs, ensure_ascii=False), now, now],
            )
        return self.get(conversation_id, user)

    def get(self, conversation_id: str, user: str) -> dict[str, Any]:
        """The user's live conversation, or NotFound("Conversation Not Exists.")."""
        return _conversation_item(self._row(conversation_id, user))

    def list(
        self, user: str, last_id: str | None, limit: int, sort_by: str = "-updated_at"
    ) -> tuple[list[dict[str, Any]], bool]:
        """One keyset page of the user's conversations and whether more follow.

        Unlike Dify, the cursor is (sort value, id), so rows sharing a timestamp across a page
        boundary are neither skipped nor repeated.
        """
        field, descending = sort_by.removeprefix("-"), sort_by.startswith("-")
        if field not in SORT_FIELDS:
            raise InvalidParam(
                f"sort_by must be one of created_at, -created_at, updated_at, -updated_at; got {sort_by!r}"
            )
        _check_limit(limit)
        op, order = ("<", "DESC") if descending else (">", "ASC")
        where, params = "user = ? AND deleted = 0", [user]
        with self._lock:
            if last_id is not None:
                cursor = self._row(last_id, user, LAST_CONVERSATION_NOT_EXISTS)
                where += f" AND ({field} {op} ? OR ({field} = ? AND id {op} ?))"
                params += [cursor[field], cursor[field], last_id]
            rows = list(
                self.db.query(
                    f"SELECT * FROM conversations WHERE {where} ORDER BY {field} {order}, id {order} LIMIT ?",
                    [*params, limit + 1],
                )
            )
        return [_conversation_item(row) for row in rows[:limit]], len(rows) > limit

    def delete(self, conversation_id: str, user: str) -> None:
        """Soft-delete: the row stays (its turns may still be syncing) but the user no longer sees it. Its
        open hand-off is abandoned in the same transaction: nobody is waiting at the kiosk for it now."""
        with transaction(self.db):
            cursor = self.db.execute(
                "UPDATE conversations SET deleted = 1 WHERE id = ? AND user = ? AND deleted = 0",
                [conversation_id, user],
            )
            if cursor.rowcount == 0:
                raise NotFound(CONVERSATION_NOT_EXISTS)
            self.handoffs.abandon_conversation(conversation_id)

    def rename(self, conversation_id: str, user: str, name: str) -> dict[str, Any]:
        """Rename and bump `updated_at` (as Dify does); returns the conversation item."""
        if not name.strip():
            raise InvalidParam("name is required")
        with transaction(self.db):
            cursor = self.db.execute(
                "UPDATE conversations SET name = ?, updated_at = ? WHERE id = ? AND user = ? AND deleted = 0",
                [name, self._now(), conversation_id, user],
            )
            if cursor.rowcount == 0:
                raise NotFound(CONVERSATION_NOT_EXISTS)
            return self.get(conversation_id, user)

    def record_turn(
        self,
        conversation_id: str,
        user: str,
        query: str,
        answer: str,
        *,
        new_conversation: dict[str, Any] | None = None,
        created_at: int | None = None,
        route: str,
        intent: str | None,
        confidence: float | None,
        latency_ms: float,
        prompt_tokens: int,
        completion_tokens: int,
        sources: list[dict[str, Any]],
        status: str = "normal",
        error: str | None = None,
        message_id: str | None = None,
        language: str | None = None,
        reason: str | None = None,
        central: dict[str, Any] | None = None,
        handoff: Opening | None = None,
    ) -> dict[str, Any]:
        """Store one answered turn together with its outbox row: a turn never exists without it.

        `new_conversation` (its `inputs`, optionally `name`): the turn opens `conversation_id`, created in
        the same transaction -- one write per first question instead of two, and never a conversation
        without its first turn.

        `central` (escalated turns): `escalation` (`answered` or `fallback:<cause>`) and, when central
        answered, its `central_message_id`, `central_conversation_id` and `central_first_byte_ms`; the
        local conversation's mapping to central's is kept in the same transaction.

        `handoff` (a turn that hands the shopper to staff): the hand-off opens in the same transaction, so
        the staff page never misses a call the shopper was told about. Its message id is this turn's.
        """
        message_id = message_id or str(uuid.uuid4())
        row = {
            "id": message_id,
            "conversation_id": conversation_id,
            "user": user,
            "query": query,
            "answer": answer,
            "status": status,
            "error": error,
            "route": route,
            "intent": intent,
            "confidence": confidence,
            "latency_ms": latency_ms,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "sources": json.dumps(sources, ensure_ascii=False),
            "created_at": self._now() if created_at is None else created_at,
            "language": language,
            "reason": reason,
            **{key: (central or {}).get(key) for key in CENTRAL_FIELDS},
        }
        payload_keys = (
            "conversation_id", "user", "query", "answer", "route", "intent", "confidence", "created_at", "language",
            "reason",
        )  # fmt: skip
        payload = {"message_id": message_id, **{key: row[key] for key in payload_keys}}
        with transaction(self.db):
            if new_conversation is not None:
                inputs = new_conversation.get("inputs") or {}
                self.db.execute(
                    "INSERT INTO conversations (id, user, name, inputs, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        conversation_id,
                        user,
                        new_conversation.get("name", "New conversation"),
                        json.dumps(inputs, ensure_ascii=False),
                        row["created_at"],
                        row["created_at"],
                    ],
                )
            else:
                inputs = json.loads(self._row(conversation_id, user)["inputs"] or "{}")
            try:
                self.db.execute(
                    f"INSERT INTO messages ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                    list(row.values()),
                )
            except sqlite3.IntegrityError as exc:
                raise InvalidParam(f"message {message_id} already exists") from exc
            self.db.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?", [row["created_at"], conversation_id]
            )
            if row["central_conversation_id"]:
                self.db.execute(
                    "INSERT INTO central_conversations (conversation_id, central_conversation_id, updated_at)"
                    " VALUES (?, ?, ?) ON CONFLICT (conversation_id) DO UPDATE SET"
                    " central_conversation_id = excluded.central_conversation_id, updated_at = excluded.updated_at",
                    [conversation_id, row["central_conversation_id"], row["created_at"]],
                )
            self._outbox.enqueue("turn", message_id, payload)
            if handoff is not None:
                opening = replace(handoff, conversation_id=conversation_id, user=user, message_id=message_id)
                self.handoffs.open_in_transaction(opening)
        return _message_item({**row, "conversation_inputs": json.dumps(inputs), "feedback_rating": None})

    def central_conversation(self, conversation_id: str) -> str | None:
        """Central's conversation that continues this local one (escalated follow-ups stay in it)."""
        with self._lock:
            row = self.db.execute(
                "SELECT central_conversation_id FROM central_conversations WHERE conversation_id = ?",
                [conversation_id],
            ).fetchone()
        return row[0] if row else None

    def messages(
        self, conversation_id: str, user: str, first_id: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """The newest `limit` messages older than `first_id` (or newest overall), oldest first."""
        _check_limit(limit)
        with self._lock:
            self._row(conversation_id, user)
            where, params = "m.conversation_id = ?", [conversation_id]
            if first_id is not None:
                first = self.db.execute(
                    "SELECT seq FROM messages WHERE id = ? AND conversation_id = ?", [first_id, conversation_id]
                ).fetchone()
                if first is None:
                    raise NotFound(FIRST_MESSAGE_NOT_EXISTS)
                where += " AND m.seq < ?"
                params.append(first[0])
            rows = list(
                self.db.query(f"{_MESSAGE_SELECT} WHERE {where} ORDER BY m.seq DESC LIMIT ?", [*params, limit + 1])
            )
        page = [_message_item(row) for row in rows[:limit]]
        page.reverse()
        return page, len(rows) > limit

    def recent_turns(self, conversation_id: str, n: int) -> list[tuple[str, str]]:
        """The last `n` good (query, answer) pairs, oldest first; failed turns are not memory."""
        if n <= 0:
            return []
        with self._lock:
            rows = self.db.execute(
                "SELECT query, answer FROM messages WHERE conversation_id = ? AND status != 'error'"
                " ORDER BY seq DESC LIMIT ?",
                [conversation_id, n],
            ).fetchall()
        return [(query or "", answer or "") for query, answer in reversed(rows)]

    def message_owner(self, message_id: str) -> tuple[str, str] | None:
        """(conversation_id, user) of a message, or None if there is no such message."""
        with self._lock:
            row = self.db.execute("SELECT conversation_id, user FROM messages WHERE id = ?", [message_id]).fetchone()
        return (row[0], row[1]) if row else None

    def set_feedback(self, message_id: str, user: str, rating: str | None, content: str | None) -> None:
        """Dify's feedback upsert keyed by (message, user); a None rating revokes existing feedback."""
        if rating is not None and rating not in RATINGS:
            raise InvalidParam("rating must be like, dislike or null")
        now = self._now()
        with transaction(self.db):
            owner = self.message_owner(message_id)
            if owner is None or owner[1] != user:
                raise NotFound(MESSAGE_NOT_EXISTS)
            key = [message_id, user]
            exists = self.db.execute("SELECT 1 FROM feedback WHERE message_id = ? AND user = ?", key).fetchone()
            if rating is None:
                if not exists:
                    raise InvalidParam("rating cannot be None when feedback not exists")
                self.db.execute("DELETE FROM feedback WHERE message_id = ? AND user = ?", key)
            else:
                self.db.execute(
                    "INSERT INTO feedback (message_id, user, rating, content, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, user) DO UPDATE SET"
                    " rating = excluded.rating, content = excluded.content, updated_at = excluded.updated_at",
                    [*key, rating, content, now, now],
                )
            payload = {"message_id": message_id, "conversation_id": owner[0], "user": user, "rating": rating}
            self._outbox.enqueue("feedback", message_id, {**payload, "content": content, "updated_at": now})
