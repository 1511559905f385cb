"""Retention: conversations central already holds are deleted once older than `KIOSK_RETENTION_DAYS`.

A box answers about 300,000 turns a year on a 5 Gi volume it shares with its bundles; without this
the messages and the outbox (which keeps a copy of each turn) grow until SQLite cannot write.

- Only a conversation that is wholly pushed goes: every outbox row of its messages `done` (turns and
  feedback), every outbox row of its hand-offs `done` (changes for central and staff alerts, keyed by the
  hand-off's id) and every `pushed_records` part `done`; its hand-offs go with it. Pending or parked work
  is never deleted, whatever its age; a box that pushes nowhere keeps everything (the readiness warning
  then says the disk fills).
- Age is the conversation's `updated_at` (its last turn): a shopper who came back keeps it young.
- Deletion goes in batches, each one short `BEGIN IMMEDIATE` transaction that re-checks both rules,
  so a turn or a feedback arriving meanwhile keeps its conversation, and the server's writer (another
  process, waiting on `busy_timeout`) gets the lock between batches.
- Freed pages go back to the volume with `PRAGMA incremental_vacuum(N)`, a few MB per transaction,
  when the file has `auto_vacuum=INCREMENTAL` (every file created since retention exists, see
  `migrations`). An older file keeps `auto_vacuum=NONE`: its freed pages are reused by new turns, so
  it stops growing, but it only shrinks after an offline `VACUUM` (README, "Retention and disk").

The sync agent runs it (`SyncAgent.run_forever`): it is the process that marks rows done, it already
runs periodically off the server's event loop and writer thread, and it runs whether central answers
or not (old pushed conversations age out during an outage too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import sqlite_utils

from edge.store.db import connection_lock, transaction
from edge.store.migrations import INCREMENTAL

log = logging.getLogger(__name__)
DAY_S = 86400.0

# One batch: the oldest conversations after the cursor, each with whether anything of it is unpushed. A
# hand-off's rows (`handoff` for central, `alert` for the webhook) are keyed by its id, not a message's: the
# conversations with such rows not done yet are found once per batch (few rows: only the unsent ones).
_CANDIDATES = """
SELECT c.id, c.updated_at,
       EXISTS (SELECT 1 FROM messages m JOIN outbox o ON o.ref = m.id
               WHERE m.conversation_id = c.id AND o.status != 'done')
       OR EXISTS (SELECT 1 FROM pushed_records p WHERE p.conversation_id = c.id AND p.status != 'done')
       OR c.id IN (SELECT h.conversation_id FROM outbox o JOIN handoffs h ON h.id = o.ref
                   WHERE o.status IN ('pending', 'parked') AND o.kind IN ('handoff', 'alert'))
FROM conversations c
WHERE c.updated_at < ? AND (c.updated_at, c.id) > (?, ?)
ORDER BY c.updated_at, c.id
LIMIT ?
"""
_MESSAGES_OF = "SELECT id FROM messages WHERE conversation_id IN ({marks})"
_HANDOFFS_OF = "SELECT id FROM handoffs WHERE conversation_id IN ({marks})"
_DELETES = (
    f"DELETE FROM outbox WHERE ref IN ({_MESSAGES_OF})",
    f"DELETE FROM outbox WHERE kind IN ('handoff', 'alert') AND ref IN ({_HANDOFFS_OF})",
    "DELETE FROM handoffs WHERE conversation_id IN ({marks})",
    f"DELETE FROM feedback WHERE message_id IN ({_MESSAGES_OF})",
    "DELETE FROM messages WHERE conversation_id IN ({marks})",
    "DELETE FROM pushed_records WHERE conversation_id IN ({marks})",
    "DELETE FROM conversations WHERE id IN ({marks})",
    "DELETE FROM central_conversations WHERE conversation_id IN ({marks})",
)


@dataclass
class RetentionReport:
    conversations: int = 0
    messages: int = 0
    outbox_rows: int = 0
    handoffs: int = 0
    kept_unpushed: int = 0  # old enough, but something of it is not on central yet
    pages_reclaimed: int = 0  # handed back to the volume (auto_vacuum=INCREMENTAL)
    free_pages: int = 0  # left in the file, reused by new rows
    seconds: float = 0.0


class Retention:
    """Deletes wholly pushed conversations older than `days` (0: keep everything) and reclaims their space."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        days: float,
        *,
        clock: Callable[[], float] = time.time,
        batch: int = 200,
        vacuum_pages: int = 512,
        pause_s: float = 0.01,
        interval_s: float = 3600.0,
    ) -> None:
        self.db = db
        self.days = days
        self.clock = clock
        self.batch = batch
        self.vacuum_pages = vacuum_pages  # 2 MB of 4 KiB pages per reclaiming transaction
        self.pause_s = pause_s  # between transactions: lets the server's writer in
        self.interval_s = interval_s
        self._last_run: float | None = None

    def run_if_due(self, stop: threading.Event | None = None) -> RetentionReport | None:
        """Run when `interval_s` has passed since the last run (the agent calls this every pass).

        A failure is logged, never raised: retention must not stop the agent from pushing."""
        now = self.clock()
        if self.days <= 0 or (self._last_run is not None and now - self._last_run < self.interval_s):
            return None
        self._last_run = now
        try:
            return self.run(stop)
        except Exception:
            log.exception("retention failed")
            return None

    def run(self, stop: threading.Event | None = None) -> RetentionReport:
        """Delete in batches, then reclaim; `stop` (set on shutdown) ends it between two transactions."""
        started = time.perf_counter()
        report = RetentionReport()
        if self.days > 0:
            cutoff = self.clock() - self.days * DAY_S
            cursor: tuple[float, str] = (float("-inf"), "")
            while not _stopping(stop):
                scanned, cursor = self._batch(cutoff, cursor, report)
                if scanned < self.batch:
                    break
                self._pause(stop)
            self._reclaim(report, stop)
        report.seconds = round(time.perf_counter() - started, 3)
        if report.conversations or report.pages_reclaimed:
            log.info("retention", extra={"retention_days": self.days, **asdict(report)})
        return report

    def _batch(
        self, cutoff: float, cursor: tuple[float, str], report: RetentionReport
    ) -> tuple[int, tuple[float, str]]:
        with transaction(self.db):
            rows = self.db.execute(_CANDIDATES, [cutoff, *cursor, self.batch]).fetchall()
            ids = [conversation_id for conversation_id, _, unpushed in rows if not unpushed]
            report.kept_unpushed += len(rows) - len(ids)
            if ids:
                marks = ", ".join("?" for _ in ids)
                counts = [self.db.execute(sql.format(marks=marks), ids).rowcount for sql in _DELETES]
                report.outbox_rows += counts[0] + counts[1]
                report.messages += counts[4]
                report.conversations += counts[6]
                report.handoffs += counts[2]
        return len(rows), ((rows[-1][1], rows[-1][0]) if rows else cursor)

    def _reclaim(self, report: RetentionReport, stop: threading.Event | None) -> None:
        """Hand free pages back to the volume a few MB per transaction (auto_vacuum=INCREMENTAL only)."""
        lock = connection_lock(self.db)
        with lock:
            incremental = self.db.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL
        while incremental and not _stopping(stop):
            with lock:
                before = self.db.execute("PRAGMA freelist_count").fetchone()[0]
                if before == 0:
                    break
                # Its own (autocommit) transaction. executescript, because the pragma frees one page per step
                # of the statement and `execute` steps a statement without result columns only once.
                self.db.conn.executescript(f"PRAGMA incremental_vacuum({int(self.vacuum_pages)})")
                report.pages_reclaimed += before - self.db.execute("PRAGMA freelist_count").fetchone()[0]
            self._pause(stop)
        with lock:
            report.free_pages = self.db.execute("PRAGMA freelist_count").fetchone()[0]
            # PASSIVE: copies what it can without waiting for (or blocking) anyone; the file is truncated to
            # its new size once every frame is back in it.
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _pause(self, stop: threading.Event | None) -> None:
        if self.pause_s > 0:
            if stop is not None:
                stop.wait(self.pause_s)
            else:
                time.sleep(self.pause_s)


def _stopping(stop: threading.Event | None) -> bool:
    return stop is not None and stop.is_set()
