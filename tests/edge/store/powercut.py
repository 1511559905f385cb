"""A power cut for SQLite, and the box's store code running over it.

`PowerCut` is an apsw VFS over the real files that keeps, for every file, what has reached the disk
(its content as of its last xSync) apart from what is only in the page cache (the writes and
truncations since). At the chosen operation the power goes off: `images` is what the disk then holds,
and every later write, sync or delete fails as a dead machine's would. What is not synced is lost:
all of it (`torn=False`), or a random part of it, 512-byte sector by sector, in any order (`torn=True`,
what a disk's write cache and the kernel's writeback do). A file created since the last sync of its
directory has no directory entry on the disk: SQLite's unix VFS fsyncs the directory the first time it
syncs a new WAL or journal, so here a file that was never synced does not survive (or, torn, may
survive with whatever part of it reached the disk). The -shm file is memory: never part of `images`.
Deletions are taken as durable at once: the box's connection stays open, so SQLite deletes nothing
while it runs.

The standard library's sqlite3 cannot use an apsw VFS, so `ApswConnection` gives sqlite-utils the part of
`sqlite3.Connection` it and the stores use: the box's own `configure`, `Writer` and `ConversationStore`
then run unchanged over the simulated disk.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

SECTOR = 512


@dataclass
class _Disk:
    durable: bytearray | None  # content as of the last sync; None: created since, never synced
    cached: list[tuple[int, bytes] | int] = field(default_factory=list)  # writes (offset, data) and truncations


def _write(image: bytearray, offset: int, data: bytes) -> None:
    if len(image) < offset:
        image.extend(bytes(offset - len(image)))  # the file grew but the bytes between never landed
    image[offset : offset + len(data)] = data


class PowerCut(apsw.VFS):
    def __init__(self, name: str = "powercut") -> None:
        super().__init__(name, "")
        self.name = name
        self.arm(None, random.Random(0), torn=False)

    def arm(self, cut_at: int | None, rng: random.Random, *, torn: bool) -> None:
        """Power on, with the cut due at the `cut_at`-th write, truncate, sync or delete (None: only `cut()`)."""
        self.disks: dict[str, _Disk] = {}
        self.operations = 0
        self.cut_at = cut_at
        self.rng = rng
        self.torn = torn
        self.images: dict[str, bytes] | None = None

    @property
    def off(self) -> bool:
        return self.images is not None

    def cut(self) -> None:
        """The power goes off now; `images` holds what survives on the disk."""
        if self.images is None:
            survivors = {path: self._survivor(disk) for path, disk in self.disks.items()}
            self.images = {path: bytes(image) for path, image in survivors.items() if image is not None}

    def step(self) -> None:
        if self.images is not None:
            raise apsw.IOError("the power is off")
        self.operations += 1
        if self.cut_at is not None and self.operations >= self.cut_at:
            self.cut()
            raise apsw.IOError("power cut")

    def _keep(self) -> bool:
        return self.torn and self.rng.random() < 0.5

    def _survivor(self, disk: _Disk) -> bytearray | None:
        if disk.durable is None and not self._keep():
            return None
        image = bytearray(disk.durable or b"")
        for change in disk.cached:
            if isinstance(change, int):
                if self._keep():
                    del image[change:]
                continue
            offset, data = change
            for start in range(0, len(data), SECTOR):
                if self._keep():
                    _write(image, offset + start, data[start : start + SECTOR])
        return image

    def disk(self, path: str) -> _Disk:
        if path not in self.disks:
            file = Path(path)
            self.disks[path] = _Disk(bytearray(file.read_bytes()) if file.exists() else None)
        return self.disks[path]

    def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
        path = name.filename() if isinstance(name, apsw.URIFilename) else name
        if path is None:  # a temporary file: gone at a power cut whatever happens, nothing to track
            return apsw.VFSFile("", name, flags)
        self.disk(path)
        return _File(self, path, name, flags)

    def xDelete(self, filename: str, syncdir: bool) -> None:
        self.step()
        super().xDelete(filename, syncdir)
        self.disks.pop(filename, None)


class _File(apsw.VFSFile):
    def __init__(self, vfs: PowerCut, path: str, name: Any, flags: list[int]) -> None:
        super().__init__("", name, flags)
        self.vfs, self.path = vfs, path

    def xWrite(self, data: bytes, offset: int) -> None:
        self.vfs.step()
        super().xWrite(data, offset)
        self.vfs.disk(self.path).cached.append((offset, bytes(data)))

    def xTruncate(self, newsize: int) -> None:
        self.vfs.step()
        super().xTruncate(newsize)
        self.vfs.disk(self.path).cached.append(newsize)

    def xSync(self, flags: int) -> None:
        """What the page cache holds reaches the disk (no real fsync: the simulation is the disk)."""
        self.vfs.step()
        disk = self.vfs.disk(self.path)
        image = disk.durable if disk.durable is not None else bytearray()
        for change in disk.cached:
            if isinstance(change, int):
                del image[change:]
            else:
                _write(image, *change)
        disk.durable, disk.cached = image, []


def _sqlite3_error(exc: apsw.Error) -> sqlite3.Error:
    """The sqlite3 exception the stores catch, with the SQLite code `is_busy` reads."""
    kind = sqlite3.IntegrityError if isinstance(exc, apsw.ConstraintError) else sqlite3.OperationalError
    error = kind(str(exc))
    code = getattr(exc, "extendedresult", None) or getattr(exc, "result", None)
    if code is not None:
        error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


class _Cursor:
    def __init__(self, conn: apsw.Connection, sql: str, parameters: Sequence[Any] | dict[str, Any]) -> None:
        cursor = conn.cursor()
        described: list[Any] = []

        def trace(traced: apsw.Cursor, _sql: str, _bindings: Any) -> bool:
            described.append(traced.description)  # prepared, not yet stepped: known even for no rows
            return True

        cursor.exec_trace = trace
        try:
            rows = list(cursor.execute(sql, parameters))
        except apsw.Error as exc:
            raise _sqlite3_error(exc) from exc
        self.description = (described[-1] or None) if described else None
        self.lastrowid = conn.last_insert_rowid()
        self.rowcount = conn.changes() if self.description is None else -1
        self._rows: Iterator[tuple[Any, ...]] = iter(rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        return next(self._rows, None)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self._rows


class ApswConnection:
    """What sqlite-utils and the stores use of `sqlite3.Connection`, over an apsw connection (autocommit, like
    Python's legacy mode for everything the stores do: they BEGIN explicitly)."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.apsw = conn

    @property
    def in_transaction(self) -> bool:
        return self.apsw.in_transaction

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> _Cursor:
        return _Cursor(self.apsw, sql, parameters)

    def close(self) -> None:
        self.apsw.close(True)
