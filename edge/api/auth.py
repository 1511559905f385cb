"""App-key authentication (hashed, constant-time) and per-key token-bucket rate limiting."""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretStr

from edge.api.errors import TooManyRequests, Unauthorized


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """Holds only sha256 digests of the configured keys; compares every one in constant time."""

    def __init__(self, keys: list[SecretStr]) -> None:
        self._digests = [_digest(key.get_secret_value()) for key in keys]

    def authenticate(self, header: str | None) -> str:
        """Return a stable, non-secret id of the key, or raise Unauthorized (Dify's messages)."""
        if not header or " " not in header:
            raise Unauthorized("Authorization header must be provided and start with 'Bearer'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized("Authorization scheme must be 'Bearer'")
        candidate = _digest(token.strip())
        matched = False
        for digest in self._digests:  # no early exit: timing does not reveal which key matched
            matched |= hmac.compare_digest(candidate, digest)
        if not matched:
            raise Unauthorized("Access token is invalid")
        return candidate.hex()[:12]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key: `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str) -> None:
        with self._lock:
            now = self._clock()
            bucket = self._buckets.setdefault(key_id, _Bucket(float(self._burst), now))
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = math.ceil((1.0 - bucket.tokens) / self._rate)
        raise TooManyRequests("Too many requests. Please try again later.", headers={"Retry-After": str(max(1, wait))})
