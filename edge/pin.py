"""The store's staff PIN, kept only as a salted PBKDF2 digest (`pbkdf2_sha256$<iterations>$<salt>$<hash>`).

The digest sits in a Secret and in the box's environment; the PIN a colleague types is never stored.
PBKDF2 makes each guess cost tens of milliseconds, and sign-in is rate-limited on top (`edge/api/staff_auth.py`):
a 4-digit PIN alone is weak, so `edge staff-pin` asks for at least 6 characters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 120_000
MIN_PIN_LENGTH = 6
_DIGEST = re.compile(rf"{ALGORITHM}\$(\d{{4,7}})\$([A-Za-z0-9_-]{{16,64}})\$([A-Za-z0-9_-]{{43}})")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(pin: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8"), salt, iterations)


def hash_pin(pin: str, *, iterations: int = ITERATIONS) -> str:
    """A new digest of `pin`, with a fresh random salt."""
    salt = secrets.token_bytes(16)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(_derive(pin, salt, iterations))}"


def is_pin_digest(text: str) -> bool:
    return _DIGEST.fullmatch(text) is not None


def verify_pin(pin: str, digest: str) -> bool:
    """Whether `pin` is the one `digest` was made from (constant-time compare)."""
    match = _DIGEST.fullmatch(digest)
    if match is None or len(pin) > 256:
        return False
    iterations, salt, expected = int(match.group(1)), _unb64(match.group(2)), _unb64(match.group(3))
    return hmac.compare_digest(_derive(pin, salt, iterations), expected)


def fingerprint(digest: str) -> str:
    """A short stand-in for the digest that staff session tokens are bound to: a new PIN signs everyone out."""
    return hashlib.sha256(digest.encode("ascii")).hexdigest()[:16]
