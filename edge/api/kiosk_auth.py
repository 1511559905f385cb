"""How the kiosk page authenticates without holding a key: a same-origin session cookie issued by the box.

`GET /` (the page) sets an HttpOnly, SameSite=Strict cookie holding `<sid>.<issued_at>.<mac>`, an
HMAC-SHA256 of the session id and its issue time under a secret kept in `data_dir`. Nothing is stored
per session: the box checks the MAC and the age. The cookie is honoured only

- on the chat-facing Dify routes a kiosk needs (they take `ChatCaller` instead of `AppKey`),
- when the request provably comes from the page's own origin (`Sec-Fetch-Site: same-origin`, or an
  `Origin` naming this host; a request that changes something must carry one of the two). "This host"
  is the request's `Host`, which a DNS-rebinding page controls too: `edge/api/hosts.py` has already
  refused any host the box does not answer to,
- with the Dify `user` pinned to `kiosk-<sid>`, whatever the page sends, so a kiosk session can only
  ever read and continue its own conversations. The page asks for a new session at every idle reset,
  so the next shopper is a different user from the box's point of view.

App keys (`Authorization: Bearer`) work unchanged and win when both are present.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request

from edge.api.errors import Forbidden, Unauthorized

log = logging.getLogger(__name__)

COOKIE = "kiosk_session"
USER_PREFIX = "kiosk-"
SECRET_FILE = "kiosk-secret"
# A kiosk page renews its session at every idle reset and on a 401, so a short life costs nothing.
SESSION_MAX_AGE_S = 12 * 3600
CLOCK_SKEW_S = 60
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SECRET_BYTES = 32
# What `issue` writes: urlsafe base64 (the id and the MAC) and ASCII digits (the issue time).
_TOKEN_PART = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Caller:
    """Who is calling a chat route: an app key (any `user`) or a kiosk session (its own user only)."""

    key_id: str
    pinned_user: str | None = None

    def user(self, requested: str) -> str:
        """The Dify `user` this call acts for: a kiosk session's own, an app key's as requested."""
        return self.pinned_user or requested


@dataclass(frozen=True)
class KioskSession:
    sid: str
    issued_at: int

    @property
    def user(self) -> str:
        return USER_PREFIX + self.sid


def load_or_create_secret(data_dir: Path, name: str = SECRET_FILE) -> bytes:
    """The signing secret in `data_dir/name` (mode 0600), so a restart does not log out open kiosk pages
    (the staff page keeps its own, `staff-secret`: a kiosk token is never a staff one).

    A box restarts for upgrades and after a crash; with a secret made at start every open page would
    lose its session, and with it the shopper's conversation. The file sits beside the database,
    which holds the conversations themselves, so it needs no stronger protection. Delete it to rotate.
    """
    path = data_dir / name
    try:
        secret = bytes.fromhex(path.read_text(encoding="ascii").strip())
        if len(secret) >= _SECRET_BYTES:
            return secret
        log.warning("secret in %s is too short; making a new one", path)
    except FileNotFoundError:
        pass
    except ValueError:
        log.warning("secret in %s is not hex; making a new one", path)
    secret = secrets.token_bytes(_SECRET_BYTES)
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(secret.hex())
    os.replace(temporary, path)
    return secret


class KioskSessions:
    """Issues and checks kiosk session tokens; holds only the secret, no per-session state."""

    def __init__(
        self, secret: bytes, max_age_s: int = SESSION_MAX_AGE_S, clock: Callable[[], float] = time.time
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the kiosk secret must be at least 16 bytes")
        self._secret = secret
        self.max_age_s = max_age_s
        self._clock = clock

    def _mac(self, sid: str, issued_at: int) -> str:
        digest = hmac.new(self._secret, f"kiosk-v1.{sid}.{issued_at}".encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def issue(self) -> str:
        sid = secrets.token_urlsafe(16)
        issued_at = int(self._clock())
        return f"{sid}.{issued_at}.{self._mac(sid, issued_at)}"

    def verify(self, token: str) -> KioskSession | None:
        """The session a token stands for, or None when it is forged, malformed or too old.

        A cookie is whatever the client sent, decoded as latin-1: only the characters `issue` uses are
        read further (`str.isdigit` alone takes "²", which `int` refuses; a non-ASCII id cannot be MACed).
        """
        parts = token.split(".")
        if len(parts) != 3 or not all(_TOKEN_PART.fullmatch(part) for part in parts) or len(parts[1]) > 12:
            return None
        sid, issued, mac = parts
        if not issued.isdigit() or not (0 < len(sid) <= 64):
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(sid, int(issued)).encode()):
            return None
        age = self._clock() - int(issued)
        if age > self.max_age_s or age < -CLOCK_SKEW_S:
            return None
        return KioskSession(sid, int(issued))

    def authenticate(self, request: Request) -> KioskSession | None:
        """None when the request carries no kiosk cookie; raises when it carries a bad or foreign one."""
        token = request.cookies.get(COOKIE)
        if token is None:
            return None
        check_same_origin(request)
        session = self.verify(token)
        if session is None:
            raise Unauthorized("Kiosk session is invalid or has expired; reload the page.")
        return session


def check_same_origin(request: Request, page: str = "kiosk") -> None:
    """Refuse a request that is not from the box's own pages (what a cross-site page would send); `page`
    names the page in the refusal (the kiosk's, or the staff page's).

    Browsers send `Sec-Fetch-Site` only to secure origins (https, localhost), so on a shop's plain-http
    network `Origin` is the proof: every browser sends it on POST and DELETE. A same-origin GET may
    carry neither; it is let through, since a read is pinned to the session's own user and another
    origin cannot read the response anyway.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if fetch_site is not None and fetch_site != "same-origin":
        raise Forbidden(f"{page.capitalize()} sessions are accepted only from the {page} page itself (Sec-Fetch-Site).")
    if origin is not None and not _is_own_origin(origin, request.headers.get("host")):
        raise Forbidden(f"{page.capitalize()} sessions are accepted only from the {page} page itself (Origin).")
    if fetch_site is None and origin is None and request.method not in SAFE_METHODS:
        raise Forbidden(f"A {page} request that changes something must carry Origin or Sec-Fetch-Site.")


def _is_own_origin(origin: str, host: str | None) -> bool:
    """`Origin` names this very host and port (the scheme is not compared: TLS may end at a proxy)."""
    if not host or origin == "null":
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()
