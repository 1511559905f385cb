"""The staff page, served by the box: `/staff` (HTML), `/staff/ui/*` assets, and `/staff/api/*`.

Colleagues sign in with the store's staff PIN (`edge/api/staff_auth.py`), see open hand-offs live
(`/staff/api/events`, server-sent events; `/staff/api/handoffs` for polling), claim one ("I'm coming")
and close it ("Done"). Only the staff session cookie opens these routes: neither a kiosk cookie nor an
app key does. With `KIOSK_STAFF_PIN_DIGEST` unset the page says it is off and the API answers 404.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, StrictStr
from starlette.concurrency import run_in_threadpool

from edge.api.assets import CONTENT_TYPES, Asset, asset_response, load_assets, page_response
from edge.api.errors import InvalidParam, NotFound, Unauthorized
from edge.api.kiosk_auth import check_same_origin, load_or_create_secret
from edge.api.staff_auth import COOKIE, COOKIE_PATH, SECRET_FILE, SignInLimiter, StaffSession, StaffSessions
from edge.metrics import Metrics
from edge.pin import verify_pin
from edge.settings import Settings
from edge.store.handoffs import Handoffs

router = APIRouter()
PAGE = "staff.html"
PAGE_ASSETS = ("base.css", "staff.css", "staff.js")
POLL_S = 3  # the page's polling fallback when the event stream is down
EVENTS_CHECK_S = 0.5  # how often a stream compares the hand-offs' revision: a new one shows in < 2 s
KEEP_ALIVE_S = 15.0
RETRY_MS = 3000
HISTORY_DEFAULT_S = 86400.0
HISTORY_MAX_S = 7 * 86400.0
PRIVATE = ("user", "message_id")  # the kiosk session's user and the turn: nothing a colleague needs
OFF_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Staff page off</title><link rel="icon" href="data:,"></head>
<body><h1>The staff page is off on this box</h1>
<p>Set <code>KIOSK_STAFF_PIN_DIGEST</code> (made by <code>edge staff-pin</code>) and restart the box to turn it on.</p>
<p lang="zh-Hans">员工页面未开启：设置 <code>KIOSK_STAFF_PIN_DIGEST</code>
（由 <code>edge staff-pin</code> 生成）后重启。</p>
</body></html>
""".encode()
OFF = Asset(OFF_PAGE, CONTENT_TYPES[".html"], "off")


@dataclass(frozen=True)
class Staff:
    """Everything the staff routes need, built in the app's lifespan (None when no PIN digest is set)."""

    sessions: StaffSessions
    limiter: SignInLimiter
    pin_digest: str
    assets: dict[str, Asset]


def open_staff(settings: Settings) -> Staff | None:
    if settings.staff_pin_digest is None:
        return None
    digest = settings.staff_pin_digest.get_secret_value()
    secret = load_or_create_secret(settings.data_dir, SECRET_FILE)
    sessions = StaffSessions(secret, digest, max_age_s=max(1, round(settings.staff_session_hours * 3600)))
    limiter = SignInLimiter(settings.staff_signin_attempts, settings.staff_signin_window_s)
    return Staff(sessions, limiter, digest, load_assets(PAGE, "/staff/ui/", PAGE_ASSETS))


def _staff(request: Request) -> Staff:
    staff: Staff | None = getattr(request.app.state, "staff", None)
    if staff is None:
        raise NotFound("The staff page is off on this box: set KIOSK_STAFF_PIN_DIGEST (made by `edge staff-pin`).")
    return staff


def _signed_in(request: Request) -> tuple[Staff, StaffSession]:
    staff = _staff(request)
    return staff, staff.sessions.authenticate(request)


def _me(session: StaffSession, settings: Settings) -> dict[str, Any]:
    return {
        "name": session.name,
        "expires_at": session.expires_at,
        "remind_after_s": settings.staff_remind_after_s,
        "store_language": settings.ui_language,
        "poll_s": POLL_S,
    }


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key not in PRIVATE}


def board(handoffs: Handoffs, settings: Settings) -> dict[str, Any]:
    """The open and claimed hand-offs with their conversations so far (blocking: run it in a thread).
    The revision is read first: a change that lands meanwhile is sent again at the next check."""
    rev = handoffs.revision()
    active = [
        {**_public(item), "transcript": handoffs.transcript(item["conversation_id"])} for item in handoffs.active()
    ]
    return {"now": time.time(), "rev": rev, "remind_after_s": settings.staff_remind_after_s, "active": active}


# --- the page ------------------------------------------------------------------------------------


@router.get("/staff", include_in_schema=False)
async def page(request: Request) -> Response:
    staff: Staff | None = getattr(request.app.state, "staff", None)
    if staff is None:
        return page_response(OFF)
    return page_response(staff.assets[PAGE])


@router.get("/staff/ui/{name}", include_in_schema=False)
async def asset(name: str, request: Request, v: str | None = None) -> Response:
    return asset_response(_staff(request).assets, name, PAGE, request, v, "No such staff page asset.")


# --- signing in and out --------------------------------------------------------------------------


class SignIn(BaseModel):
    pin: StrictStr = Field(min_length=1, max_length=256)
    name: StrictStr = Field(min_length=1, max_length=200)


@router.post("/staff/api/session", include_in_schema=False)
async def sign_in(body: SignIn, request: Request) -> JSONResponse:
    """Check the PIN (rate-limited per device and for the whole store) and set the staff cookie."""
    staff = _staff(request)
    check_same_origin(request, page="staff")
    if not body.name.strip() or not any(ch.isprintable() and not ch.isspace() for ch in body.name):
        raise InvalidParam("name is required", param="name")
    client = request.client.host if request.client else "-"
    stamp = staff.limiter.reserve(client)
    if not await run_in_threadpool(verify_pin, body.pin, staff.pin_digest):
        request.app.state.log.warning("staff sign-in: wrong PIN", extra={"client": client})
        raise Unauthorized("Wrong PIN.")
    staff.limiter.release(client, stamp)
    token, session = staff.sessions.issue(body.name)
    response = JSONResponse(_me(session, request.app.state.settings), headers={"Cache-Control": "no-store"})
    response.set_cookie(
        COOKIE,
        token,
        max_age=staff.sessions.max_age_s,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/staff/api/me", include_in_schema=False)
async def me(request: Request) -> dict[str, Any]:
    _, session = _signed_in(request)
    return _me(session, request.app.state.settings)


@router.delete("/staff/api/session", include_in_schema=False)
async def sign_out(request: Request) -> JSONResponse:
    """Sign out: the cookie is cleared (the token itself stays valid until it expires: nothing is stored)."""
    _staff(request)
    check_same_origin(request, page="staff")
    response = JSONResponse({"result": "success"}, headers={"Cache-Control": "no-store"})
    response.delete_cookie(
        COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response


# --- hand-offs -----------------------------------------------------------------------------------


@router.get("/staff/api/handoffs", include_in_schema=False)
async def handoffs_now(request: Request) -> JSONResponse:
    _signed_in(request)
    state = request.app.state
    return JSONResponse(
        await run_in_threadpool(board, state.handoffs, state.settings), headers={"Cache-Control": "no-store"}
    )


@router.get("/staff/api/events", include_in_schema=False)
async def events(request: Request) -> StreamingResponse:
    """The board as server-sent events: at once, then whenever a hand-off changes; ends when the sign-in
    expires (the page reconnects, gets 401, and asks for the PIN) and when the box begins to drain (a
    stream never ends by itself, so it would hold a pod's stop for the whole grace period; the page
    reconnects to the next one). Starlette stops the stream when the client goes away."""
    _, session = _signed_in(request)
    state = request.app.state
    handoffs: Handoffs = state.handoffs
    settings: Settings = state.settings

    async def stream() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        sent_rev: int | None = None
        last_write = time.monotonic()
        while time.time() < session.expires_at and state.ready:
            rev = await run_in_threadpool(handoffs.revision)
            if rev != sent_rev:
                payload = await run_in_threadpool(board, handoffs, settings)
                sent_rev = payload["rev"]
                yield f"event: handoffs\ndata: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= KEEP_ALIVE_S:
                yield ": keep-alive\n\n"
                last_write = time.monotonic()
            if await request.is_disconnected():
                return
            await asyncio.sleep(min(EVENTS_CHECK_S, max(0.0, session.expires_at - time.time())))

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.get("/staff/api/history", include_in_schema=False)
async def history(request: Request, since: float | None = None) -> JSONResponse:
    """Hand-offs opened since `since` (epoch seconds; the page sends its local midnight), newest first; at
    most seven days back, the last day by default."""
    _signed_in(request)
    now = time.time()
    if since is None:
        since = now - HISTORY_DEFAULT_S
    elif not math.isfinite(since):
        raise InvalidParam("since must be a time in epoch seconds", param="since")
    since = max(since, now - HISTORY_MAX_S)
    items = await run_in_threadpool(request.app.state.handoffs.opened_since, since)
    return JSONResponse({"now": now, "data": [_public(item) for item in items]}, headers={"Cache-Control": "no-store"})


@router.post("/staff/api/handoffs/{handoff_id}/claim", include_in_schema=False)
async def claim(handoff_id: str, request: Request) -> dict[str, Any]:
    """ "I'm coming": the first claim wins; a later one gets 409 naming who has it."""
    _, session = _signed_in(request)
    check_same_origin(request, page="staff")
    item = await run_in_threadpool(request.app.state.handoffs.claim, handoff_id, session.name)
    metrics: Metrics = request.app.state.metrics
    metrics.observe_handoff_claim(item["time_to_claim_s"])
    return _public(item)


@router.post("/staff/api/handoffs/{handoff_id}/close", include_in_schema=False)
async def close(handoff_id: str, request: Request) -> dict[str, Any]:
    """ "Done": the shopper was helped (409 when the kiosk was reset before anyone claimed it)."""
    _, session = _signed_in(request)
    check_same_origin(request, page="staff")
    item, closed = await run_in_threadpool(request.app.state.handoffs.close_once, handoff_id, session.name)
    if closed:
        request.app.state.metrics.observe_handoff_closed()
    return _public(item)
