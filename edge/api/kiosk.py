"""The kiosk page, served by the box itself: `/` (HTML + session cookie), `/ui/*` assets, `/kiosk/*`.

Its files, headers and cache rules are those of every page the box serves (`edge/api/assets.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlite_utils
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from edge.api.assets import Asset, asset_response, page_response
from edge.api.assets import load_assets as load_page_assets
from edge.api.errors import NotFound, Unauthorized
from edge.api.kiosk_auth import COOKIE, KioskSessions, check_same_origin, load_or_create_secret
from edge.settings import Settings
from edge.store.handoffs import Handoffs
from edge.store.sync_state import SyncState

router = APIRouter()
ASSETS = ("index.html", "base.css", "kiosk.css", "i18n.js", "kiosk.js")
STATUS_POLL_S = 15


def load_assets() -> dict[str, Asset]:
    return load_page_assets("index.html", "/ui/", ASSETS[1:])


@dataclass(frozen=True)
class Kiosk:
    """Everything the kiosk routes need, built in the app's lifespan (None when the page is off)."""

    sessions: KioskSessions
    assets: dict[str, Asset]
    sync_state: SyncState


def open_kiosk(settings: Settings, db: sqlite_utils.Database) -> Kiosk | None:
    if not settings.ui_enabled:
        return None
    return Kiosk(KioskSessions(load_or_create_secret(settings.data_dir)), load_assets(), SyncState(db))


def _kiosk(request: Request) -> Kiosk:
    kiosk: Kiosk | None = getattr(request.app.state, "kiosk", None)
    if kiosk is None:
        raise NotFound("The kiosk page is switched off on this box (KIOSK_UI_ENABLED=false).")
    return kiosk


async def _abandon_previous(request: Request, kiosk: Kiosk) -> None:
    """The page starts over (idle reset, "Start over", a reload): the shopper of the session it leaves is
    gone, so that session's open hand-off is marked abandoned -- staff are not sent to an empty kiosk."""
    token = request.cookies.get(COOKIE)
    handoffs: Handoffs | None = getattr(request.app.state, "handoffs", None)
    session = kiosk.sessions.verify(token) if token else None
    if session is None or handoffs is None:
        return
    await run_in_threadpool(handoffs.abandon_user, session.user)


def _set_session(request: Request, response: Response, kiosk: Kiosk) -> None:
    response.set_cookie(
        COOKIE,
        kiosk.sessions.issue(),
        max_age=kiosk.sessions.max_age_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@router.get("/", include_in_schema=False)
async def page(request: Request) -> Response:
    """The kiosk page, with a fresh session: a reload is a new shopper."""
    kiosk = _kiosk(request)
    await _abandon_previous(request, kiosk)
    response = page_response(kiosk.assets["index.html"])
    _set_session(request, response, kiosk)
    return response


@router.get("/ui/{name}", include_in_schema=False)
async def asset(name: str, request: Request, v: str | None = None) -> Response:
    return asset_response(_kiosk(request).assets, name, "index.html", request, v, "No such kiosk asset.")


@router.post("/kiosk/session", include_in_schema=False)
async def new_session(request: Request) -> Response:
    """A new session for the next shopper (the page asks at every idle reset, and after a 401)."""
    kiosk = _kiosk(request)
    check_same_origin(request)
    await _abandon_previous(request, kiosk)
    response = Response(b'{"result":"success"}', media_type="application/json", headers={"Cache-Control": "no-store"})
    _set_session(request, response, kiosk)
    return response


@router.get("/kiosk/status")
async def status(request: Request) -> dict[str, Any]:
    """What the kiosk page shows besides answers: central's connectivity (as the sync agent last saw
    it: online, offline, or unknown when no recent record) and the page's own settings. No key needed,
    like `/healthz`: it tells nothing a shopper standing at the kiosk could not see."""
    kiosk = _kiosk(request)
    settings: Settings = request.app.state.settings
    central = await run_in_threadpool(kiosk.sync_state.central, settings.central_max_age_s)
    return {
        **central,
        "idle_reset_s": settings.ui_idle_reset_s,
        "handoff_wait_s": settings.ui_handoff_wait_s,
        "language": settings.ui_language,
        "poll_s": STATUS_POLL_S,
    }


@router.get("/kiosk/handoff")
async def handoff(request: Request) -> dict[str, Any]:
    """The state of this kiosk session's newest hand-off, so the page can tell the shopper a colleague is on
    the way: `{"status": "none"}`, or its `status` (open, claimed, closed, abandoned), `claimed_by` and
    the hand-off's id. Only the session's own hand-offs: the kiosk cookie is required."""
    kiosk = _kiosk(request)
    session = kiosk.sessions.authenticate(request)
    if session is None:
        raise Unauthorized("The kiosk page's session cookie is required.")
    handoffs: Handoffs = request.app.state.handoffs
    latest = await run_in_threadpool(handoffs.latest_for_user, session.user)
    if latest is None:
        return {"status": "none"}
    return {
        "id": latest["id"],
        "conversation_id": latest["conversation_id"],
        "status": latest["status"],
        "claimed_by": latest["claimed_by"],
        "opened_at": latest["opened_at"],
    }
