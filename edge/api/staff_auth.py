"""How store staff sign in to the staff page: the store's PIN, a signed session cookie, and a sign-in limit.

A colleague types the store's staff PIN and their name; the box checks the PIN against its digest
(`edge/pin.py`, PBKDF2, run in a worker thread) and sets `staff_session`, an HttpOnly, SameSite=Strict
cookie on `/staff` holding `<name>.<issued_at>.<mac>`: the name (UTF-8, urlsafe base64), its issue time,
and an HMAC-SHA256 of both under the staff secret (`staff-secret` in `data_dir`, not the kiosk's) and
the PIN digest's fingerprint. So

- a kiosk token never opens a staff route (another secret, another MAC), nor does an app key (the
  staff routes read only this cookie);
- a new PIN signs every staff page out (the fingerprint changes, every MAC with it);
- nothing is stored per session: the MAC and the age are the whole check.

Wrong PINs are counted per client address and across all clients (`SignInLimiter`): a device gets
`staff_signin_attempts` per window, the whole store four times that, then 429 with `Retry-After`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from edge.api.errors import TooManyRequests, Unauthorized
from edge.api.kiosk_auth import CLOCK_SKEW_S, check_same_origin
from edge.pin import fingerprint
from edge.store.handoffs import STAFF_NAME_MAX, staff_name

COOKIE = "staff_session"
COOKIE_PATH = "/staff"
SECRET_FILE = "staff-secret"
GLOBAL_FACTOR = 4  # wrong PINs from all clients together, per window: this many times one client's
# What `issue` writes: urlsafe base64 (the name and the MAC) and ASCII digits (the issue time).
_TOKEN_PART = re.compile(r"[A-Za-z0-9_-]+")
_NAME_B64_MAX = 4 * math.ceil(STAFF_NAME_MAX * 4 / 3)  # 40 characters of up to 4 UTF-8 bytes each


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class StaffSession:
    name: str
    issued_at: int
    expires_at: int


class StaffSessions:
    """Issues and checks staff session tokens for one PIN digest; holds the secret, no per-session state."""

    def __init__(self, secret: bytes, pin_digest: str, max_age_s: int, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the staff secret must be at least 16 bytes")
        self._secret = secret
        self._pin = fingerprint(pin_digest)
        self.max_age_s = max_age_s
        self._clock = clock

    def _mac(self, name: str, issued_at: int) -> str:
        message = f"staff-v1.{self._pin}.{name}.{issued_at}".encode("ascii")
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest())

    def issue(self, name: str) -> tuple[str, StaffSession]:
        """A token for `name` (cleaned as the store shows it) and the session it stands for."""
        cleaned = staff_name(name)
        encoded = _b64(cleaned.encode("utf-8"))
        issued_at = int(self._clock())
        token = f"{encoded}.{issued_at}.{self._mac(encoded, issued_at)}"
        return token, StaffSession(cleaned, issued_at, issued_at + self.max_age_s)

    def verify(self, token: str) -> StaffSession | None:
        """The session a token stands for, or None when it is forged, malformed, too old or of another PIN."""
        parts = token.split(".")
        if len(parts) != 3 or not all(_TOKEN_PART.fullmatch(part) for part in parts):
            return None
        encoded, issued, mac = parts
        if len(encoded) > _NAME_B64_MAX or len(issued) > 12 or not issued.isdigit():
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(encoded, int(issued)).encode()):
            return None
        age = self._clock() - int(issued)
        if age > self.max_age_s or age < -CLOCK_SKEW_S:
            return None
        try:
            name = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):  # only a token this box signed gets here
            return None
        return StaffSession(name, int(issued), int(issued) + self.max_age_s)

    def authenticate(self, request: Request) -> StaffSession:
        """The request's staff session; 401 without a valid one, 403 from another origin. The kiosk cookie
        and `Authorization` are never read here."""
        check_same_origin(request, page="staff")
        token = request.cookies.get(COOKIE)
        session = self.verify(token) if token else None
        if session is None:
            raise Unauthorized("Not signed in, or the sign-in has expired: sign in with the staff PIN.")
        return session


class SignInLimiter:
    """Wrong PINs per client address, and across all of them, within a sliding window.

    An attempt is counted before its PIN is checked (`reserve`) and taken back when the PIN was right
    (`release`), so requests racing in parallel cannot slip past the limit while their PINs are hashed.
    The global limit also bounds the memory: once it is reached no attempt is counted until the window moves.
    """

    def __init__(
        self, attempts: int, window_s: float, clock: Callable[[], float] = time.monotonic, factor: int = GLOBAL_FACTOR
    ) -> None:
        self.attempts = attempts
        self.global_attempts = attempts * factor
        self.window_s = window_s
        self._clock = clock
        self._by_client: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._all and self._all[0] <= horizon:
            self._all.popleft()
        for client in list(self._by_client):
            stamps = self._by_client[client]
            while stamps and stamps[0] <= horizon:
                stamps.popleft()
            if not stamps:
                del self._by_client[client]

    def reserve(self, client: str) -> float:
        """Count an attempt from `client`, or raise 429 (with `Retry-After`) when it or the store is over the limit."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            stamps = self._by_client.get(client, deque())
            if len(stamps) >= self.attempts:
                self._refuse(stamps[0], now, "Too many wrong PINs from this device. Please try again later.")
            if len(self._all) >= self.global_attempts:
                self._refuse(self._all[0], now, "Too many wrong PINs on this box. Staff sign-in is paused for a while.")
            stamps.append(now)
            self._by_client[client] = stamps
            self._all.append(now)
            return now

    def release(self, client: str, stamp: float) -> None:
        """The PIN was right: the attempt is not a wrong one."""
        with self._lock:
            for stamps in (self._by_client.get(client), self._all):
                if stamps is not None and stamp in stamps:
                    stamps.remove(stamp)

    def _refuse(self, oldest: float, now: float, message: str) -> None:
        wait = max(1, math.ceil(oldest + self.window_s - now))
        raise TooManyRequests(message, headers={"Retry-After": str(wait)})
