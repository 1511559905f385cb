"""What the sync agent last saw of central Dify, per stream, shared with the server through SQLite.

The agent (`edge sync`) writes; the server reads it for `/metrics` and for the kiosk page's
"offline from central" indicator. A record older than `max_age_s` means the agent is not running,
so the connectivity is reported as unknown rather than trusted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

from edge.store.db import connection_lock, transaction

CENTRAL = "central"


class SyncState:
    """The `sync_state` table."""

    def __init__(self, db: sqlite_utils.Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def record(
        self, stream: str, state: str, *, success: bool, error: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        """Record one attempt on `stream`; `success` moves `last_success_at`, a failure keeps the old one."""
        now = self.clock()
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO sync_state (stream, state, last_attempt_at, last_success_at, last_error, details)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (stream) DO UPDATE SET state = excluded.state,"
                " last_attempt_at = excluded.last_attempt_at,"
                " last_success_at = COALESCE(excluded.last_success_at, sync_state.last_success_at),"
                " last_error = excluded.last_error, details = excluded.details",
                [
                    stream,
                    state,
                    now,
                    now if success else None,
                    error,
                    json.dumps(details or {}, ensure_ascii=False),
                ],
            )

    def get(self, stream: str) -> dict[str, Any] | None:
        with connection_lock(self.db):
            rows = list(self.db.query("SELECT * FROM sync_state WHERE stream = ?", [stream]))
        if not rows:
            return None
        row = rows[0]
        row["details"] = json.loads(row["details"] or "{}")
        return row

    def all(self) -> list[dict[str, Any]]:
        with connection_lock(self.db):
            rows = list(self.db.query("SELECT * FROM sync_state ORDER BY stream"))
        for row in rows:
            row["details"] = json.loads(row["details"] or "{}")
        return rows

    def central(self, max_age_s: float) -> dict[str, Any]:
        """`{"central": "online"|"offline"|"unknown", "checked_at": epoch seconds or None}`."""
        row = self.get(CENTRAL)
        if row is None or row["last_attempt_at"] is None:
            return {"central": "unknown", "checked_at": None}
        if self.clock() - row["last_attempt_at"] > max_age_s:
            return {"central": "unknown", "checked_at": row["last_attempt_at"]}
        return {"central": "online" if row["state"] == "online" else "offline", "checked_at": row["last_attempt_at"]}
