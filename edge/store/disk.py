"""The data volume: how full it is, and what a full one looks like to a writer.

A box shares one small volume (5 Gi) between SQLite and its bundles. When it fills, SQLite raises
SQLITE_FULL ("database or disk is full") and plain file writes raise ENOSPC; the write paths turn
either into `StorageFull`, a 503 the API layer renders in each family's shape, so a shopper's turn
fails with a clear answer instead of a 500 and the server keeps serving what it can (reads, probes).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError

SQLITE_FULL = 13


class StorageFull(EdgeError):
    """The data volume (or SQLite's page limit) is full: nothing more can be written until space is freed."""

    status, code, openai_type = 503, "storage_full", "server_error"

    def __init__(self) -> None:
        super().__init__(
            "The box's storage is full, so this could not be saved. Please ask a member of staff.",
            headers={"Retry-After": "300"},
        )


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL, or ENOSPC from the file system."""
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def storage_error(exc: BaseException) -> BaseException:
    """`exc` as `StorageFull` when it says the disk is full, else `exc` itself."""
    if isinstance(exc, StorageFull) or not is_disk_full(exc):
        return exc
    error = StorageFull()
    error.__cause__ = exc
    return error


@dataclass(frozen=True)
class VolumeUsage:
    total: int
    used: int
    free: int  # available to this (unprivileged) process


def volume_usage(path: Path) -> VolumeUsage:
    """Usage of the file system holding `path` (or its nearest existing parent: before the first start)."""
    stats = os.statvfs(next(p for p in (path, *path.resolve().parents) if p.exists()))
    total = stats.f_blocks * stats.f_frsize
    return VolumeUsage(total=total, used=total - stats.f_bfree * stats.f_frsize, free=stats.f_bavail * stats.f_frsize)


def database_bytes(path: Path) -> int:
    """Size of the SQLite file with its WAL (what the database holds on the volume)."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
