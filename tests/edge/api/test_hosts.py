"""The Host allow-list (against DNS rebinding) and the trusted TLS proxy, on the real app and on its own."""

from __future__ import annotations

from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from edge.api.hosts import HostCheck, host_allowed, host_name
from edge.api.kiosk_auth import COOKIE
from edge.app import create_app
from edge.settings import Settings
from tests.edge.api.conftest import AUTH, make_settings

PROXY = "10.1.2.3"


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("box:8080", "box"),
        ("192.168.50.7:30080", "192.168.50.7"),
        ("[fd00::7]:30080", "fd00::7"),
        ("[::1]", "::1"),
        ("Kiosk.Store.Example.:443", "kiosk.store.example"),
        ("", None),
        ("box:port", None),
        ("[::1", None),
        ("a b", None),
        ("user@evil.example", None),
        ("\xb2.example", None),
    ],
)
def test_host_name(host: str, name: str | None) -> None:
    assert host_name(host) == name


@pytest.mark.parametrize(
    ("name", "allowed", "expected"),
    [
        ("192.168.50.7", [], True),  # how kiosks reach the box: its address
        ("fd00::7", [], True),
        ("localhost", [], True),  # no name in public DNS lacks a dot: a rebinding page cannot use one
        ("kiosk-box", [], True),
        ("evil.example", [], False),
        ("box.local", [], False),
        ("box.local", ["box.local"], True),
        ("kiosk.store.example", ["*.store.example"], True),
        ("store.example", ["*.store.example"], False),
        ("evilstore.example", ["*.store.example"], False),
        ("anything.example", ["*"], True),
    ],
)
def test_host_allowed(name: str, allowed: list[str], expected: bool) -> None:
    assert host_allowed(name, allowed) is expected


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    body = {"scheme": request.url.scheme, "client": request.client.host if request.client else None}
    await JSONResponse(body)(scope, receive, send)


def echo_client(client: str, **options: list[str]) -> TestClient:
    return TestClient(HostCheck(echo, **options), base_url="http://192.168.50.7:30080", client=(client, 40000))


def test_only_a_trusted_proxy_sets_the_scheme_and_the_client() -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "6.6.6.6, 192.168.50.21"}
    client = echo_client(PROXY, trusted_proxies=["10.1.0.0/16"])
    assert client.get("/", headers=forwarded).json() == {"scheme": "https", "client": "192.168.50.21"}
    assert client.get("/").json() == {"scheme": "http", "client": PROXY}
    chained = {"X-Forwarded-Proto": "http, https", "X-Forwarded-For": "192.168.50.21, 10.1.9.9"}
    assert client.get("/", headers=chained).json() == {"scheme": "https", "client": "192.168.50.21"}
    odd = {"X-Forwarded-Proto": "gopher", "X-Forwarded-For": "not-an-address"}
    assert client.get("/", headers=odd).json() == {"scheme": "http", "client": PROXY}
    kiosk = echo_client("192.168.50.21", trusted_proxies=["10.1.0.0/16"])  # a kiosk claiming TLS
    assert kiosk.get("/", headers=forwarded).json() == {"scheme": "http", "client": "192.168.50.21"}
    unconfigured = echo_client(PROXY)  # no proxy configured: the headers mean nothing
    assert unconfigured.get("/", headers=forwarded).json() == {"scheme": "http", "client": PROXY}


def test_settings_refuse_a_proxy_that_is_not_an_address() -> None:
    with pytest.raises(ValueError, match="does not appear to be"):
        Settings(trusted_proxies=["proxy.store.example"])
    assert Settings(allowed_hosts=["Kiosk.Store.Example."]).allowed_hosts == ["kiosk.store.example"]


# --- the real app ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        api_bundle,
        tmp_path_factory.mktemp("hosts") / "data",
        llm_floor=1.0,
        allowed_hosts=["kiosk.store-42.example"],
        trusted_proxies=[PROXY],
    )


@pytest.fixture(scope="module")
def app_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def rebinding(host: str) -> dict[str, str]:
    """What a browser sends from a page on `http://<host>/` whose name now points at the box."""
    return {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}


def test_a_dns_rebinding_page_gets_no_session_and_no_answer(app_client: TestClient) -> None:
    app_client.cookies.clear()
    page = app_client.get("/", headers=rebinding("evil.example:30080"))
    assert page.status_code == 421, page.text
    assert page.json() == {"code": "misdirected_request", "message": page.json()["message"], "status": 421}
    assert "KIOSK_ALLOWED_HOSTS" in page.json()["message"]
    assert COOKIE not in page.cookies
    session = app_client.post("/kiosk/session", headers=rebinding("evil.example:30080"))
    assert session.status_code == 421 and COOKIE not in session.cookies
    # A cookie it got some other way does not help either, nor does an app key.
    app_client.get("/")
    ask = app_client.post(
        "/v1/chat-messages",
        headers=rebinding("evil.example:30080"),
        json={"query": "hello", "user": "kiosk", "inputs": {}},
    )
    assert ask.status_code == 421
    assert app_client.get("/v1/info", headers={**AUTH, "Host": "evil.example"}).status_code == 421
    app_client.cookies.clear()


def test_an_openai_route_refuses_in_openais_shape(app_client: TestClient) -> None:
    response = app_client.get("/v1/models", headers={**AUTH, "Host": "evil.example"})
    assert response.status_code == 421
    error = response.json()["error"]
    assert error["code"] == "misdirected_request" and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "host", ["192.168.50.7:30080", "127.0.0.1:8080", "[::1]:8080", "localhost:8080", "kiosk.store-42.example"]
)
def test_the_box_answers_to_its_addresses_and_listed_names(app_client: TestClient, host: str) -> None:
    app_client.cookies.clear()
    page = app_client.get("/", headers={"Host": host})
    assert page.status_code == 200, page.text
    assert COOKIE in page.cookies
    ask = app_client.post(
        "/v1/chat-messages",
        headers={"Host": host, "Origin": f"http://{host}"},
        json={"query": "I want to cancel my order", "user": "kiosk", "inputs": {}},
    )
    assert ask.status_code == 200, ask.text
    app_client.cookies.clear()


def set_cookie(response: httpx.Response) -> SimpleCookie:
    cookie = SimpleCookie()
    cookie.load(response.headers["set-cookie"])
    return cookie


def test_the_cookie_is_secure_behind_the_trusted_tls_proxy(settings: Settings) -> None:
    with TestClient(create_app(settings), client=(PROXY, 40000)) as behind_proxy:
        page = behind_proxy.get("/", headers={"X-Forwarded-Proto": "https", "Host": "kiosk.store-42.example"})
        assert page.status_code == 200
        assert set_cookie(page)[COOKIE]["secure"] is True
        renewed = behind_proxy.post(
            "/kiosk/session",
            headers={
                "X-Forwarded-Proto": "https",
                "Host": "kiosk.store-42.example",
                "Origin": "https://kiosk.store-42.example",
            },
        )
        assert renewed.status_code == 200 and set_cookie(renewed)[COOKIE]["secure"] is True
        plain = behind_proxy.get("/", headers={"X-Forwarded-Proto": "http"})
        assert not set_cookie(plain)[COOKIE]["secure"]


def test_a_kiosk_cannot_claim_tls_for_itself(app_client: TestClient) -> None:
    page = app_client.get("/", headers={"X-Forwarded-Proto": "https"})
    assert page.status_code == 200
    assert not set_cookie(page)[COOKIE]["secure"]
    app_client.cookies.clear()
