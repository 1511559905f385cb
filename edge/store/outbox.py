"""The sync outbox: work the box owes central Dify, written in the same transaction as the change.

Rows are never deleted, so the outbox doubles as an audit of what was sent. A row is `pending` until
`mark_done` makes it `done`, or repeated failures make it `parked` for an operator to look at.
`claim` leases rows by pushing `next_attempt_at` forward instead of changing their status: a sync
agent that dies mid-send leaves nothing stuck, the rows simply come back when the lease runs out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

from edge.store.db import connection_lock, transaction
from edge.store.errors import NotFound

PENDING = "pending"
DONE = "done"
PARKED = "parked"
DEFAULT_LEASE_SECONDS = 60.0


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "payload": json.loads(row["payload"]) if row["payload"] is not None else None}


class Outbox:
    """Queue of outbound sync work stored in the `outbox` table."""

    def __init__(self, db: sqlite_utils.Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def enqueue(self, kind: str, ref: str, payload: dict[str, Any]) -> int:
        """Add a pending row; joins the caller's transaction when one is open. Returns the row id."""
        now = self.clock()
        with transaction(self.db):
            cursor = self.db.execute(
                "INSERT INTO outbox (kind, ref, payload, status, attempts, next_attempt_at, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 0, 0, ?, ?)",
                [kind, ref, json.dumps(payload, ensure_ascii=False), PENDING, now, now],
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def depth(self) -> int:
        """How many rows are still pending (leased and backing-off rows included)."""
        with connection_lock(self.db):
            return self.db.execute("SELECT count(*) FROM outbox WHERE status = ?", [PENDING]).fetchone()[0]

    def claim(self, limit: int, *, lease: float = DEFAULT_LEASE_SECONDS) -> list[dict[str, Any]]:
        """Pending rows due now, oldest first, leased for `lease` seconds so no other claim sees them."""
        if limit < 1:
            return []  # SQLite reads a negative LIMIT as "no limit"
        now = self.clock()
        with transaction(self.db):
            rows = list(
                self.db.query(
                    "SELECT * FROM outbox WHERE status = ? AND next_attempt_at <= ? ORDER BY id LIMIT ?",
                    [PENDING, now, limit],
                )
            )
            if rows:
                ids = [row["id"] for row in rows]
                self.db.execute(
                    f"UPDATE outbox SET next_attempt_at = ? WHERE id IN ({', '.join('?' for _ in ids)})",
                    [now + lease, *ids],
                )
        return [_row(row) for row in rows]

    def mark_done(self, id: int) -> None:
        """The row was delivered."""
        with transaction(self.db):
            cursor = self.db.execute(
                "UPDATE outbox SET status = ?, last_error = NULL, updated_at = ? WHERE id = ?",
                [DONE, self.clock(), id],
            )
            if cursor.rowcount == 0:
                raise NotFound(f"Outbox row {id} not exists.")

    def mark_failed(self, id: int, error: str, *, retry_in: float, max_attempts: int) -> None:
        """Count a failed attempt: retry after `retry_in` seconds, or park once `max_attempts` is reached."""
        now = self.clock()
        with transaction(self.db):
            cursor = self.db.execute(
                """UPDATE outbox SET
                       attempts = attempts + 1,
                       last_error = ?,
                       status = CASE WHEN attempts + 1 >= ? THEN ? ELSE status END,
                       next_attempt_at = ?,
                       updated_at = ?
                   WHERE id = ?""",
                [error, max_attempts, PARKED, now + retry_in, now, id],
            )
            if cursor.rowcount == 0:
                raise NotFound(f"Outbox row {id} not exists.")

    def get(self, id: int) -> dict[str, Any] | None:
        """One row by id, whatever its status."""
        with connection_lock(self.db):
            rows = list(self.db.query("SELECT * FROM outbox WHERE id = ?", [id]))
        return _row(rows[0]) if rows else None

    def parked(self) -> list[dict[str, Any]]:
        """Rows that gave up, oldest first, with the reason in `last_error`."""
        with connection_lock(self.db):
            rows = list(self.db.query("SELECT * FROM outbox WHERE status = ? ORDER BY id", [PARKED]))
        return [_row(row) for row in rows]
