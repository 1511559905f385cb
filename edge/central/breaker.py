"""A circuit breaker for central: after repeated failures, stop asking for a while, so an unreachable
central costs the shopper no latency; then let one question through to probe it (half-open)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Breaker:
    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self.probe_at: float | None = None  # when the one question testing central after the cool-down left

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.cooldown_s else "open"

    def allow(self) -> bool:
        """May this question go to central? While half-open, only the first one does (the probe)."""
        state = self.state
        if state == "closed":
            return True
        now = self.clock()
        # A probe that never reported back (its request died before asking) is given up after a cool-down.
        if state == "half_open" and (self.probe_at is None or now - self.probe_at >= self.cooldown_s):
            self.probe_at = now
            return True
        return False

    def success(self) -> None:
        self.consecutive, self.opened_at, self.probe_at = 0, None, None

    def failure(self) -> None:
        self.consecutive += 1
        if self.probe_at is not None or self.consecutive >= self.failures:
            self.opened_at = self.clock()  # (re)open: a failed probe starts a new cool-down
        self.probe_at = None

    def release(self) -> None:
        """A probe that ended neither way (the shopper left): let the next question probe."""
        self.probe_at = None
