"""Staff session tokens and the sign-in limit, without an app: a fake clock, real HMACs and real PIN digests."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge.api.errors import TooManyRequests
from edge.api.kiosk_auth import KioskSessions, load_or_create_secret
from edge.api.staff_auth import SECRET_FILE, SignInLimiter, StaffSessions
from edge.pin import hash_pin

SECRET = b"t" * 32
DIGEST = hash_pin("246810", iterations=1000)
OTHER_DIGEST = hash_pin("135791", iterations=1000)
DAY = 86400


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_token_carries_the_name_and_its_expiry() -> None:
    clock = Clock()
    sessions = StaffSessions(SECRET, DIGEST, max_age_s=3600, clock=clock)
    token, issued = sessions.issue("  Li 李\x07 ")
    assert issued.name == "Li 李" and issued.expires_at == int(clock.now) + 3600
    assert sessions.verify(token) == issued
    assert "李" not in token and token.isascii()  # the name travels as urlsafe base64


def test_a_token_expires_and_a_token_from_the_future_is_refused() -> None:
    clock = Clock()
    sessions = StaffSessions(SECRET, DIGEST, max_age_s=3600, clock=clock)
    token, _ = sessions.issue("Li")
    clock.now += 3600
    assert sessions.verify(token) is not None
    clock.now += 1
    assert sessions.verify(token) is None
    clock.now -= 2 * DAY  # issued "a day from now" as the box's clock sees it
    assert sessions.verify(token) is None


def test_a_new_pin_signs_everyone_out() -> None:
    token, _ = StaffSessions(SECRET, DIGEST, max_age_s=3600).issue("Li")
    assert StaffSessions(SECRET, DIGEST, max_age_s=3600).verify(token) is not None  # a restart, same PIN
    assert StaffSessions(SECRET, OTHER_DIGEST, max_age_s=3600).verify(token) is None
    assert StaffSessions(b"u" * 32, DIGEST, max_age_s=3600).verify(token) is None  # the secret file rotated


def test_a_kiosk_token_is_not_a_staff_token_even_under_the_same_secret() -> None:
    kiosk_token = KioskSessions(SECRET).issue()
    assert StaffSessions(SECRET, DIGEST, max_age_s=DAY).verify(kiosk_token) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda name, issued, mac: f"{name}.{issued}.{mac[:-1]}A" if mac[-1] != "A" else f"{name}.{issued}.{mac[:-1]}B",
        lambda name, issued, mac: f"{name}.{int(issued) + 1}.{mac}",
        lambda name, issued, mac: f"TGk.{issued}.{mac}",  # another name ("Li"), same MAC
        lambda name, issued, mac: f"{name}.{issued}",
        lambda name, issued, mac: f"{name}.{issued}.{mac}.x",
        lambda name, issued, mac: f"{name}=.{issued}.{mac}",
        lambda name, issued, mac: f"{name}.²{issued}.{mac}",
        lambda name, issued, mac: f"{'A' * 5000}.{issued}.{mac}",
        lambda name, issued, mac: "",
    ],
    ids=range(9),
)
def test_a_forged_or_malformed_token_is_refused(mangle) -> None:
    sessions = StaffSessions(SECRET, DIGEST, max_age_s=DAY)
    token, _ = sessions.issue("Wang")
    assert sessions.verify(mangle(*token.split("."))) is None


def test_the_staff_secret_is_its_own_file_and_the_kiosk_keeps_its_own(tmp_path: Path) -> None:
    kiosk = load_or_create_secret(tmp_path)
    staff = load_or_create_secret(tmp_path, SECRET_FILE)
    assert kiosk != staff and len(staff) == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kiosk-secret", "staff-secret"]
    assert stat.S_IMODE(os.stat(tmp_path / SECRET_FILE).st_mode) == 0o600
    assert load_or_create_secret(tmp_path, SECRET_FILE) == staff  # kept across restarts
    assert load_or_create_secret(tmp_path) == kiosk


def retry_after(error: pytest.ExceptionInfo[TooManyRequests]) -> int:
    return int(error.value.headers["Retry-After"])


def test_a_client_gets_its_attempts_then_waits_for_the_window() -> None:
    clock = Clock(100.0)
    limiter = SignInLimiter(attempts=3, window_s=60, clock=clock)
    for _ in range(3):
        limiter.reserve("10.0.0.5")
        clock.now += 10
    with pytest.raises(TooManyRequests) as refused:
        limiter.reserve("10.0.0.5")
    assert retry_after(refused) == 30  # the first wrong PIN (at 100) leaves the window at 160
    limiter.reserve("10.0.0.6")  # another device is not held back
    clock.now = 160.5
    limiter.reserve("10.0.0.5")  # one slot freed


def test_a_right_pin_is_not_counted_as_a_wrong_one() -> None:
    limiter = SignInLimiter(attempts=2, window_s=60, clock=Clock())
    for _ in range(5):
        limiter.release("10.0.0.5", limiter.reserve("10.0.0.5"))
    limiter.reserve("10.0.0.5")
    limiter.reserve("10.0.0.5")
    with pytest.raises(TooManyRequests):
        limiter.reserve("10.0.0.5")


def test_the_whole_store_is_limited_to_four_times_one_client() -> None:
    clock = Clock(0.0)
    limiter = SignInLimiter(attempts=2, window_s=300, clock=clock)
    for n in range(8):
        limiter.reserve(f"10.0.1.{n // 2}")
        clock.now += 1
    with pytest.raises(TooManyRequests) as refused:
        limiter.reserve("10.0.9.9")  # a fresh address: the global limit holds it
    assert retry_after(refused) == 292
    assert "box" in refused.value.message
