"""Every request the fake served, so a test can assert what the agent did ("no duplicate runs")."""

from __future__ import annotations

import fnmatch
import json
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

BODY_LIMIT = 65_536


@dataclass
class JournalEntry:
    """One request: what came in, which key (its id, never the secret), what went out and how."""

    seq: int
    at: float
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    key_id: str | None
    status: int | None = None  # what the client received; None when dropped or stalled away
    outcome: str = "pending"  # ok | dropped | stalled | stream_dropped | stream_error | crashed | cancelled
    fault: str | None = None  # the id of the fault rule that shaped the response
    committed_status: int | None = None  # for commit-then-fail: what the handler really answered

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Journal:
    """Thread-safe and append-only until cleared."""

    _entries: list[JournalEntry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(
        self, *, at: float, method: str, path: str, query: dict[str, list[str]], body: Any, key_id: str | None
    ) -> JournalEntry:
        with self._lock:
            entry = JournalEntry(len(self._entries) + 1, at, method, path, query, body, key_id)
            self._entries.append(entry)
            return entry

    def entries(self, method: str | None = None, path: str | None = None) -> list[JournalEntry]:
        """Filter by method and by a glob on the path (`*` also crosses `/`)."""
        with self._lock:
            return [
                e
                for e in self._entries
                if (method is None or e.method == method.upper())
                and (path is None or fnmatch.fnmatchcase(e.path, path))
            ]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return len(self.entries(method, path))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def body_for_journal(raw: bytes, content_type: str) -> Any:
    """JSON bodies as data, anything else as (truncated) text, nothing as None."""
    if not raw:
        return None
    text = raw[:BODY_LIMIT].decode("utf-8", "replace")
    if "json" in content_type:
        try:
            return json.loads(raw)
        except ValueError:
            return text
    return text
