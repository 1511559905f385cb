"""Liveness and readiness of the sync agent container: is `edge sync run` still making passes?

The agent records every attempt on every stream in SQLite (`sync_state.last_attempt_at`), online or
not, at least once per backoff period. This exits 1 when the newest record is older than
max(3600 s, 2 x KIOSK_SYNC_BACKOFF_MAX_S + 60 s), that is when the agent hangs; a box with no record
yet (first start) is alive. Standard library only, so the probe is cheap on a 2-core box.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from pathlib import Path


def stale_after_s(env: dict[str, str]) -> float:
    return max(3600.0, 2 * float(env.get("KIOSK_SYNC_BACKOFF_MAX_S", "600")) + 60.0)


def newest_attempt(database: Path) -> float | None:
    if not database.is_file():
        return None
    with contextlib.closing(sqlite3.connect(database, timeout=5)) as conn:
        try:
            (newest,) = conn.execute("SELECT MAX(last_attempt_at) FROM sync_state").fetchone()
        except sqlite3.OperationalError:  # not migrated yet
            return None
    return newest


def main() -> int:
    database = Path(os.environ.get("KIOSK_DATA_DIR", "data")) / "kiosk.sqlite3"
    newest = newest_attempt(database)
    if newest is None:
        print("sync agent: no pass recorded yet")
        return 0
    age = time.time() - newest
    limit = stale_after_s(dict(os.environ))
    print(f"sync agent: last attempt {age:.0f} s ago (limit {limit:.0f} s)")
    return 0 if age <= limit else 1


if __name__ == "__main__":
    sys.exit(main())
