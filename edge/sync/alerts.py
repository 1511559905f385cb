"""Staff alerts, edge → the store's chat group: one webhook message per new hand-off, sent by the sync agent.

The runtime queues an outbox row `alert` (ref = the hand-off's id) in the same transaction as the hand-off
(`settings.staff_alerts`), so answering the shopper never waits for the webhook. `AlertSender.run_once`
leases the due alert rows -- one conditional UPDATE per row, so two agents on one database never send one
twice -- and for each:

- re-reads the hand-off: one that is no longer open (a colleague claimed or closed it, the shopper left)
  or older than `staff_alert_max_age_s` is marked done unsent (`skipped`): a late alert sends someone
  to an empty kiosk;
- writes the message in the store's language (`ui_language`), shaped for the chat service
  (`staff_webhook_format`), and POSTs it with a short timeout;
- counts only a 2xx whose JSON body reports no error as delivered (WeCom and DingTalk answer 200 with
  `errcode`, Feishu with `code` / `StatusCode`). Other failures back off with jitter and park after
  `sync_max_attempts`; a 4xx other than 408/429 parks at once (the URL or the message is wrong:
  retrying changes nothing). `edge sync retry` re-queues parked alerts like any parked row.

Delivery is at least once: a request that timed out may have been posted, and is sent again.
The webhook URL usually carries the group's key: it is never logged nor written to `last_error`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import sqlite_utils

from edge.settings import Settings
from edge.store.db import connection_lock, transaction
from edge.store.errors import NotFound
from edge.store.handoffs import ABSTENTION, ALERT_ROW, BUTTON, ERROR, OPEN, Handoffs
from edge.store.outbox import DONE, PARKED, PENDING, Outbox
from edge.sync.push import agent_id, backoff

log = logging.getLogger(__name__)
NO_URL = "no KIOSK_STAFF_WEBHOOK_URL"
STAFF_PAGE = "/staff"
QUESTION_MAX = 200
TIMEOUT_S = 5.0  # a chat webhook answers in well under a second; the next attempt is better than a long wait
BACKOFF_BASE_S, BACKOFF_MAX_S = 1.0, 60.0  # an alert is worth little after a few minutes (max age drops it)
RETRYABLE_4XX = (408, 429)

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "headline": "[Staff needed] A shopper at kiosk {kiosk} needs help ({reason}) · {time}",
        BUTTON: "pressed the call button",
        ABSTENTION: "the kiosk could not answer the question",
        ERROR: "the kiosk had a problem answering",
        "language": "Shopper's language: {language}",
        "question": "Question: “{question}”",
        "page": "Claim it on the staff page: {page}",
    },
    "zh": {
        "headline": "【店员协助】自助机 {kiosk} 的顾客需要帮助（{reason}）· {time}",
        BUTTON: "顾客按了呼叫按钮",
        ABSTENTION: "自助机无法回答顾客的问题",
        ERROR: "自助机回答时出了故障",
        "language": "顾客语言：{language}",
        "question": "顾客的问题：“{question}”",
        "page": "请在店员页面认领：{page}",
    },
}
LANGUAGE_NAMES = {"en": {"en": "English", "zh": "Chinese"}, "zh": {"en": "英语", "zh": "中文"}}


@dataclass
class AlertReport:
    sent: int = 0
    skipped: int = 0  # the hand-off was no longer open, or too old: marked done, not sent
    failed: int = 0  # will be tried again
    parked: int = 0
    errors: list[str] = field(default_factory=list)


class WebhookFailed(Exception):
    """The webhook did not take the message. `final`: retrying it unchanged will not help (park now)."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


def render(handoff: dict[str, Any], settings: Settings, tz: tzinfo | None = None) -> str:
    """The alert's text, in the store's language (the staff's, not the shopper's)."""
    store = settings.ui_language if settings.ui_language in TEXTS else "en"
    texts = TEXTS[store]
    opened = datetime.fromtimestamp(handoff["opened_at"], tz).strftime("%H:%M")
    reason = texts.get(handoff["reason"], texts[BUTTON])
    lines = [texts["headline"].format(kiosk=handoff["kiosk_id"], reason=reason, time=opened)]
    language = LANGUAGE_NAMES[store].get(handoff["language"])
    if language and handoff["language"] != store:
        lines.append(texts["language"].format(language=language))
    question = " ".join(str(handoff.get("question") or "").split())
    if settings.staff_webhook_include_question and question:
        if len(question) > QUESTION_MAX:
            question = question[: QUESTION_MAX - 1] + "…"
        lines.append(texts["question"].format(question=question))
    lines.append(texts["page"].format(page=settings.staff_page_url or STAFF_PAGE))
    return "\n".join(lines)


def shape(text: str, handoff: dict[str, Any], webhook_format: str) -> dict[str, Any]:
    """The JSON body each chat service's incoming webhook expects."""
    if webhook_format in ("wecom", "dingtalk"):
        return {"msgtype": "text", "text": {"content": text}}
    if webhook_format == "feishu":
        return {"msg_type": "text", "content": {"text": text}}
    if webhook_format == "slack":
        return {"text": text}
    fields = ("id", "kiosk_id", "language", "reason", "opened_at")
    return {"text": text, "handoff": {name: handoff[name] for name in fields}}


def body_error(body: Any) -> str | None:
    """The error a 2xx body reports, or None: WeCom/DingTalk `errcode`, Feishu `code` or `StatusCode`."""
    if not isinstance(body, dict):
        return None
    for code_key, message_key in (("errcode", "errmsg"), ("code", "msg"), ("StatusCode", "StatusMessage")):
        code = body.get(code_key)
        if code is not None and code != 0 and code != "0":
            return f"{code_key} {code} {body.get(message_key) or ''}".strip()
    return None


def _scrub(text: str, url: str) -> str:
    """`text` without the webhook URL or its query (they carry the group's key)."""
    parts = urlsplit(url)
    for secret in (url, parts.query, parts.path if len(parts.path) > 8 else ""):
        if secret:
            text = text.replace(secret, "<webhook>")
    return text


class AlertSender:
    """Sends the due `alert` rows of one database to the store's webhook; safe to run beside the pusher
    and beside another sender (another agent, `edge sync once`)."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        settings: Settings,
        http: httpx.Client,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        *,
        holder: str | None = None,
        timeout_s: float | None = None,
        tz: tzinfo | None = None,  # None: KIOSK_STORE_TIMEZONE
    ) -> None:
        self.db = db
        self.settings = settings
        self.http = http
        self.clock = clock
        self.rng = rng or random.Random()
        self.holder = holder or agent_id()
        self.timeout_s = timeout_s if timeout_s is not None else min(TIMEOUT_S, settings.sync_timeout_s)
        self.lease_s = 2 * self.timeout_s + 10.0
        self.tz = tz or ZoneInfo(settings.store_timezone)
        self.outbox = Outbox(db, clock=clock)
        self.handoffs = Handoffs(db, clock=clock)
        self.backoff_max_s = min(BACKOFF_MAX_S, settings.sync_backoff_max_s)

    def due(self) -> bool:
        """Whether an alert row is due now: the cheap question the agent's alert loop asks every second."""
        with connection_lock(self.db):
            row = self.db.execute(
                "SELECT 1 FROM outbox WHERE status = ? AND next_attempt_at <= ? AND kind = ? LIMIT 1",
                [PENDING, self.clock(), ALERT_ROW],
            ).fetchone()
        return row is not None

    def run_once(self, limit: int = 50) -> AlertReport:
        """Send (or skip, or park) the due alert rows, oldest first, one lease at a time (a slow webhook
        must not outlast the lease of rows still waiting their turn)."""
        report = AlertReport()
        for _ in range(limit):
            row = self._claim()
            if row is None:
                break
            self._one(row, report)
        return report

    def counts(self) -> dict[str, int]:
        """Alert rows by outcome, for `edge sync status`: pending, parked, sent and skipped."""
        with connection_lock(self.db):
            rows = self.db.execute(
                "SELECT status, last_error IS NOT NULL AND status = ?, count(*) FROM outbox WHERE kind = ?"
                " GROUP BY 1, 2",
                [DONE, ALERT_ROW],
            ).fetchall()
        counts = {"pending": 0, "parked": 0, "sent": 0, "skipped": 0}
        for status, skipped, count in rows:
            key = {PENDING: "pending", PARKED: "parked"}.get(status) or ("skipped" if skipped else "sent")
            counts[key] += count
        return counts

    # --- one row --------------------------------------------------------------------------------

    def _claim(self) -> dict[str, Any] | None:
        """Lease the oldest due alert row to this sender, or None. The lease is one conditional UPDATE: of
        two senders that read the same due row, only one changes it, and only that one sends it."""
        for _ in range(10):  # another sender took the row read: read the next one
            now = self.clock()
            with connection_lock(self.db):
                found = self.db.execute(
                    "SELECT id FROM outbox WHERE status = ? AND next_attempt_at <= ? AND kind = ? ORDER BY id LIMIT 1",
                    [PENDING, now, ALERT_ROW],
                ).fetchone()
            if found is None:
                return None
            with transaction(self.db):
                cursor = self.db.execute(
                    "UPDATE outbox SET leased_by = ?, next_attempt_at = ? WHERE id = ? AND kind = ? AND status = ?"
                    " AND next_attempt_at <= ?",
                    [self.holder, now + self.lease_s, found[0], ALERT_ROW, PENDING, now],
                )
            if cursor.rowcount == 1:
                return self.outbox.get(found[0])
        return None

    def _one(self, row: dict[str, Any], report: AlertReport) -> None:
        try:
            handoff = self.handoffs.get(row["ref"])
        except NotFound:
            self._skip(row, "its hand-off no longer exists", report)
            return
        if handoff["status"] != OPEN:
            self._skip(row, f"its hand-off is {handoff['status']}", report)
            return
        age = self.clock() - handoff["opened_at"]
        if age > self.settings.staff_alert_max_age_s:
            self._skip(row, f"its hand-off opened {age:.0f} s ago, more than KIOSK_STAFF_ALERT_MAX_AGE_S", report)
            return
        url = self.settings.staff_webhook_url.get_secret_value() if self.settings.staff_webhook_url else ""
        if not url:
            self._fail(row, handoff, WebhookFailed(NO_URL, final=True), report)
            return
        text = render(handoff, self.settings, self.tz)
        try:
            self._post(url, shape(text, handoff, self.settings.staff_webhook_format))
        except WebhookFailed as exc:
            self._fail(row, handoff, WebhookFailed(_scrub(str(exc), url), final=exc.final), report)
            return
        self.outbox.mark_done(row["id"])
        report.sent += 1
        log.info(
            "staff alert sent",
            extra={"handoff_id": handoff["id"], "kiosk_id": handoff["kiosk_id"], "attempts": row["attempts"] + 1},
        )

    def _post(self, url: str, body: dict[str, Any]) -> None:
        try:
            response = self.http.post(url, json=body, timeout=self.timeout_s)
        except httpx.HTTPError as exc:  # refused, reset, timed out, DNS...; the message may hold the URL
            raise WebhookFailed(f"webhook unreachable: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if not 200 <= status < 300:
            final = 400 <= status < 500 and status not in RETRYABLE_4XX
            raise WebhookFailed(f"webhook answered {status}: {response.text[:200]}", final=final)
        try:
            answer = response.json() if response.content else None
        except (ValueError, UnicodeDecodeError):
            answer = None  # a plain "ok" (Slack) is a success
        if (error := body_error(answer)) is not None:
            raise WebhookFailed(f"webhook refused the message: {error}"[:300])

    def _skip(self, row: dict[str, Any], why: str, report: AlertReport) -> None:
        """Done without sending; `last_error` says why (a sent alert has none)."""
        with transaction(self.db):
            self.db.execute(
                "UPDATE outbox SET status = ?, last_error = ?, leased_by = NULL, updated_at = ? WHERE id = ?",
                [DONE, f"not sent: {why}", self.clock(), row["id"]],
            )
        report.skipped += 1
        log.info("staff alert not sent", extra={"handoff_id": row["ref"], "why": why})

    def _fail(self, row: dict[str, Any], handoff: dict[str, Any], exc: WebhookFailed, report: AlertReport) -> None:
        max_attempts = 1 if exc.final else self.settings.sync_max_attempts
        error = str(exc)
        if row["attempts"] + 1 >= max_attempts and not exc.final:
            error = f"gave up after {max_attempts} attempts: {error}"
        delay = backoff(row["attempts"], BACKOFF_BASE_S, self.backoff_max_s, self.rng)
        self.outbox.mark_failed(row["id"], error, retry_in=delay, max_attempts=max_attempts)
        parked = row["attempts"] + 1 >= max_attempts
        report.parked += parked
        report.failed += not parked
        report.errors.append(error)
        extra = {"handoff_id": handoff["id"], "error": error, "attempts": row["attempts"] + 1}
        if parked:
            log.error("staff alert parked", extra=extra)
        else:
            log.warning("staff alert failed, will retry", extra={**extra, "retry_in_s": round(delay, 1)})
