"""Was central reachable recently? The newest of two signals decides: the sync agent's last probe (shared
through `sync_state`) and the box's own last successful call to central.

- newest is a success within the window: reachable, ask;
- newest is the agent seeing central offline (however old: while central stays down the agent backs off
  for up to 10 minutes between probes): unreachable, do not ask, so a down central costs no latency;
- otherwise (no signal, or only an old success: no agent running, as in a store without sync): unknown,
  and one question per `probe_every_s` may find out.

The box's own failures are the circuit breaker's business, not this one's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from edge.store.sync_state import CENTRAL, SyncState

Verdict = Literal["reachable", "unreachable", "unknown"]


class Reachability:
    def __init__(
        self,
        sync_state: SyncState,
        window_s: float,
        probe_every_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sync_state = sync_state
        self.window_s = window_s
        self.probe_every_s = probe_every_s
        self.clock = clock
        self.own_success: float | None = None  # when the box's own last call to central succeeded
        self.probed_at: float | None = None  # when a question last went out to find out (state unknown)

    def succeeded(self) -> None:
        self.own_success = self.clock()

    def verdict(self) -> Verdict:
        """Blocking (reads SQLite): call it off the event loop."""
        signals: list[tuple[float, bool]] = []
        if self.own_success is not None:
            signals.append((self.own_success, True))
        row = self.sync_state.get(CENTRAL)
        if row is not None and row.get("last_attempt_at"):
            signals.append((float(row["last_attempt_at"]), row.get("state") == "online"))
        if not signals:
            return "unknown"
        when, success = max(signals)
        if not success:
            return "unreachable"
        return "reachable" if self.clock() - when <= self.window_s else "unknown"

    def may_ask(self) -> bool:
        """Blocking. Reachable: yes; unreachable: no; unknown: one question per `probe_every_s`."""
        verdict = self.verdict()
        if verdict != "unknown":
            return verdict == "reachable"
        now = self.clock()
        if self.probed_at is not None and now - self.probed_at < self.probe_every_s:
            return False
        self.probed_at = now
        return True
