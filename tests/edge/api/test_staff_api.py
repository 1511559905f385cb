"""The staff page's routes on a real uvicorn: signing in with the store's PIN and its limits, what never
opens a staff route, the board after real hand-off turns, claims racing, history, the live event stream,
the metrics, and `edge staff-pin` making the digest a second box signs in with."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from edge.api.assets import CSP
from edge.api.kiosk_auth import COOKIE as KIOSK_COOKIE
from edge.api.staff_auth import COOKIE
from edge.app import create_app
from edge.cli import main
from edge.pin import MIN_PIN_LENGTH, hash_pin, is_pin_digest, verify_pin
from edge.settings import Settings
from tests.edge.api.conftest import AUTH, LiveServer, make_settings

pytestmark = pytest.mark.slow
PIN = "482916"
NEW_PIN = "endive-73"
DIGEST = hash_pin(PIN, iterations=10_000)
ATTEMPTS = 3
WINDOW_S = 10.0
FAKE_ID = "00000000-0000-4000-8000-000000000000"
SIGNED_IN_ROUTES = [
    ("GET", "/staff/api/me"),
    ("GET", "/staff/api/handoffs"),
    ("GET", "/staff/api/events"),
    ("GET", "/staff/api/history"),
    ("POST", f"/staff/api/handoffs/{FAKE_ID}/claim"),
    ("POST", f"/staff/api/handoffs/{FAKE_ID}/close"),
]
_next_address = iter(range(1, 10_000))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("staff-api") / "data"


@pytest.fixture(scope="module")
def settings(api_bundle: Path, data_dir: Path) -> Settings:
    # A floor of 1.0: anything uncurated hands off at once, so no turn here waits on the LLM. The loopback
    # client is a trusted proxy, so each test signs in from its own X-Forwarded-For address.
    return make_settings(
        api_bundle,
        data_dir,
        llm_floor=1.0,
        staff_pin_digest=DIGEST,
        staff_signin_attempts=ATTEMPTS,
        staff_signin_window_s=WINDOW_S,
        trusted_proxies=["127.0.0.1/32"],
    )


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as live:
        yield live


def browser(server: LiveServer, address: str | None = None, **headers: str) -> httpx.Client:
    """A device on the store network: its own address (as the trusted proxy reports it) and cookie jar,
    sending the page's Origin like a browser does."""
    address = address or f"10.1.{next(_next_address) // 250}.{next(_next_address) % 250 + 1}"
    return httpx.Client(
        base_url=server.url,
        headers={"Origin": server.url, "X-Forwarded-For": address, **headers},
        timeout=60,
    )


def sign_in(client: httpx.Client, name: str = "Li", pin: str = PIN) -> httpx.Response:
    return client.post("/staff/api/session", json={"pin": pin, "name": name})


def staff(server: LiveServer, name: str = "Li") -> httpx.Client:
    client = browser(server)
    response = sign_in(client, name)
    assert response.status_code == 200, response.text
    return client


def kiosk_handoff(server: LiveServer, query: str = "Please call a staff member", kiosk_id: str = "kiosk-7") -> tuple:
    """A real hand-off turn from the kiosk page (its cookie, the staff button): (the kiosk, its conversation)."""
    kiosk = browser(server)
    assert kiosk.get("/").status_code == 200 and kiosk.cookies.get(KIOSK_COOKIE)
    answer = kiosk.post(
        "/v1/chat-messages",
        json={"query": query, "user": "kiosk", "inputs": {"handoff": True, "kiosk_id": kiosk_id}},
    )
    assert answer.status_code == 200, answer.text
    return kiosk, answer.json()["conversation_id"]


def active_of(client: httpx.Client, conversation: str) -> dict[str, Any]:
    board = client.get("/staff/api/handoffs").json()
    return next(item for item in board["active"] if item["conversation_id"] == conversation)


def assert_dify_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and body["code"] == code and body["message"]
    return body


# --- the page ------------------------------------------------------------------------------------


def test_the_page_has_the_kiosk_pages_policy_and_hash_versioned_assets(server: LiveServer) -> None:
    client = browser(server)
    page = client.get("/staff")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP and page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store" and "set-cookie" not in page.headers  # signing in sets it
    links = re.findall(r'"(/staff/ui/[\w.-]+\?v=[0-9a-f]{16})"', page.text)
    assert {link.split("?")[0] for link in links} >= {"/staff/ui/base.css", "/staff/ui/staff.css", "/staff/ui/staff.js"}
    for link in links:
        cached = client.get(link)
        assert cached.status_code == 200 and "immutable" in cached.headers["cache-control"]
    plain = client.get("/staff/ui/staff.js")
    assert plain.headers["cache-control"] == "no-cache" and plain.headers["content-type"].startswith("text/javascript")
    assert client.get("/staff/ui/staff.js", headers={"If-None-Match": plain.headers["etag"]}).status_code == 304
    for missing in ("/staff/ui/staff.html", "/staff/ui/nothing.js", "/staff/ui/..%2F..%2Fsettings.py"):
        assert_dify_error(client.get(missing), 404, "not_found")


def test_without_a_pin_digest_the_page_says_it_is_off_and_the_api_is_404(tmp_path: Path) -> None:
    # No lifespan: nothing of the bundle is needed to tell that the page is off.
    client = TestClient(create_app(Settings(bundle_dir=tmp_path / "none", data_dir=tmp_path / "data")))
    page = client.get("/staff")
    assert page.status_code == 200 and "KIOSK_STAFF_PIN_DIGEST" in page.text and "edge staff-pin" in page.text
    assert page.headers["content-security-policy"] == CSP
    origin = {"Origin": "http://testserver"}
    for method, path in [*SIGNED_IN_ROUTES, ("POST", "/staff/api/session"), ("GET", "/staff/ui/staff.js")]:
        body = {"pin": PIN, "name": "Li"} if path == "/staff/api/session" else None
        error = assert_dify_error(client.request(method, path, json=body, headers=origin), 404, "not_found")
        assert "KIOSK_STAFF_PIN_DIGEST" in error["message"]


# --- signing in ----------------------------------------------------------------------------------


def test_signing_in_sets_a_strict_cookie_for_the_staff_paths_only(server: LiveServer, settings: Settings) -> None:
    client = browser(server)
    response = sign_in(client, "  Li Na ")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "Li Na" and body["poll_s"] == 3 and body["store_language"] == settings.ui_language
    assert body["remind_after_s"] == settings.staff_remind_after_s
    assert abs(body["expires_at"] - (time.time() + settings.staff_session_hours * 3600)) < 60
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "Path=/staff" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Secure" not in cookie and PIN not in cookie
    assert client.get("/staff/api/me").json() == body
    signed_out = client.delete("/staff/api/session")
    assert signed_out.status_code == 200 and 'staff_session=""' in signed_out.headers["set-cookie"]
    assert_dify_error(client.get("/staff/api/me"), 401, "unauthorized")
    # behind the TLS proxy the cookie is Secure
    proxied = sign_in(browser(server, **{"X-Forwarded-Proto": "https"}))
    assert proxied.status_code == 200 and "Secure" in proxied.headers["set-cookie"]


def test_a_wrong_pin_is_a_401(server: LiveServer) -> None:
    client = browser(server)
    error = assert_dify_error(sign_in(client, pin="000000"), 401, "unauthorized")
    assert error["message"] == "Wrong PIN." and COOKIE not in client.cookies


def test_wrong_pins_are_limited_per_device_then_for_the_whole_box(server: LiveServer) -> None:
    guesser = browser(server)
    for _ in range(ATTEMPTS):
        assert_dify_error(sign_in(guesser, pin="111111"), 401, "unauthorized")
    refused = assert_dify_error(sign_in(guesser), 429, "too_many_requests")  # even the right PIN, now
    assert "device" in refused["message"]
    assert 1 <= int(sign_in(guesser).headers["retry-after"]) <= WINDOW_S
    assert sign_in(browser(server)).status_code == 200  # another device is not held back

    # Many devices together: at most four times one device's attempts, then nobody signs in for a while.
    wrong = ATTEMPTS
    while wrong <= 4 * ATTEMPTS:
        response = sign_in(browser(server), pin="222222")
        if response.status_code == 429:
            break
        assert response.status_code == 401
        wrong += 1
    else:
        pytest.fail("the whole box was never limited")
    locked = assert_dify_error(sign_in(browser(server)), 429, "too_many_requests")
    assert "box" in locked["message"]
    wait = int(sign_in(browser(server)).headers["retry-after"])
    assert 1 <= wait <= WINDOW_S
    time.sleep(wait + 0.5)  # Retry-After tells the truth: the window has moved on
    assert sign_in(browser(server)).status_code == 200


# --- what never opens a staff route --------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), SIGNED_IN_ROUTES)
def test_a_kiosk_cookie_or_an_app_key_never_opens_a_staff_route(server: LiveServer, method: str, path: str) -> None:
    kiosk = browser(server)
    assert kiosk.get("/").status_code == 200
    kiosk_token = kiosk.cookies[KIOSK_COOKIE]
    assert_dify_error(kiosk.request(method, path), 401, "unauthorized")  # the kiosk's own cookie, sent along
    forged = browser(server, Cookie=f"{COOKIE}={kiosk_token}")  # a valid kiosk token as the staff cookie
    assert_dify_error(forged.request(method, path), 401, "unauthorized")
    assert_dify_error(browser(server, **AUTH).request(method, path), 401, "unauthorized")


def test_changes_need_the_staff_pages_origin(server: LiveServer) -> None:
    _, conversation = kiosk_handoff(server)
    client = staff(server)
    handoff = active_of(client, conversation)["id"]
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        assert_dify_error(client.get("/staff/api/handoffs", headers=headers), 403, "forbidden")
    no_origin = httpx.Client(base_url=server.url, headers={"X-Forwarded-For": "10.9.9.9"}, cookies=client.cookies)
    for method, path in (
        ("POST", f"/staff/api/handoffs/{handoff}/claim"),
        ("POST", f"/staff/api/handoffs/{handoff}/close"),
        ("DELETE", "/staff/api/session"),
    ):
        assert_dify_error(no_origin.request(method, path), 403, "forbidden")
        evil = no_origin.request(method, path, headers={"Origin": "http://evil.example"})
        assert_dify_error(evil, 403, "forbidden")
    assert_dify_error(no_origin.post("/staff/api/session", json={"pin": PIN, "name": "Li"}), 403, "forbidden")
    assert active_of(client, conversation)["status"] == "open"  # nothing changed


# --- the board, claims and history ---------------------------------------------------------------


def test_a_hand_off_turn_shows_on_the_board_with_the_conversation_so_far(server: LiveServer) -> None:
    _, conversation = kiosk_handoff(server, "I need a person to help me", kiosk_id="entrance")
    by_key = httpx.post(
        server.url + "/v1/chat-messages",
        headers=AUTH,
        json={"query": "call staff please", "user": "alice", "inputs": {"handoff": True}},
        timeout=60,
    )
    assert by_key.status_code == 200, by_key.text
    client = staff(server)
    board = client.get("/staff/api/handoffs").json()
    assert board["rev"] >= 2 and abs(board["now"] - time.time()) < 60 and board["remind_after_s"] > 0
    item = active_of(client, conversation)
    assert item["status"] == "open" and item["kiosk_id"] == "entrance" and item["reason"] == "button"
    assert item["question"] == "I need a person to help me" and item["language"] == "en" and item["waited_s"] >= 0
    assert [turn["query"] for turn in item["transcript"]] == ["I need a person to help me"]
    assert item["transcript"][0]["answer"] and item["transcript"][0]["route"] == "handoff"
    assert "user" not in item and "message_id" not in item  # the kiosk session stays the kiosk's
    assert active_of(client, by_key.json()["conversation_id"])["question"] == "call staff please"
    waits = [entry["opened_at"] for entry in board["active"]]
    assert waits == sorted(waits)  # longest waiting first


def test_two_colleagues_claim_at_once_and_exactly_one_wins(server: LiveServer) -> None:
    kiosk, conversation = kiosk_handoff(server)
    li, wang = staff(server, "Li"), staff(server, "Wang")
    handoff = active_of(li, conversation)["id"]
    start = threading.Barrier(2)
    results: dict[str, httpx.Response] = {}

    def claim(name: str, client: httpx.Client) -> None:
        start.wait()
        results[name] = client.post(f"/staff/api/handoffs/{handoff}/claim")

    threads = [threading.Thread(target=claim, args=pair) for pair in (("Li", li), ("Wang", wang))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(r.status_code for r in results.values()) == [200, 409]
    winner = next(name for name, r in results.items() if r.status_code == 200)
    loser = "Wang" if winner == "Li" else "Li"
    won = results[winner].json()
    assert won["status"] == "claimed" and won["claimed_by"] == winner and won["time_to_claim_s"] >= 0
    assert "user" not in won
    refusal = assert_dify_error(results[loser], 409, "conflict")
    assert refusal["message"] == f"Already claimed by {winner}."
    # the kiosk sees the claim; any colleague may finish it; done twice is still done
    assert kiosk.get("/kiosk/handoff").json()["claimed_by"] == winner
    closing = li if loser == "Li" else wang
    closed = closing.post(f"/staff/api/handoffs/{handoff}/close")
    assert closed.status_code == 200 and closed.json()["status"] == "closed" and closed.json()["closed_by"] == loser
    assert closing.post(f"/staff/api/handoffs/{handoff}/close").json()["status"] == "closed"
    assert conversation not in [item["conversation_id"] for item in li.get("/staff/api/handoffs").json()["active"]]


def test_a_claim_after_the_kiosk_started_over_is_a_409(server: LiveServer) -> None:
    kiosk, conversation = kiosk_handoff(server)
    client = staff(server)
    handoff = active_of(client, conversation)["id"]
    assert kiosk.post("/kiosk/session").status_code == 200  # "Start over" with the old cookie: the shopper left
    refusal = assert_dify_error(client.post(f"/staff/api/handoffs/{handoff}/claim"), 409, "conflict")
    assert "left" in refusal["message"]
    assert_dify_error(client.post(f"/staff/api/handoffs/{handoff}/close"), 409, "conflict")
    for action in ("claim", "close"):
        assert_dify_error(client.post(f"/staff/api/handoffs/{FAKE_ID}/{action}"), 404, "not_found")


def test_history_lists_todays_hand_offs_newest_first(server: LiveServer) -> None:
    before = time.time()  # the box's clock: the same machine
    _, first = kiosk_handoff(server)
    _, second = kiosk_handoff(server)
    client = staff(server)
    history = client.get("/staff/api/history", params={"since": before}).json()
    assert [item["conversation_id"] for item in history["data"]] == [second, first]
    assert all("transcript" not in item and "user" not in item for item in history["data"])
    assert {second, first} <= {item["conversation_id"] for item in client.get("/staff/api/history").json()["data"]}
    assert client.get("/staff/api/history", params={"since": time.time() + 60}).json()["data"] == []
    assert client.get("/staff/api/history", params={"since": 0}).status_code == 200  # clamped to a week


def test_the_metrics_show_active_hand_offs_and_the_time_to_claim(server: LiveServer) -> None:
    _, conversation = kiosk_handoff(server)
    client = staff(server)
    handoff = active_of(client, conversation)["id"]
    assert client.post(f"/staff/api/handoffs/{handoff}/claim").status_code == 200
    kiosk_handoff(server)  # and one left open
    text = httpx.get(server.url + "/metrics", timeout=30).text
    counts = {
        state: float(re.search(rf'^kiosk_handoffs_active{{state="{state}"}} (\S+)$', text, re.M).group(1))
        for state in ("open", "claimed")
    }
    board = client.get("/staff/api/handoffs").json()["active"]
    assert counts == {
        "open": sum(item["status"] == "open" for item in board),
        "claimed": sum(item["status"] == "claimed" for item in board),
    }
    assert counts["open"] >= 1 and counts["claimed"] >= 1
    assert float(re.search(r"^kiosk_handoff_claim_seconds_count (\S+)$", text, re.M).group(1)) >= 1
    assert 'kiosk_handoff_claim_seconds_bucket{le="1800.0"}' in text
    assert re.search(r'^kiosk_handoff_transitions_total{event="claimed"} [1-9]', text, re.M)


# --- the live event stream -----------------------------------------------------------------------


def read_events(response: httpx.Response, into: queue.Queue) -> None:
    """Parse the stream into ("retry" | "comment" | event name, data) tuples until it ends."""
    event, data = None, []
    try:
        for line in response.iter_lines():
            if line.startswith("retry:"):
                into.put(("retry", line.split(":", 1)[1].strip()))
            elif line.startswith(":"):
                into.put(("comment", line))
            elif line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data.append(line.split(":", 1)[1].strip())
            elif line == "" and event is not None:
                into.put((event, json.loads("\n".join(data))))
                event, data = None, []
    except httpx.HTTPError:
        pass
    into.put(("end", None))


def next_board(events: queue.Queue, deadline_s: float, match) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while True:
        kind, data = events.get(timeout=max(0.01, end - time.monotonic()))
        if kind == "handoffs" and match(data):
            return data


def test_the_event_stream_shows_a_new_hand_off_and_its_claim_within_two_seconds(server: LiveServer) -> None:
    client = staff(server)
    events: queue.Queue = queue.Queue()
    with client.stream("GET", "/staff/api/events") as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        reader = threading.Thread(target=read_events, args=(response, events), daemon=True)
        reader.start()
        assert events.get(timeout=10) == ("retry", "3000")
        first = events.get(timeout=10)
        assert first[0] == "handoffs" and set(first[1]) == {"now", "rev", "remind_after_s", "active"}

        _, conversation = kiosk_handoff(server, "Could someone come over?")
        committed = time.monotonic()
        board = next_board(events, 2.0, lambda b: conversation in [i["conversation_id"] for i in b["active"]])
        assert time.monotonic() - committed < 2.0
        item = next(i for i in board["active"] if i["conversation_id"] == conversation)
        assert item["status"] == "open" and item["transcript"][0]["query"] == "Could someone come over?"

        claimed = browser(server, Cookie=f"{COOKIE}={client.cookies[COOKIE]}").post(
            f"/staff/api/handoffs/{item['id']}/claim"
        )
        assert claimed.status_code == 200
        committed = time.monotonic()
        next_board(
            events,
            2.0,
            lambda b: any(i["id"] == item["id"] and i["claimed_by"] == "Li" for i in b["active"]),
        )
        assert time.monotonic() - committed < 2.0


def finished_streams(server: LiveServer) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    found = re.search(
        r'^kiosk_http_request_seconds_count{method="GET",route="/staff/api/events",status="200"} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


def test_a_stream_ends_when_its_client_goes_away(server: LiveServer) -> None:
    """The request is timed when its handler returns: a stream left running would never be counted."""
    before = finished_streams(server)
    client = staff(server)
    with client.stream("GET", "/staff/api/events") as response:
        lines = response.iter_lines()
        assert next(lines) == "retry: 3000"
    client.close()
    deadline = time.monotonic() + 10
    while finished_streams(server) < before + 1:
        assert time.monotonic() < deadline, "the event stream kept running after its client left"
        time.sleep(0.2)


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_a_4xx_in_difys_shape(server: LiveServer) -> None:
    client = browser(server)
    cases = [
        (client.post("/staff/api/session", content=b"pin=1", headers={"Content-Type": "text/plain"}), 415),
        (client.post("/staff/api/session", content=b"{not json", headers={"Content-Type": "application/json"}), 400),
        (client.post("/staff/api/session", json={"name": "Li"}), 400),
        (client.post("/staff/api/session", json={"pin": "7" * 10_000, "name": "Li"}), 400),
        (client.post("/staff/api/session", json={"pin": PIN, "name": 7}), 400),
        (client.post("/staff/api/session", json={"pin": PIN, "name": ["Li"]}), 400),
        (client.post("/staff/api/session", json={"pin": PIN, "name": " \u200b "}), 400),
        (client.post("/staff/api/session", json={"pin": 482916, "name": "Li"}), 400),
        (client.post("/staff/api/session", json=[PIN]), 400),
    ]
    for response, status in cases:
        assert_dify_error(response, status, "invalid_param" if status == 400 else "unsupported_media_type")
    signed = staff(server)
    for since in ("yesterday", "nan", "inf", "1e999"):
        assert_dify_error(signed.get("/staff/api/history", params={"since": since}), 400, "invalid_param")
    assert_dify_error(signed.post("/staff/api/handoffs/%E2%98%83/claim"), 404, "not_found")
    assert_dify_error(signed.put("/staff/api/session"), 405, "method_not_allowed")


# --- `edge staff-pin`, a new PIN, and a sign-in that expires -------------------------------------


def staff_pin(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "edge"), "staff-pin"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_staff_pin_refuses_a_short_pin_in_one_line() -> None:
    done = staff_pin("12345\n")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: a staff PIN needs at least {MIN_PIN_LENGTH} characters"]
    help_text = CliRunner().invoke(main, ["staff-pin", "--help"]).output
    assert "KIOSK_STAFF_PIN_DIGEST" in help_text and "stdin" in help_text


@pytest.fixture(scope="module")
def cli_digest() -> str:
    done = staff_pin(NEW_PIN + "\n")
    assert done.returncode == 0, done.stderr
    digest = done.stdout.strip()
    assert done.stdout.count("\n") == 1 and is_pin_digest(digest) and verify_pin(NEW_PIN, digest)
    assert f"KIOSK_STAFF_PIN_DIGEST={digest}" in done.stderr
    return digest


def test_a_new_pin_signs_everyone_out_and_a_sign_in_expires(
    server: LiveServer, settings: Settings, cli_digest: str
) -> None:
    old_cookie = staff(server).cookies[COOKIE]
    # The same box restarted with the digest `edge staff-pin` made (same data directory, same staff secret),
    # and sign-ins of 3.6 seconds.
    restarted = make_settings(
        settings.bundle_dir, settings.data_dir, llm_floor=1.0, staff_pin_digest=cli_digest, staff_session_hours=0.001
    )
    origin = {"Origin": "http://testserver"}
    with TestClient(create_app(restarted), headers=origin) as box:
        box.cookies.set(COOKIE, old_cookie, path="/staff")
        assert_dify_error(box.get("/staff/api/me"), 401, "unauthorized")
        box.cookies.clear()
        assert_dify_error(box.post("/staff/api/session", json={"pin": PIN, "name": "Li"}), 401, "unauthorized")
        signed = box.post("/staff/api/session", json={"pin": NEW_PIN, "name": "Li"})
        assert signed.status_code == 200 and box.get("/staff/api/me").status_code == 200
        started = time.monotonic()
        stream = box.get("/staff/api/events")  # the stream ends when the sign-in does
        assert time.monotonic() - started < 30
        assert stream.text.startswith("retry: 3000\n\nevent: handoffs\ndata: {")
        time.sleep(max(0.0, signed.json()["expires_at"] + 1.1 - time.time()))
        assert_dify_error(box.get("/staff/api/me"), 401, "unauthorized")
        assert_dify_error(box.get("/staff/api/events"), 401, "unauthorized")
