"""Kiosk sessions without the app: tokens, the persisted secret, the same-origin rule, the shipped page."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from edge.api.errors import Forbidden, Unauthorized
from edge.api.kiosk import ASSETS, load_assets
from edge.api.kiosk_auth import (
    COOKIE,
    SECRET_FILE,
    USER_PREFIX,
    Caller,
    KioskSessions,
    check_same_origin,
    load_or_create_secret,
)
from tests.conftest import ROOT

SECRET = b"s" * 32
UI = ROOT / "edge" / "ui"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request(method: str = "GET", host: str = "box:8080", cookie: str | None = None, **headers: str) -> Request:
    raw = [(b"host", host.encode())]
    raw += [(name.replace("_", "-").lower().encode(), value.encode()) for name, value in headers.items()]
    if cookie is not None:
        raw.append((b"cookie", f"{COOKIE}={cookie}".encode()))
    return Request({"type": "http", "method": method, "path": "/v1/chat-messages", "headers": raw, "query_string": b""})


def test_a_token_round_trips_and_pins_its_own_user() -> None:
    sessions = KioskSessions(SECRET)
    token = sessions.issue()
    session = sessions.verify(token)
    assert session is not None and session.user == USER_PREFIX + token.split(".")[0]
    assert sessions.verify(sessions.issue()) != session  # every page load is a new shopper
    assert Caller("k", pinned_user=session.user).user("someone-else") == session.user
    assert Caller("k").user("alice") == "alice"


def test_forged_tampered_and_foreign_tokens_are_refused() -> None:
    sessions = KioskSessions(SECRET)
    sid, issued, mac = sessions.issue().split(".")
    other = KioskSessions(b"t" * 32).issue()
    for token in (
        f"{sid}x.{issued}.{mac}",
        f"{sid}.{int(issued) + 1}.{mac}",
        f"{sid}.{issued}.{mac[:-2]}AA",
        f"{sid}.{issued}",
        other,
        "",
    ):
        assert sessions.verify(token) is None, token


def test_tokens_expire_and_cannot_come_from_the_future() -> None:
    clock = Clock()
    sessions = KioskSessions(SECRET, max_age_s=100, clock=clock)
    token = sessions.issue()
    clock.now += 100
    assert sessions.verify(token) is not None
    clock.now += 1
    assert sessions.verify(token) is None
    clock.now -= 10_000
    assert sessions.verify(token) is None


@given(st.text(max_size=200))
def test_any_cookie_text_is_refused_without_raising(token: str) -> None:
    assert KioskSessions(SECRET).verify(token) is None


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        KioskSessions(b"short")


def test_the_secret_is_made_once_private_and_kept_across_restarts(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path / "data")
    path = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) == 32
    assert load_or_create_secret(tmp_path / "data") == first
    token = KioskSessions(first).issue()
    assert KioskSessions(load_or_create_secret(tmp_path / "data")).verify(token) is not None


@pytest.mark.parametrize("content", ["not hex at all", "abcd"])
def test_a_damaged_secret_file_is_replaced(tmp_path: Path, content: str) -> None:
    (tmp_path / SECRET_FILE).write_text(content)
    secret = load_or_create_secret(tmp_path)
    assert len(secret) == 32 and (tmp_path / SECRET_FILE).read_text() == secret.hex()


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("POST", {"sec_fetch_site": "same-origin"}),
        ("POST", {"origin": "http://box:8080"}),
        ("POST", {"origin": "https://box:8080"}),  # TLS ended at a proxy in front of the box
        ("POST", {"origin": "http://box:8080", "sec_fetch_site": "same-origin"}),
        ("GET", {}),  # a same-origin GET from a plain-http page carries neither header
        ("GET", {"sec_fetch_site": "same-origin"}),
    ],
)
def test_same_origin_requests_pass(method: str, headers: dict[str, str]) -> None:
    check_same_origin(request(method, **headers))


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("POST", {}),  # a change with no proof of origin
        ("DELETE", {}),
        ("POST", {"origin": "http://evil.example"}),
        ("POST", {"origin": "http://box:9999"}),
        ("POST", {"origin": "null"}),
        ("POST", {"origin": "box:8080"}),
        ("POST", {"origin": "http://box:8080", "sec_fetch_site": "same-site"}),
        ("GET", {"sec_fetch_site": "cross-site"}),
        ("GET", {"sec_fetch_site": "none"}),
        ("GET", {"origin": "http://evil.example"}),
    ],
)
def test_cross_origin_requests_are_forbidden(method: str, headers: dict[str, str]) -> None:
    with pytest.raises(Forbidden):
        check_same_origin(request(method, **headers))


def test_authenticate_reads_the_cookie_and_checks_origin_first() -> None:
    sessions = KioskSessions(SECRET)
    token = sessions.issue()
    assert sessions.authenticate(request("POST", sec_fetch_site="same-origin")) is None  # no cookie: not a kiosk
    session = sessions.authenticate(request("POST", cookie=token, origin="http://box:8080"))
    assert session is not None and session.user.startswith(USER_PREFIX)
    with pytest.raises(Forbidden):
        sessions.authenticate(request("POST", cookie=token, origin="http://evil.example"))
    with pytest.raises(Unauthorized):
        sessions.authenticate(request("POST", cookie="forged.1.x", origin="http://box:8080"))


# --- the page as shipped -------------------------------------------------------------------------


def test_every_asset_is_local_and_the_page_is_small() -> None:
    assets = load_assets()
    assert set(assets) == set(ASSETS)
    for name, asset in assets.items():
        text = asset.body.decode("utf-8")
        assert not re.search(r"(https?:)?//[\w.-]+\.[a-z]{2,}", text, re.I), f"{name} names another host"
        assert "@import" not in text and "@font-face" not in text, name
    total = sum(len(asset.body) for asset in assets.values())
    assert total < 48_000, f"the page and its assets weigh {total} bytes"
    page = assets["index.html"].body.decode()
    for name in ASSETS[1:]:
        assert f'"/ui/{name}?v={assets[name].version}"' in page


def test_model_output_is_never_parsed_as_html() -> None:
    script = (UI / "kiosk.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


def test_both_languages_have_every_string() -> None:
    text = (UI / "i18n.js").read_text(encoding="utf-8")
    blocks = re.findall(r"\n  (en|zh): \{(.*?)\n  \}", text, re.S)
    keys = {lang: set(re.findall(r"^\s+(\w+):", body, re.M)) for lang, body in blocks}
    assert set(keys) == {"en", "zh"} and keys["en"] == keys["zh"] and len(keys["en"]) > 20
    used = set(re.findall(r'\bt\("(\w+)"\)', (UI / "kiosk.js").read_text(encoding="utf-8")))
    used |= set(re.findall(r'data-i18n(?:-\w+)?="(\w+)"', (UI / "index.html").read_text(encoding="utf-8")))
    assert used <= keys["en"], used - keys["en"]


def test_the_ui_ships_with_the_package() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    patterns = re.search(r"\[tool\.setuptools\.package-data\]\nedge = \[(.*?)\]", pyproject).group(1)
    shipped = {Path(name).suffix for name in ASSETS}
    assert shipped <= {pattern.strip(' "')[len("ui/*") :] for pattern in patterns.split(",")}
