"""Central Dify's app parameters as the sync agent last pulled them (opening statement, suggested questions)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

from edge.store.db import connection_lock, transaction


class CentralParameters:
    """Central's `/parameters` as last pulled; the runtime's own `/v1/parameters` prefers it to settings."""

    def __init__(self, db: sqlite_utils.Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def save(self, body: dict[str, Any]) -> bool:
        """Store `body`; returns whether it differed from what was stored."""
        text = json.dumps(body, ensure_ascii=False, sort_keys=True)
        with transaction(self.db):
            row = self.db.execute("SELECT body FROM central_parameters WHERE id = 1").fetchone()
            if row and row[0] == text:
                return False
            self.db.execute(
                "INSERT INTO central_parameters (id, body, fetched_at) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET body = excluded.body, fetched_at = excluded.fetched_at",
                [text, self.clock()],
            )
        return True

    def get(self) -> dict[str, Any] | None:
        with connection_lock(self.db):
            row = self.db.execute("SELECT body FROM central_parameters WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None
