"""One writer thread for the server's hot write (each answered turn), committing concurrent turns together.

At hundreds of answers a second a thread-pool hop and a COMMIT per turn cost more than the insert
itself. Turns queue here; the writer takes whatever has queued, runs each in its own SAVEPOINT
inside one `BEGIN IMMEDIATE` transaction, commits once, and only then resolves each caller's
future -- so a turn is acknowledged only once it is durable, and one failing turn (a conversation
deleted meanwhile) rolls back alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import sqlite_utils

from edge.store.db import transaction

T = TypeVar("T")
log = logging.getLogger(__name__)
_Item = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop | None, asyncio.Future[Any] | None]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class Writer:
    """Runs write functions on one thread, grouped into shared transactions of up to `max_batch`."""

    def __init__(self, db: sqlite_utils.Database, max_batch: int = 64) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="sqlite-writer", daemon=True)
        self.batches = 0
        self.writes = 0

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Finish every queued write, then stop."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the writer thread; returns once its transaction has committed."""
        if not self._thread.is_alive():
            raise RuntimeError("the writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, args, loop, future))
        return await future

    def put(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue `fn(*args)` without waiting for it: for a turn recorded from a stream that is being closed
        (a generator cannot await there). It commits with the next batch; `close()` still drains it."""
        if not self._thread.is_alive():
            log.error("the writer is not running: a write was dropped")
            return
        self._queue.put((fn, args, None, None))

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stopping = [first], False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)
            if stopping:
                return

    def _commit(self, batch: list[_Item]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with transaction(self.db):
                for fn, args, _, _ in batch:
                    self.db.execute("SAVEPOINT turn")
                    try:
                        outcomes.append((True, fn(*args)))
                        self.db.execute("RELEASE turn")
                    except Exception as exc:  # this write alone is undone; the others still commit
                        self.db.execute("ROLLBACK TO turn")
                        self.db.execute("RELEASE turn")
                        outcomes.append((False, exc))
        except Exception as exc:  # the COMMIT itself failed: nothing in the batch is durable
            log.exception("write batch failed")
            outcomes = [(False, exc)] * len(batch)
        self.batches += 1
        self.writes += len(batch)
        for (_, _, loop, future), (ok, value) in zip(batch, outcomes, strict=True):
            if loop is None or future is None:
                if not ok:
                    log.error("a queued write failed: %r", value)
                continue
            with contextlib.suppress(RuntimeError):  # the caller's loop closed (shutdown); the write stands
                loop.call_soon_threadsafe(_settle, future, ok, value)
