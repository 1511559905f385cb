"""Hot-answer cache: bounded, expiring, keyed on the normalised question.

Only answers that do not depend on the conversation (curated answers) are cached, so a cached
reply is always the reply the full pipeline would give.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from edge.text import normalise

V = TypeVar("V")


def cache_key(query: str) -> str:
    return normalise(query).casefold()


class AnswerCache(Generic[V]):
    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._ttl = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, query: str) -> V | None:
        key = cache_key(query)
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] < self._clock():
                if item is not None:
                    del self._items[key]
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[1]

    def clear(self) -> None:
        """Forget every answer (the answers they came from changed)."""
        with self._lock:
            self._items.clear()

    def put(self, query: str, value: V) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._items[cache_key(query)] = (self._clock() + self._ttl, value)
            self._items.move_to_end(cache_key(query))
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
