"""FastAPI dependencies: everything a route needs comes from the app's state, never from globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from edge.api.kiosk_auth import Caller
from edge.assistant.pipeline import Assistant
from edge.settings import Settings
from edge.store.conversations import ConversationStore


def _key_id(request: Request) -> str:
    state = request.app.state
    key_id = state.keyring.authenticate(request.headers.get("authorization"))
    state.rate_limiter.take(key_id)
    return key_id


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in the thread pool,
# one hop per dependency per request, which cost more than the work itself on the curated route.
async def app_key(request: Request) -> str:
    return _key_id(request)


async def chat_caller(request: Request) -> Caller:
    """An app key; or, on the chat routes a kiosk page needs, its same-origin session (see kiosk_auth)."""
    state = request.app.state
    kiosk = getattr(state, "kiosk", None)
    if kiosk is not None and request.headers.get("authorization") is None:
        session = kiosk.sessions.authenticate(request)
        if session is not None:
            # One bucket per kiosk device: anyone who can load the page can mint sessions.
            state.rate_limiter.take(f"kiosk:{request.client.host if request.client else '-'}")
            return Caller(f"kiosk:{session.sid}", pinned_user=session.user)
    return Caller(_key_id(request))


async def get_assistant(request: Request) -> Assistant:
    return request.app.state.assistant


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_conversations(request: Request) -> ConversationStore:
    return request.app.state.conversations


AppKey = Annotated[str, Depends(app_key)]
ChatCaller = Annotated[Caller, Depends(chat_caller)]
AssistantDep = Annotated[Assistant, Depends(get_assistant)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ConversationsDep = Annotated[ConversationStore, Depends(get_conversations)]
