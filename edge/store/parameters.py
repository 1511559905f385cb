"""Central Dify's app parameters as the sync agent last pulled them (opening statement, suggested questions)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

from edge.store.db import connection_lock, transaction

log = logging.getLogger(__name__)


class CentralParameters:
    """Central's `/parameters` as last pulled; the runtime's own `/v1/parameters` prefers it to settings."""

    def __init__(self, db: sqlite_utils.Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def save(self, body: dict[str, Any]) -> bool:
        """Store `body` (a JSON object, already checked by the sync agent); returns whether it differed from
        what was stored."""
        if not isinstance(body, dict):
            raise ValueError(f"central's parameters must be a JSON object, not {type(body).__name__}")
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
        """The stored object, or None: also when an older agent stored something else (a JSON list from
        central once made the box's own `GET /v1/parameters` fail)."""
        with connection_lock(self.db):
            row = self.db.execute("SELECT body FROM central_parameters WHERE id = 1").fetchone()
        if not row or row[0] is None:
            return None
        try:
            body = json.loads(row[0])
        except ValueError:
            body = None
        if not isinstance(body, dict):
            log.warning("stored central parameters are not a JSON object; ignored until the next pull")
            return None
        return body
