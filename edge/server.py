"""uvicorn as the box runs it: the app hears about SIGTERM when the drain starts, not after it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import FrameType

import uvicorn


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT, first `on_drain()` (readiness off, queued LLM work told to come back later),
    then uvicorn's own graceful shutdown: stop accepting, let in-flight requests finish."""

    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_drain = on_drain
        self._drained = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self._drained:
            self._drained = True
            with contextlib.suppress(Exception):  # shutting down anyway; a failed notice must not stop it
                self._on_drain()
        super().handle_exit(sig, frame)
