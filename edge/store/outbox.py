"""The sync outbox: work the box owes central Dify, written in the same transaction as the change.

Rows are never deleted, so the outbox doubles as an audit of what was sent. A row is `pending` until
`mark_done` makes it `done`, or failures make it `parked` for an operator, who can `requeue` it.
A lease (`lease`, `claim`) pushes `next_attempt_at` forward and names its holder instead of changing
the status: a second sync agent sees the rows are taken and by whom, and an agent that dies mid-send
leaves nothing stuck -- the rows simply come back when the lease runs out.
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


def _marks(ids: list[int]) -> str:
    return ", ".join("?" for _ in ids)


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

    def claim(
        self, limit: int, *, lease: float = DEFAULT_LEASE_SECONDS, holder: str | None = None
    ) -> list[dict[str, Any]]:
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
                    f"UPDATE outbox SET next_attempt_at = ?, leased_by = ? WHERE id IN ({_marks(ids)})",
                    [now + lease, holder, *ids],
                )
        return [_row(row) for row in rows]

    def lease(self, ids: list[int], holder: str, seconds: float) -> bool:
        """Lease the pending rows among `ids` to `holder` for `seconds` if every one of them is due now (none
        backing off, none leased); all or none. Joins the caller's transaction."""
        if not ids:
            return False
        now = self.clock()
        with transaction(self.db):
            waiting = self.db.execute(
                f"SELECT count(*) FROM outbox WHERE id IN ({_marks(ids)}) AND status = ? AND next_attempt_at > ?",
                [*ids, PENDING, now],
            ).fetchone()[0]
            if waiting:
                return False
            cursor = self.db.execute(
                f"UPDATE outbox SET leased_by = ?, next_attempt_at = ? WHERE id IN ({_marks(ids)}) AND status = ?",
                [holder, now + seconds, *ids, PENDING],
            )
        return cursor.rowcount > 0

    def holder(self, ids: list[int], *, besides: str) -> str | None:
        """Whoever other than `besides` holds a running lease on one of `ids`, or None."""
        with connection_lock(self.db):
            row = self.db.execute(
                f"SELECT leased_by FROM outbox WHERE id IN ({_marks(ids)}) AND status = ?"
                " AND leased_by IS NOT NULL AND leased_by != ? AND next_attempt_at > ? LIMIT 1",
                [*ids, PENDING, besides, self.clock()],
            ).fetchone()
        return str(row[0]) if row else None

    def renew(self, ids: list[int], holder: str, seconds: float) -> bool:
        """Extend `holder`'s lease on every row of `ids`; False when it lost any of them (expired and taken,
        or finished by another agent): then it must not act on them. An expired lease nobody took is kept."""
        now = self.clock()
        with transaction(self.db):
            cursor = self.db.execute(
                f"UPDATE outbox SET next_attempt_at = ? WHERE id IN ({_marks(ids)}) AND status = ? AND leased_by = ?",
                [now + seconds, *ids, PENDING, holder],
            )
            if cursor.rowcount == len(set(ids)):
                return True
            self.db.execute(  # all or none: give back what is still held
                f"UPDATE outbox SET leased_by = NULL, next_attempt_at = ? WHERE id IN ({_marks(ids)})"
                " AND status = ? AND leased_by = ?",
                [now, *ids, PENDING, holder],
            )
            return False

    def release(self, ids: list[int], holder: str, *, retry_at: float, note: str | None = None) -> None:
        """Give `holder`'s rows back without counting a failed attempt (nothing failed: there is a reason
        to wait), due again at `retry_at`; `note` says why in `last_error`."""
        with transaction(self.db):
            self.db.execute(
                f"UPDATE outbox SET leased_by = NULL, next_attempt_at = ?, last_error = coalesce(?, last_error),"
                f" updated_at = ? WHERE id IN ({_marks(ids)}) AND status = ? AND leased_by = ?",
                [retry_at, note, self.clock(), *ids, PENDING, holder],
            )

    def leases(self) -> list[dict[str, Any]]:
        """Running leases: `{holder, rows, until}` per holder, for `edge sync status` and a second agent."""
        with connection_lock(self.db):
            rows = self.db.execute(
                "SELECT leased_by, count(*), max(next_attempt_at) FROM outbox"
                " WHERE status = ? AND leased_by IS NOT NULL AND next_attempt_at > ? GROUP BY leased_by",
                [PENDING, self.clock()],
            ).fetchall()
        return [{"holder": holder, "rows": count, "until": until} for holder, count, until in rows]

    def requeue(self, *, reason: str | None = None) -> list[int]:
        """Parked rows (those whose `last_error` contains `reason`, or all) back to pending, due now, with
        their attempts reset; returns their ids. Joins the caller's transaction."""
        with transaction(self.db):
            where, params = "status = ?", [PARKED]
            if reason:
                where += " AND instr(lower(coalesce(last_error, '')), lower(?)) > 0"
                params.append(reason)
            ids = [row[0] for row in self.db.execute(f"SELECT id FROM outbox WHERE {where}", params).fetchall()]
            if ids:
                self.db.execute(
                    f"UPDATE outbox SET status = ?, attempts = 0, next_attempt_at = 0, leased_by = NULL,"
                    f" updated_at = ? WHERE id IN ({_marks(ids)})",
                    [PENDING, self.clock(), *ids],
                )
        return ids

    def mark_done(self, id: int) -> None:
        """The row was delivered."""
        with transaction(self.db):
            cursor = self.db.execute(
                "UPDATE outbox SET status = ?, last_error = NULL, leased_by = NULL, updated_at = ? WHERE id = ?",
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
                       leased_by = NULL,
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
