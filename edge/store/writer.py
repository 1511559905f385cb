"""One writer thread for the server's hot write (each answered turn), committing concurrent turns together.

At hundreds of answers a second a thread-pool hop and a COMMIT per turn cost more than the insert
itself. Turns queue here; the writer takes whatever has queued, runs each in its own SAVEPOINT
inside one `BEGIN IMMEDIATE` transaction, commits once (one fsync: the database runs
`synchronous=FULL`), and only then resolves each caller's future -- so a turn is acknowledged only
once it is durable, and one failing turn (a conversation deleted meanwhile) rolls back alone.

A turn is never dropped because another process holds the write lock (the sync agent applying a large
change, slow storage): the batch waits and retries until it commits. Only `close()` bounds the wait:
what still cannot commit `drain_s` after it was called fails, loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any, TypeVar

import sqlite_utils

from edge.store.db import BUSY_TIMEOUT_MS, is_busy, transaction
from edge.store.disk import storage_error

T = TypeVar("T")
log = logging.getLogger(__name__)
_Item = tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]


class _Retry(Exception):
    """A write in the batch met "database is locked": the whole batch is rolled back and tried again."""


def _settle(target: asyncio.Future[Any], source: Future[Any]) -> None:
    if target.cancelled():
        return
    error = source.exception()
    if error is None:
        target.set_result(source.result())
    else:
        target.set_exception(error)


async def committed(future: Future[T]) -> T:
    """Await a write submitted to the writer. Cancelling the awaiting task does not cancel the write:
    the turn commits all the same (the shopper has already seen the answer)."""
    loop = asyncio.get_running_loop()
    target: asyncio.Future[T] = loop.create_future()

    def relay(source: Future[T]) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop closed (shutdown); the write stands
            loop.call_soon_threadsafe(_settle, target, source)

    future.add_done_callback(relay)
    return await target


class Writer:
    """Runs write functions on one thread, grouped into shared transactions of up to `max_batch`.

    `lock_wait_s`: how long one attempt waits for another connection's write lock before the batch is
    tried again (the waiting never holds the connection lock, so reads go on); `drain_s`: how long
    `close()` keeps trying to commit what is queued.
    """

    def __init__(
        self,
        db: sqlite_utils.Database,
        max_batch: int = 64,
        *,
        lock_wait_s: float = BUSY_TIMEOUT_MS / 1000,
        drain_s: float = 10.0,
    ) -> None:
        self.db = db
        self.max_batch = max_batch
        self.lock_wait_s = lock_wait_s
        self.drain_s = drain_s
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="sqlite-writer", daemon=True)
        self._state = threading.Lock()  # orders submit() against close(): nothing queues after the sentinel
        self._closing = False
        self._give_up_at: float | None = None
        self.batches = 0
        self.writes = 0
        self.retries = 0

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Finish every queued write (waiting up to `drain_s` for a locked database), then stop."""
        with self._state:
            if self._closing:
                return
            self._closing = True
            self._give_up_at = time.monotonic() + self.drain_s
            if self._thread.is_alive():
                self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue `fn(*args)`; the returned future resolves once its transaction has committed (or with its
        error). Thread-safe and non-blocking: a closing stream (which cannot await) uses it directly."""
        future: Future[T] = Future()
        with self._state:
            if self._closing or not self._thread.is_alive():
                raise RuntimeError("the writer is not running")
            self._queue.put((fn, args, future))
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the writer thread; returns once its transaction has committed."""
        return await committed(self.submit(fn, *args))

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

    def _giving_up(self) -> bool:
        return self._give_up_at is not None and time.monotonic() >= self._give_up_at

    def _commit(self, batch: list[_Item]) -> None:
        while True:
            try:
                outcomes = self._attempt(batch)
                break
            except Exception as exc:
                cause = exc.__cause__ if isinstance(exc, _Retry) else exc
                if cause is not None and is_busy(cause) and not self._giving_up():
                    self.retries += 1
                    log.warning(
                        "database locked by another connection; %d writes wait and retry", len(batch),
                        extra={"retries": self.retries},
                    )  # fmt: skip
                    continue
                if cause is not None and is_busy(cause):
                    log.error("database still locked at shutdown: %d writes not saved", len(batch))
                else:
                    log.exception("write batch failed")
                outcomes = [(False, cause or exc)] * len(batch)
                break
        self.batches += 1
        self.writes += len(batch)
        for (_, _, future), (ok, value) in zip(batch, outcomes, strict=True):
            with contextlib.suppress(InvalidStateError):  # a caller cancelled it; the write stands
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(storage_error(value))  # a full disk: 503 `storage_full`, not a 500

    def _attempt(self, batch: list[_Item]) -> list[tuple[bool, Any]]:
        """One transaction for the batch. Raises (nothing committed) if the write lock cannot be had or the
        COMMIT fails; a write's own error is its outcome, unless it is "database is locked"."""
        outcomes: list[tuple[bool, Any]] = []
        with transaction(self.db, wait=self.lock_wait_s):
            for fn, args, _ in batch:
                self.db.execute("SAVEPOINT turn")
                try:
                    outcomes.append((True, fn(*args)))
                    self.db.execute("RELEASE turn")
                except Exception as exc:  # this write alone is undone; the others still commit
                    if not self.db.conn.in_transaction:  # SQLite rolled the whole batch back (SQLITE_FULL does)
                        raise
                    self.db.execute("ROLLBACK TO turn")
                    self.db.execute("RELEASE turn")
                    if is_busy(exc):
                        raise _Retry from exc
                    outcomes.append((False, exc))
        return outcomes
