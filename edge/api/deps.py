"""FastAPI dependencies: everything a route needs comes from the app's state, never from globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from edge.assistant.pipeline import Assistant
from edge.settings import Settings
from edge.store.conversations import ConversationStore


def app_key(request: Request) -> str:
    state = request.app.state
    key_id = state.keyring.authenticate(request.headers.get("authorization"))
    state.rate_limiter.take(key_id)
    return key_id


def get_assistant(request: Request) -> Assistant:
    return request.app.state.assistant


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_conversations(request: Request) -> ConversationStore:
    return request.app.state.conversations


AppKey = Annotated[str, Depends(app_key)]
AssistantDep = Annotated[Assistant, Depends(get_assistant)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ConversationsDep = Annotated[ConversationStore, Depends(get_conversations)]
