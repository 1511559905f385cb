"""A kiosk cookie is whatever bytes a client sends: anything `KioskSessions.issue` did not write is a 401."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.api.kiosk_auth import COOKIE, KioskSessions
from tests.edge.api.conftest import LiveServer, make_settings

SECRET = b"s" * 32
# Cookie values as raw header bytes: latin-1 on the wire, as a browser or a script may send them.
NON_ASCII = (
    b"a.\xb2.x",  # "²" passes str.isdigit() and fails int()
    "é".encode("latin-1") * 4 + b".1700000000.bm90LWEtbWFj",  # a non-ASCII session id
    "\uff11".encode() + b".x.y",  # UTF-8 bytes of a full-width digit
    b"abc.1700000000.\xff\xfe",
)


@pytest.mark.parametrize("token", NON_ASCII, ids=range(len(NON_ASCII)))
def test_a_non_ascii_token_is_refused_without_raising(token: bytes) -> None:
    assert KioskSessions(SECRET).verify(token.decode("latin-1")) is None


def test_a_session_id_of_other_characters_is_refused() -> None:
    sessions = KioskSessions(SECRET)
    sid, issued, mac = sessions.issue().split(".")
    assert sessions.verify(f"{sid}.{issued}.{mac}") is not None
    for token in (f"{sid}+.{issued}.{mac}", f" {sid}.{issued}.{mac}", f"{sid}.{issued}.{mac}="):
        assert sessions.verify(token) is None, token


@pytest.fixture(scope="module")
def server(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real uvicorn: its scope carries the header bytes as sent (the TestClient re-encodes them as UTF-8)."""
    settings = make_settings(api_bundle, tmp_path_factory.mktemp("kiosk-cookie") / "data", llm_floor=1.0)
    with LiveServer(settings) as live:
        yield live


@pytest.mark.parametrize("token", NON_ASCII, ids=range(len(NON_ASCII)))
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/chat-messages"), ("GET", "/v1/parameters"), ("GET", "/v1/conversations")]
)
def test_a_non_ascii_cookie_is_a_401_in_difys_shape(server: LiveServer, token: bytes, method: str, path: str) -> None:
    headers = {"Origin": server.url, "Cookie": COOKIE.encode() + b"=" + token}
    body = {"query": "hello", "user": "kiosk", "inputs": {}} if method == "POST" else None
    response = httpx.request(method, server.url + path, headers=headers, json=body, timeout=30)
    assert response.status_code == 401, response.text
    error = response.json()
    assert error["status"] == 401 and error["code"] == "unauthorized" and "reload" in error["message"]
