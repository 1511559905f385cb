"""The kiosk routes on the real app: the page and its cookie, what a kiosk session may and may not do,
the status the page polls, and the switch that turns it all off."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edge.api.assets import CSP
from edge.api.kiosk_auth import COOKIE, USER_PREFIX
from edge.app import create_app
from edge.settings import Settings
from edge.store.db import open_database
from edge.store.sync_state import CENTRAL, SyncState
from tests.edge.api.conftest import AUTH, make_settings

pytestmark = pytest.mark.slow
ORIGIN = {"Origin": "http://testserver"}
CANCEL = "I want to cancel my order"


@pytest.fixture(scope="module")
def settings(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # A floor of 1.0: anything uncurated hands off at once, so no test here waits on the LLM.
    return make_settings(api_bundle, tmp_path_factory.mktemp("kiosk-api") / "data", llm_floor=1.0)


@pytest.fixture(scope="module")
def app_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def kiosk(app_client: TestClient) -> Iterator[TestClient]:
    """A browser that loaded the page: it holds a fresh session cookie (and nothing else)."""
    app_client.cookies.clear()
    page = app_client.get("/")
    assert page.status_code == 200
    yield app_client
    app_client.cookies.clear()


def kiosk_user(client: TestClient) -> str:
    return USER_PREFIX + client.cookies[COOKIE].split(".")[0]


def ask(client: TestClient, query: str = CANCEL, headers: dict[str, str] = ORIGIN, **body: object):
    return client.post("/v1/chat-messages", headers=headers, json={"query": query, "user": "kiosk", **body})


def assert_dify_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and body["code"] == code and body["message"]


def test_the_page_sets_a_strict_httponly_session_and_a_locked_down_policy(app_client: TestClient) -> None:
    app_client.cookies.clear()
    page = app_client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["content-security-policy"] == CSP and "connect-src 'self'" in CSP
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain http on the shop's network; set when served over https
    assert "Authorization" not in page.text and "app-" not in page.text  # the page holds no key
    again = app_client.get("/")
    assert again.cookies[COOKIE] != page.cookies[COOKIE]  # a reload is a new shopper


def test_assets_are_cached_for_good_under_their_hash_and_revalidated_otherwise(app_client: TestClient) -> None:
    page = app_client.get("/").text
    links = [part.split('"')[0] for part in page.split('href="')[1:]]
    assert links[0] == "data:,"  # the empty favicon, then the shared sheet and the kiosk's own
    assert links[1].startswith("/ui/base.css?v=")
    linked = links[2]
    assert linked.startswith("/ui/kiosk.css?v=")
    cached = app_client.get(linked)
    assert cached.status_code == 200 and cached.headers["content-type"].startswith("text/css")
    assert "immutable" in cached.headers["cache-control"]
    plain = app_client.get("/ui/kiosk.css")
    assert plain.headers["cache-control"] == "no-cache" and plain.content == cached.content
    again = app_client.get("/ui/kiosk.css", headers={"If-None-Match": plain.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert app_client.get("/ui/kiosk.js").headers["content-type"].startswith("text/javascript")
    for missing in ("/ui/nothing.js", "/ui/index.html", "/ui/..%2Fsettings.py"):
        assert_dify_error(app_client.get(missing), 404, "not_found")


def test_a_kiosk_chats_as_its_own_user_whatever_it_sends(kiosk: TestClient) -> None:
    answer = ask(kiosk, user="alice")
    assert answer.status_code == 200, answer.text
    conversation = answer.json()["conversation_id"]
    user = kiosk_user(kiosk)
    # the turn belongs to the session's user, not to "alice"
    history = kiosk.get("/v1/messages", headers=AUTH, params={"conversation_id": conversation, "user": user})
    assert [m["query"] for m in history.json()["data"]] == [CANCEL]
    alice = kiosk.get("/v1/conversations", headers=AUTH, params={"user": "alice"}).json()
    assert alice["data"] == []
    # the kiosk reads its own conversation, whatever user it names
    mine = kiosk.get("/v1/messages", params={"conversation_id": conversation, "user": "bob"})
    assert mine.status_code == 200 and len(mine.json()["data"]) == 1
    listed = kiosk.get("/v1/conversations", headers={"Sec-Fetch-Site": "same-origin"}).json()
    assert [c["id"] for c in listed["data"]] == [conversation]
    # follow-up, feedback, rename, stop and delete: the routes the page may use
    follow = ask(kiosk, "how long does delivery take", conversation_id=conversation)
    assert follow.status_code == 200 and follow.json()["conversation_id"] == conversation
    message = follow.json()["message_id"]
    liked = kiosk.post(f"/v1/messages/{message}/feedbacks", headers=ORIGIN, json={"rating": "like", "user": "x"})
    assert liked.json() == {"result": "success"}
    renamed = kiosk.post(f"/v1/conversations/{conversation}/name", headers=ORIGIN, json={"name": "Mine", "user": "x"})
    assert renamed.status_code == 200
    stopped = kiosk.post(
        "/v1/chat-messages/00000000-0000-4000-8000-000000000000/stop", headers=ORIGIN, json={"user": "x"}
    )
    assert stopped.json() == {"result": "success"}
    assert kiosk.get("/v1/parameters").json()["suggested_questions"]
    deleted = kiosk.request("DELETE", f"/v1/conversations/{conversation}", headers=ORIGIN, json={"user": "x"})
    assert deleted.status_code == 204


def test_a_kiosk_cannot_read_or_continue_anyone_elses_conversation(kiosk: TestClient) -> None:
    alice = kiosk.post("/v1/chat-messages", headers=AUTH, json={"query": CANCEL, "user": "alice", "inputs": {}}).json()[
        "conversation_id"
    ]
    read = kiosk.get("/v1/messages", params={"conversation_id": alice, "user": "alice"})
    assert_dify_error(read, 404, "not_found")
    assert_dify_error(ask(kiosk, conversation_id=alice), 404, "not_found")
    assert kiosk.get("/v1/conversations", params={"user": "alice"}).json()["data"] == []


def test_a_new_session_is_a_new_user(kiosk: TestClient) -> None:
    conversation = ask(kiosk).json()["conversation_id"]
    before = kiosk.cookies[COOKIE]
    assert_dify_error(kiosk.post("/kiosk/session"), 403, "forbidden")  # no proof of origin
    renewed = kiosk.post("/kiosk/session", headers=ORIGIN)
    assert renewed.status_code == 200 and kiosk.cookies[COOKIE] != before
    assert_dify_error(kiosk.get("/v1/messages", params={"conversation_id": conversation}), 404, "not_found")


def test_the_cookie_needs_the_page_origin(kiosk: TestClient) -> None:
    for headers in (
        {"Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://testserver"},
        {},  # a POST must prove its origin
    ):
        assert_dify_error(ask(kiosk, headers=headers), 403, "forbidden")
    cross_read = kiosk.get("/v1/parameters", headers={"Sec-Fetch-Site": "cross-site"})
    assert_dify_error(cross_read, 403, "forbidden")


def test_a_forged_or_stale_cookie_is_a_401_in_difys_shape(app_client: TestClient) -> None:
    app_client.cookies.clear()
    app_client.cookies.set(COOKIE, "forged.1700000000.bm90LWEtbWFj")
    try:
        response = ask(app_client)
        assert_dify_error(response, 401, "unauthorized")
        assert "reload" in response.json()["message"]
    finally:
        app_client.cookies.clear()


def test_the_cookie_opens_only_the_chat_routes(kiosk: TestClient) -> None:
    for method, path, body in (
        ("GET", "/v1/info", None),
        ("GET", "/v1/meta", None),
        ("GET", "/v1/models", None),
        ("POST", "/v1/chat/completions", {"model": "kiosk-assistant", "messages": [{"role": "user", "content": "hi"}]}),
    ):
        response = kiosk.request(method, path, headers=ORIGIN, json=body)
        assert response.status_code == 401, f"{method} {path}: {response.text}"


def test_an_app_key_wins_over_the_cookie_and_is_not_pinned(kiosk: TestClient) -> None:
    response = kiosk.post(
        "/v1/chat-messages",
        headers={**AUTH, "Origin": "http://evil.example"},  # a server-side client: no origin rule
        json={"query": CANCEL, "user": "carol", "inputs": {}},
    )
    assert response.status_code == 200
    listed = kiosk.get("/v1/conversations", headers=AUTH, params={"user": "carol"}).json()["data"]
    assert [c["id"] for c in listed] == [response.json()["conversation_id"]]


def test_status_reports_central_as_the_sync_agent_last_saw_it(app_client: TestClient, settings: Settings) -> None:
    status = app_client.get("/kiosk/status").json()
    assert status == {
        "central": "unknown",
        "checked_at": None,
        "idle_reset_s": settings.ui_idle_reset_s,
        "handoff_wait_s": settings.ui_handoff_wait_s,
        "language": "en",
        "poll_s": 15,
    }
    db = open_database(settings.database_path)  # the agent's own connection, as `edge sync` has
    try:
        agent = SyncState(db)
        agent.record(CENTRAL, "offline", success=False, error="connect timeout")
        assert app_client.get("/kiosk/status").json()["central"] == "offline"
        agent.record(CENTRAL, "online", success=True)
        assert app_client.get("/kiosk/status").json()["central"] == "online"
        SyncState(db, clock=lambda: time.time() - 2 * settings.central_max_age_s).record(
            CENTRAL, "online", success=True
        )
        stale = app_client.get("/kiosk/status").json()
        assert stale["central"] == "unknown" and stale["checked_at"] is not None
    finally:
        db.close()


def test_the_kiosk_switched_off(settings: Settings, app_client: TestClient) -> None:
    app_client.cookies.clear()
    token = app_client.get("/").cookies[COOKIE]  # minted while the page was on, same secret on disk
    app_client.cookies.clear()
    with TestClient(create_app(settings.model_copy(update={"ui_enabled": False}))) as off:
        for path in ("/", "/ui/kiosk.js", "/kiosk/status"):
            assert_dify_error(off.get(path), 404, "not_found")
        assert_dify_error(off.post("/kiosk/session", headers=ORIGIN), 404, "not_found")
        off.cookies.set(COOKIE, token)
        refused = ask(off)
        assert_dify_error(refused, 401, "unauthorized")
        assert "Bearer" in refused.json()["message"]


def test_a_restart_keeps_open_pages_signed_in(settings: Settings, app_client: TestClient) -> None:
    app_client.cookies.clear()
    token = app_client.get("/").cookies[COOKIE]
    app_client.cookies.clear()
    with TestClient(create_app(settings)) as restarted:
        restarted.cookies.set(COOKIE, token)
        assert ask(restarted).status_code == 200
