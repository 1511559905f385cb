"""Staff alerts against a real webhook receiver on loopback that fails first: each alert lands once, in the
store's language and the chat service's shape, skipped when nobody needs it any more, and never held up by
central being down."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.settings import Settings
from edge.store.conversations import ConversationStore
from edge.store.db import open_database
from edge.store.handoffs import ALERT_ROW, Handoffs, Opening
from edge.store.outbox import DONE, PARKED, PENDING, Outbox
from edge.sync.agent import SyncAgent
from edge.sync.alerts import NO_URL, AlertSender, body_error, render, shape
from edge.sync.client import DifyClient
from edge.sync.push import Pusher, PushPolicy, requeue_parked

ROOT = Path(__file__).resolve().parents[3]
AT_1405 = datetime(2026, 12, 4, 14, 5, 7, tzinfo=UTC).timestamp()
OK = (200, {"errcode": 0, "errmsg": "ok"}, 0.0)
TIMEOUT_S = 0.4
KEY = "0f1e2d3c-group-key-4b5a"


class Clock:
    def __init__(self, now: float = AT_1405) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    """A loopback port nothing listens on (yet): a connection to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Receiver:
    """A chat group's incoming webhook on loopback. `script` answers the next POSTs in order, each
    (status, JSON body, delay before answering); after it, every POST succeeds. `accepted` holds the
    messages it took: answered 2xx with no error code, in time for the sender to hear it."""

    def __init__(self, script: list[tuple[int, Any, float]] | None = None) -> None:
        self.script = list(script or [])
        self.port = free_port()
        self.received: list[dict[str, Any]] = []  # every POST: {path, body}
        self.accepted: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cgi-bin/webhook/send?key={KEY}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver._lock:
                    receiver.received.append({"path": self.path, "body": body})
                    status, answer, delay = receiver.script.pop(0) if receiver.script else OK
                time.sleep(delay)
                payload = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    return  # the sender gave up waiting
                if 200 <= status < 300 and body_error(answer) is None and delay < TIMEOUT_S:
                    with receiver._lock:
                        receiver.accepted.append(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Clock, Any, ConversationStore]]:
    clock = Clock()
    db = open_database(tmp_path / "k.db")
    yield clock, db, ConversationStore(db, clock=clock)
    db.close()


def settings_for(url: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "staff_alerts": True,
        "staff_webhook_url": url,
        "staff_webhook_format": "wecom",
        "ui_language": "en",
        "sync_max_attempts": 6,
    }
    values.update(overrides)
    return Settings(**values)


def sender_for(db: Any, settings: Settings, http: httpx.Client, clock: Clock, **kwargs: Any) -> AlertSender:
    return AlertSender(db, settings, http, clock, random.Random(0), timeout_s=TIMEOUT_S, tz=UTC, **kwargs)


def hand_off(
    store: ConversationStore,
    *,
    reason: str = "button",
    kiosk: str = "kiosk-2",
    language: str = "en",
    question: str = "where are the fitting rooms?",
    alert: bool = True,
) -> str:
    """A shopper's hand-off turn, recorded as the runtime records it; returns the hand-off's id."""
    conversation = store.create("shopper", {})["id"]
    store.record_turn(
        conversation,
        "shopper",
        question,
        "A colleague is coming.",
        route="handoff",
        intent=None,
        confidence=None,
        latency_ms=2.0,
        prompt_tokens=0,
        completion_tokens=0,
        sources=[],
        handoff=Opening(conversation, "shopper", "", kiosk, language, reason, None, question, alert=alert),
    )
    (handoff,) = store.handoffs.of_conversation(conversation)
    return handoff["id"]


def alert_rows(db: Any) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM outbox WHERE kind = ? ORDER BY id", [ALERT_ROW]))


def due_again(clock: Clock, db: Any) -> None:
    """Let the fake clock run to the alert rows' next attempt (no real waiting for the backoff)."""
    clock.now = max(clock.now, max(row["next_attempt_at"] for row in alert_rows(db))) + 0.001


# --- the hostile receiver ------------------------------------------------------------------------------


def test_a_receiver_that_fails_first_gets_the_alert_exactly_once(world, http) -> None:
    clock, db, store = world
    receiver = Receiver(
        [
            (500, {"error": "internal"}, 0.0),
            (200, {"errcode": 45009, "errmsg": "api freq out of limit"}, 0.0),
            (200, {"errcode": 0, "errmsg": "ok"}, TIMEOUT_S + 0.6),  # answers after the sender gave up
        ]
    )
    try:
        sender = sender_for(db, settings_for(receiver.url), http, clock)
        handoff_id = hand_off(store)
        first = sender.run_once()  # nothing listens on the port yet: refused
        assert (first.sent, first.failed) == (0, 1) and "ConnectError" in first.errors[0]
        assert sender.run_once().failed == 0  # backing off: not due yet
        receiver.start()
        outcomes = []
        for _ in range(3):  # 500, errcode 45009, too slow
            due_again(clock, db)
            report = sender.run_once()
            outcomes.append((report.sent, report.failed, report.errors))
        assert [o[:2] for o in outcomes] == [(0, 1)] * 3
        assert "500" in outcomes[0][2][0] and "errcode 45009 api freq out of limit" in outcomes[1][2][0]
        assert "Timeout" in outcomes[2][2][0]
        due_again(clock, db)
        assert sender.run_once().sent == 1
        due_again(clock, db)
        assert sender.run_once().sent == 0  # delivered: never again
        time.sleep(TIMEOUT_S + 0.5)  # the slow answer has been written by now
        assert len(receiver.received) == 4  # the refused attempt never reached it
        assert len(receiver.accepted) == 1
        assert receiver.accepted[0] == {
            "msgtype": "text",
            "text": {
                "content": "[Staff needed] A shopper at kiosk kiosk-2 needs help (pressed the call button) · 14:05\n"
                "Claim it on the staff page: /staff"
            },
        }
        (row,) = alert_rows(db)
        assert (row["status"], row["ref"], row["attempts"], row["last_error"]) == (DONE, handoff_id, 4, None)
        assert sender.counts() == {"pending": 0, "parked": 0, "sent": 1, "skipped": 0}
    finally:
        receiver.stop()


def test_failures_back_off_growing_with_jitter_and_park_after_max_attempts(world, http, receiver) -> None:
    clock, db, store = world
    receiver.script = [(503, {"error": "busy"}, 0.0)] * 10
    receiver.start()
    sender = sender_for(db, settings_for(receiver.url, sync_max_attempts=4), http, clock)
    hand_off(store)
    waits = []
    for _ in range(4):
        before = clock.now
        sender.run_once()
        (row,) = alert_rows(db)
        waits.append(row["next_attempt_at"] - before)
        due_again(clock, db)
    (row,) = alert_rows(db)
    assert row["status"] == PARKED and row["attempts"] == 4
    assert row["last_error"].startswith("gave up after 4 attempts: webhook answered 503")
    assert all(0 <= wait <= 2**attempt for attempt, wait in enumerate(waits[:3]))  # full jitter, base 1 s
    assert len(set(waits)) == 4
    assert sender.run_once().sent == 0 and len(receiver.received) == 4  # parked: left for an operator


@pytest.mark.parametrize("status", [400, 404])
def test_a_refusal_parks_at_once(world, http, receiver, status: int) -> None:
    clock, db, store = world
    receiver.script = [(status, {"errcode": 93000, "errmsg": "invalid webhook url"}, 0.0)]
    receiver.start()
    sender = sender_for(db, settings_for(receiver.url), http, clock)
    hand_off(store)
    report = sender.run_once()
    assert (report.parked, report.failed) == (1, 0)
    (row,) = alert_rows(db)
    assert row["status"] == PARKED and row["attempts"] == 1 and f"webhook answered {status}" in row["last_error"]


@pytest.mark.parametrize("status", [408, 429])
def test_too_many_requests_and_request_timeout_are_retried(world, http, receiver, status: int) -> None:
    clock, db, store = world
    receiver.script = [(status, {"error": "slow down"}, 0.0)]
    receiver.start()
    sender = sender_for(db, settings_for(receiver.url), http, clock)
    hand_off(store)
    assert sender.run_once().failed == 1
    due_again(clock, db)
    assert sender.run_once().sent == 1 and len(receiver.accepted) == 1


def test_without_a_url_alerts_park_and_retry_sends_them_once_it_is_set(world, http, receiver) -> None:
    clock, db, store = world
    receiver.start()
    hand_off(store)
    report = sender_for(db, settings_for(None), http, clock).run_once()
    assert report.parked == 1
    (row,) = alert_rows(db)
    assert (row["status"], row["last_error"]) == (PARKED, NO_URL)
    assert requeue_parked(db, reason="KIOSK_STAFF_WEBHOOK_URL", clock=clock) == 1
    assert sender_for(db, settings_for(receiver.url), http, clock).run_once().sent == 1
    assert len(receiver.accepted) == 1


# --- text and shape ------------------------------------------------------------------------------------


EN = "[Staff needed] A shopper at kiosk kiosk-2 needs help (pressed the call button) · 14:05"
ZH = "【店员协助】自助机 kiosk-2 的顾客需要帮助（顾客按了呼叫按钮）· 14:05"


@pytest.mark.parametrize(
    ("webhook_format", "language", "expected"),
    [
        ("generic", "en", None),
        ("wecom", "zh", {"msgtype": "text", "text": {"content": ZH + "\n请在店员页面认领：/staff"}}),
        ("dingtalk", "en", {"msgtype": "text", "text": {"content": EN + "\nClaim it on the staff page: /staff"}}),
        ("feishu", "zh", {"msg_type": "text", "content": {"text": ZH + "\n请在店员页面认领：/staff"}}),
        ("slack", "en", {"text": EN + "\nClaim it on the staff page: /staff"}),
    ],
)
def test_each_format_gets_its_shape_in_the_store_language(
    world, http, receiver, webhook_format: str, language: str, expected: dict | None
) -> None:
    clock, db, store = world
    receiver.start()
    settings = settings_for(receiver.url, staff_webhook_format=webhook_format, ui_language=language)
    handoff_id = hand_off(store, language=language)
    assert sender_for(db, settings, http, clock).run_once().sent == 1
    (got,) = receiver.accepted
    if expected is None:  # generic: the text and the hand-off's facts
        assert got == {
            "text": EN + "\nClaim it on the staff page: /staff",
            "handoff": {
                "id": handoff_id,
                "kiosk_id": "kiosk-2",
                "language": "en",
                "reason": "button",
                "opened_at": AT_1405,
            },
        }
    else:
        assert got == expected


def test_reasons_language_and_question_are_worded_for_the_store(world) -> None:
    clock, db, store = world
    handoffs = Handoffs(db, clock=clock)
    quiet = settings_for(None, ui_language="zh")
    asked = settings_for(None, ui_language="en", staff_webhook_include_question=True)
    abstention = handoffs.get(hand_off(store, reason="abstention", language="zh", question="  退货\n要多久？ "))
    error = handoffs.get(hand_off(store, reason="error", language="en", question="x" * 300))
    assert render(abstention, quiet, UTC).splitlines() == [
        "【店员协助】自助机 kiosk-2 的顾客需要帮助（自助机无法回答顾客的问题）· 14:05",
        "请在店员页面认领：/staff",  # the shopper spoke the store's language; no question by default
    ]
    assert render(abstention, asked, UTC).splitlines() == [
        "[Staff needed] A shopper at kiosk kiosk-2 needs help (the kiosk could not answer the question) · 14:05",
        "Shopper's language: Chinese",
        "Question: “退货 要多久？”",
        "Claim it on the staff page: /staff",
    ]
    assert "自助机回答时出了故障" in render(error, quiet, UTC) and "顾客语言：英语" in render(error, quiet, UTC)
    question = render(error, asked, UTC).splitlines()[1]
    assert question.startswith("Question: “xxx") and len(question) < 220  # cut short
    assert "x" * 20 not in render(error, quiet, UTC)
    linked = settings_for(None, ui_language="en", staff_page_url="http://192.168.1.20:8080/staff")
    assert render(error, linked, UTC).splitlines()[-1] == "Claim it on the staff page: http://192.168.1.20:8080/staff"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"errcode": 0, "errmsg": "ok"}, None),
        ({"errcode": 310000, "errmsg": "sign not match"}, "errcode 310000 sign not match"),
        ({"code": 0, "msg": "success", "data": {}}, None),
        ({"code": 19021, "msg": "sign match fail"}, "code 19021 sign match fail"),
        ({"StatusCode": 0, "StatusMessage": "success"}, None),
        ({"StatusCode": 9499, "StatusMessage": "Bad Request"}, "StatusCode 9499 Bad Request"),
        ("ok", None),
        (None, None),
    ],
)
def test_a_2xx_body_that_reports_an_error_is_a_failure(answer: Any, error: str | None) -> None:
    assert body_error(answer) == error


def test_shapes_name_the_text_where_each_service_reads_it() -> None:
    handoff = {"id": "h", "kiosk_id": "k", "language": "en", "reason": "button", "opened_at": 1.0, "user": "u"}
    assert shape("hi", handoff, "generic")["handoff"] == {
        "id": "h",
        "kiosk_id": "k",
        "language": "en",
        "reason": "button",
        "opened_at": 1.0,
    }  # not the kiosk session's user, nor the question unless asked
    assert shape("hi", handoff, "wecom") == shape("hi", handoff, "dingtalk")


# --- who still needs it ----------------------------------------------------------------------------------


def test_alerts_nobody_needs_any_more_are_skipped(world, http, receiver) -> None:
    clock, db, store = world
    receiver.start()
    handoffs = Handoffs(db, clock=clock)
    claimed, closed, abandoned = hand_off(store), hand_off(store), hand_off(store)
    handoffs.claim(claimed, "Li")
    handoffs.close(closed, "Li")
    handoffs.abandon_conversation(handoffs.get(abandoned)["conversation_id"])
    clock.now -= 3600
    old = hand_off(store)
    clock.now += 3600
    fresh = hand_off(store)
    sender = sender_for(db, settings_for(receiver.url, staff_alert_max_age_s=1800), http, clock)
    report = sender.run_once()
    assert (report.sent, report.skipped) == (1, 4)
    assert len(receiver.accepted) == 1
    reasons = {row["ref"]: row["last_error"] for row in alert_rows(db)}
    assert reasons[claimed] == "not sent: its hand-off is claimed"
    assert reasons[closed] == "not sent: its hand-off is closed"
    assert reasons[abandoned] == "not sent: its hand-off is abandoned"
    assert "more than KIOSK_STAFF_ALERT_MAX_AGE_S" in reasons[old] and reasons[fresh] is None
    assert {row["status"] for row in alert_rows(db)} == {DONE}
    assert sender.counts() == {"pending": 0, "parked": 0, "sent": 1, "skipped": 4}


def test_a_handoff_claimed_while_the_alert_backs_off_is_not_sent_late(world, http, receiver) -> None:
    clock, db, store = world
    sender = sender_for(db, settings_for(receiver.url), http, clock)
    handoff_id = hand_off(store)
    assert sender.run_once().failed == 1  # the receiver is not up yet
    Handoffs(db, clock=clock).claim(handoff_id, "Li")
    receiver.start()
    due_again(clock, db)
    assert sender.run_once().skipped == 1 and receiver.received == []


def test_no_alert_row_without_the_setting_and_push_leaves_alert_rows_alone(world) -> None:
    clock, db, store = world
    hand_off(store, alert=False)
    assert alert_rows(db) == []
    hand_off(store)
    clock.now += 120

    class Sink:
        def find(self, end_user: str, session: str) -> Any:
            from edge.sync.push import ABSENT, Lookup

            return Lookup(ABSENT)

        def send(self, end_user: str, record: dict[str, Any]) -> str:
            return "run-1"

    policy = PushPolicy(store_id="s", kiosk_id="k", idle_s=0, max_attempts=3)
    Pusher(db, Sink(), policy, clock=clock, rng=random.Random(0)).run()
    assert [row["status"] for row in alert_rows(db)] == [PENDING]  # the pusher never takes an alert


# --- two senders, one database ---------------------------------------------------------------------------


def test_two_senders_on_one_database_file_send_each_alert_once(tmp_path: Path, http, receiver) -> None:
    receiver.script = [(200, {"errcode": 0}, 0.02)] * 40  # slow enough for the two to overlap
    receiver.start()
    clock = Clock()
    first, second = open_database(tmp_path / "k.db"), open_database(tmp_path / "k.db")
    try:
        store = ConversationStore(first, clock=clock)
        ids = [hand_off(store, kiosk=f"kiosk-{n}") for n in range(12)]
        settings = settings_for(receiver.url)
        senders = [
            sender_for(first, settings, http, clock, holder="agent A"),
            sender_for(second, settings, http, clock, holder="agent B"),
        ]
        start = threading.Barrier(2)
        reports = []

        def work(sender: AlertSender) -> None:
            start.wait()
            reports.append(sender.run_once())

        threads = [threading.Thread(target=work, args=(sender,)) for sender in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sum(report.sent for report in reports) == 12
        assert all(report.sent for report in reports)  # both worked, neither sent the other's
        kiosks = sorted(m["text"]["content"].split()[6] for m in receiver.accepted)
        assert kiosks == sorted(f"kiosk-{n}" for n in range(12)) and len(receiver.received) == 12
        assert {row["ref"] for row in alert_rows(first) if row["status"] == DONE} == set(ids)
    finally:
        first.close()
        second.close()


# --- secrets ---------------------------------------------------------------------------------------------


def test_the_webhook_url_is_never_logged_nor_stored(world, http, receiver, caplog) -> None:
    clock, db, store = world
    receiver.script = [(500, {"echo": receiver.url}, 0.0), (404, {"echo": receiver.url}, 0.0)]
    sender = sender_for(db, settings_for(receiver.url), http, clock)
    hand_off(store)
    hand_off(store)
    # httpx logs its own requests (URL and all) at INFO: `configure_logging` keeps only edge's INFO lines
    with caplog.at_level(logging.DEBUG, logger="edge"):
        sender.run_once()  # refused, twice
        receiver.start()
        due_again(clock, db)
        sender.run_once()  # 500, then 404 (echoing the URL back)
    stored = json.dumps(alert_rows(db))
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "webhook answered 500" in stored and "webhook answered 404" in stored
    assert "staff alert failed" in logged and "staff alert parked" in logged
    assert KEY not in stored and KEY not in logged and "<webhook>" in stored


# --- the agent: independent of central ------------------------------------------------------------------


def test_the_agent_sends_alerts_within_seconds_while_central_is_down(tmp_path: Path, receiver) -> None:
    receiver.start()
    settings = settings_for(
        receiver.url,
        data_dir=tmp_path / "data",
        central_url="http://127.0.0.1:9",  # nothing there: every pass is offline
        central_ingest_key="app-ingest-0123456789abcdef",
        sync_interval_s=3600,
        sync_probe_timeout_s=0.5,
    )
    settings.data_dir.mkdir(parents=True)
    db = open_database(settings.database_path)
    with httpx.Client() as alert_http:
        agent = SyncAgent(settings, db, DifyClient(settings.central_url, timeout_s=1), alert_http=alert_http)
        stop = threading.Event()
        loop = threading.Thread(target=agent.run_forever, args=(stop,))
        loop.start()
        try:
            time.sleep(0.5)  # the agent is up, central already found offline
            store = ConversationStore(db)
            opened = time.monotonic()
            hand_off(store)
            while not receiver.accepted and time.monotonic() - opened < 10:
                time.sleep(0.05)
            assert len(receiver.accepted) == 1, "the alert did not go out while central was down"
            assert time.monotonic() - opened < 5  # the alert loop, not the hour-long sync interval
            assert agent.status()["streams"]["central"]["state"] == "offline"
            assert agent.status()["alerts"] == {"pending": 0, "parked": 0, "sent": 1, "skipped": 0}
        finally:
            stop.set()
            loop.join(30)
    assert not loop.is_alive()
    db.close()


def test_edge_sync_once_sends_alerts_with_central_down_and_status_counts_them(tmp_path: Path, receiver) -> None:
    receiver.start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")},
        "KIOSK_DATA_DIR": str(tmp_path / "data"),
        "KIOSK_CENTRAL_URL": "http://127.0.0.1:9",
        "KIOSK_SYNC_PROBE_TIMEOUT_S": "0.5",
        "KIOSK_STAFF_WEBHOOK_URL": receiver.url,
        "KIOSK_STAFF_WEBHOOK_FORMAT": "feishu",
        "KIOSK_UI_LANGUAGE": "zh",
    }
    db = open_database(Settings(data_dir=tmp_path / "data").database_path)
    try:
        hand_off(ConversationStore(db))
        hand_off(ConversationStore(db))
        Outbox(db).enqueue(ALERT_ROW, "gone", {"handoff_id": "gone"})  # its hand-off does not exist
    finally:
        db.close()

    def edge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge", "sync", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    once = edge("once")
    assert once.returncode == 2, once.stderr  # central is unreachable...
    assert json.loads(once.stdout)["alerts"] == {"sent": 2, "skipped": 1, "failed": 0, "parked": 0, "errors": []}
    assert len(receiver.accepted) == 2  # ...and the alerts went out anyway
    assert receiver.accepted[0]["content"]["text"].startswith("【店员协助】自助机 kiosk-2 的顾客需要帮助")
    status = edge("status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["alerts"] == {"pending": 0, "parked": 0, "sent": 2, "skipped": 1}
    assert KEY not in once.stdout + once.stderr + status.stdout + status.stderr
