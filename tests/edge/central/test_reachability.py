from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.central.reachability import Reachability
from edge.store.db import open_database
from edge.store.sync_state import CENTRAL, SyncState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Clock, SyncState, Reachability]]:
    db = open_database(tmp_path / "k.sqlite3")
    clock = Clock()
    sync = SyncState(db, clock=clock)
    yield clock, sync, Reachability(sync, window_s=300, probe_every_s=60, clock=clock)
    db.close()


def test_the_newest_signal_decides(world: tuple[Clock, SyncState, Reachability]) -> None:
    clock, sync, reach = world
    sync.record(CENTRAL, "offline", success=False)
    assert reach.verdict() == "unreachable"
    clock.now += 3600
    assert reach.verdict() == "unreachable" and not reach.may_ask()  # the agent backs off: still down
    sync.record(CENTRAL, "online", success=True)
    assert reach.verdict() == "reachable" and reach.may_ask()
    clock.now += 301
    assert reach.verdict() == "unknown"  # no agent any more: too old to trust
    reach.succeeded()  # the box's own call is a signal too
    assert reach.verdict() == "reachable"
    clock.now += 5
    sync.record(CENTRAL, "offline", success=False)  # newer than the box's own success
    assert reach.verdict() == "unreachable"


def test_without_any_signal_one_question_per_interval_finds_out(world: tuple[Clock, SyncState, Reachability]) -> None:
    clock, _, reach = world
    assert reach.verdict() == "unknown"
    assert reach.may_ask() and not reach.may_ask()
    clock.now += 60
    assert reach.may_ask()
    reach.succeeded()
    assert reach.may_ask() and reach.may_ask()
