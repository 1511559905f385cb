"""Dify's app API, so kiosk clients written for Dify work unchanged against the box."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from edge.api.deps import AppKey, AssistantDep, ChatCaller, ConversationsDep, SettingsDep
from edge.api.errors import ApiError, InvalidParam, NotFound
from edge.api.sse import PING, data_line, with_pings
from edge.assistant.pipeline import Delta, Finished, Started
from edge.assistant.sources import legacy_source
from edge.errors import EdgeError
from edge.language import DEFAULT_LANGUAGE, LANGUAGES, detect

router = APIRouter(prefix="/v1")
PING_INTERVAL_S = 10.0
ANNOTATION_ACCOUNT = str(uuid.uuid5(uuid.NAMESPACE_URL, "kiosk-edge:central-annotations"))


class DifyModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _uuid_or_none(value: str | None, name: str) -> str | None:
    if value in (None, ""):
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"{name} is not a valid UUID") from None


def _storable(value: Any, name: str) -> Any:
    """Refuse what the conversation store cannot keep: a lone surrogate (`\\ud800` in JSON) is no UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name} contains a lone surrogate, which is not valid UTF-8") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key, name)
            _storable(item, name)
    elif isinstance(value, list):
        for item in value:
            _storable(item, name)
    return value


class ChatRequest(DifyModel):
    query: str  # surrogates and junk are cleaned from the question, not refused
    inputs: dict[str, Any] = Field(default_factory=dict)
    response_mode: Literal["streaming", "blocking"] | None = "blocking"
    user: str = Field(min_length=1, max_length=255)
    conversation_id: str | None = None
    files: list[dict[str, Any]] | None = None  # accepted and ignored: the box takes no uploads
    auto_generate_name: bool = True

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs_default(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("inputs")
    @classmethod
    def _inputs_storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _storable(value, "inputs")

    @field_validator("conversation_id")
    @classmethod
    def _conversation_uuid(cls, value: str | None) -> str | None:
        return _uuid_or_none(value, "conversation_id")


class UserBody(DifyModel):
    user: str = Field(min_length=1, max_length=255)


class RenameBody(UserBody):
    name: str | None = Field(default=None, max_length=255)  # Dify's conversation name is a varchar(255)
    auto_generate: bool = False


class FeedbackBody(UserBody):
    rating: Literal["like", "dislike"] | None = None
    content: str | None = None

    @field_validator("content")
    @classmethod
    def _content_storable(cls, value: str | None) -> str | None:
        return _storable(value, "content")


def _usage(finished: Finished) -> dict[str, Any]:
    return {
        "prompt_tokens": finished.prompt_tokens,
        "prompt_unit_price": "0",
        "prompt_price_unit": "0",
        "prompt_price": "0",
        "completion_tokens": finished.completion_tokens,
        "completion_unit_price": "0",
        "completion_price_unit": "0",
        "completion_price": "0",
        "total_tokens": finished.prompt_tokens + finished.completion_tokens,
        "total_price": "0",
        "currency": "USD",
        "latency": round(finished.latency_s, 4),
    }


def _resources(sources: list[dict[str, Any]], message_id: str, created_at: int) -> list[dict[str, Any]]:
    """Dify's RetrieverResource for each stored source: the per-message fields added to what was stored."""
    resources = []
    for position, stored in enumerate(sources, start=1):
        source = legacy_source(stored)
        resources.append(
            {
                "id": str(uuid.uuid5(uuid.UUID(message_id), str(position))),
                "message_id": message_id,
                "position": position,
                **source,
                "score": float(source.get("score", 1.0)),
                "hit_count": 0,
                "word_count": len(source["content"].split()),
                "summary": None,
                "created_at": created_at,
            }
        )
    return resources


def _metadata(finished: Finished, started: Started) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "usage": _usage(finished),
        "retriever_resources": _resources(finished.sources, started.message_id, started.created_at),
        "route": finished.route.value,
        "intent": finished.message.get("intent"),
        "confidence": finished.message.get("confidence"),
    }
    if finished.annotation_id:  # as Dify: only when an annotation answered
        metadata["annotation_reply"] = {
            "id": finished.annotation_id,
            "account": {"id": ANNOTATION_ACCOUNT, "name": "central"},
        }
    return metadata


@router.get("/")
async def index() -> dict[str, str]:
    from edge import __version__

    return {"welcome": "Dify OpenAPI", "api_version": "v1", "server_version": __version__}


@router.post("/chat-messages", response_model=None)
async def chat_messages(body: ChatRequest, caller: ChatCaller, assistant: AssistantDep, request: Request) -> Response:
    user = caller.user(body.user)
    query = assistant.clean_query(body.query)
    prepared = await assistant.prepare(query, user, body.conversation_id, body.inputs)
    events = assistant.run(prepared, query, user)
    if body.response_mode == "streaming":
        return StreamingResponse(_stream(events), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    answer: list[str] = []
    started: Started | None = None
    async for event in events:
        if isinstance(event, Started):
            started = event
        elif isinstance(event, Delta):
            answer.append(event.text)
        elif started is not None:
            return JSONResponse(
                {
                    "event": "message",
                    "task_id": started.task_id,
                    "id": started.message_id,
                    "message_id": started.message_id,
                    "conversation_id": started.conversation_id,
                    "mode": "chat",
                    "answer": "".join(answer),
                    "metadata": _metadata(event, started),
                    "created_at": started.created_at,
                }
            )
    raise ApiError("the answer ended without finishing")


async def _stream(events: AsyncIterator[Started | Delta | Finished]) -> AsyncIterator[str]:
    started: Started | None = None
    try:
        async for event in with_pings(events, PING_INTERVAL_S):
            if event is None:
                yield PING
            elif isinstance(event, Started):
                started = event
            elif started is None:
                continue
            else:
                common = {
                    "task_id": started.task_id,
                    "id": started.message_id,
                    "message_id": started.message_id,
                    "conversation_id": started.conversation_id,
                    "created_at": started.created_at,
                }
                if isinstance(event, Delta):
                    yield data_line({"event": "message", **common, "answer": event.text})
                else:
                    yield data_line(
                        {
                            "event": "message_end",
                            **common,
                            "metadata": _metadata(event, started),
                            "files": None,
                        }
                    )
    except EdgeError as exc:
        yield data_line(_error_event(started, exc.status, exc.code, exc.message))
    except Exception:  # after the first byte, a failure can only be an error event
        yield data_line(
            _error_event(started, 500, "internal_server_error", "Internal Server Error, please contact support.")
        )


def _error_event(started: Started | None, status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "event": "error",
        "conversation_id": started.conversation_id if started else None,
        "message_id": started.message_id if started else None,
        "created_at": started.created_at if started else int(time.time()),
        "status": status,
        "code": code,
        "message": message,
    }


@router.post("/chat-messages/{task_id}/stop")
async def stop(task_id: str, body: UserBody, caller: ChatCaller, assistant: AssistantDep) -> dict[str, str]:
    assistant.stop(task_id, caller.user(body.user))
    return {"result": "success"}


def _conversation_item(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "inputs", "status", "introduction", "created_at", "updated_at")
    return {key: row.get(key) for key in keys}


@router.get("/conversations")
async def conversations(
    caller: ChatCaller,
    store: ConversationsDep,
    user: str = "DEFAULT-USER",
    last_id: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    sort_by: Literal["created_at", "-created_at", "updated_at", "-updated_at"] = "-updated_at",
) -> dict[str, Any]:
    last = _uuid_or_404(last_id, "Last Conversation Not Exists.")
    rows, has_more = await run_in_threadpool(store.list, caller.user(user), last, limit, sort_by)
    return {"limit": limit, "has_more": has_more, "data": [_conversation_item(row) for row in rows]}


def _uuid_or_404(value: str | None, message: str) -> str | None:
    try:
        return _uuid_or_none(value, "id")
    except ValueError:
        raise NotFound(message) from None


@router.get("/messages")
async def messages(
    caller: ChatCaller,
    store: ConversationsDep,
    conversation_id: str,
    user: str = "DEFAULT-USER",
    first_id: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
) -> dict[str, Any]:
    conversation = _uuid_or_404(conversation_id, "Conversation Not Exists.")
    first = _uuid_or_404(first_id, "First Message Not Exists.")
    rows, has_more = await run_in_threadpool(store.messages, conversation, caller.user(user), first, limit)
    return {"limit": limit, "has_more": has_more, "data": [_message_item(row) for row in rows]}


def _message_item(row: dict[str, Any]) -> dict[str, Any]:
    """A stored turn as Dify's MessageListItem: its sources as the same RetrieverResources the answer carried."""
    return {
        **row,
        "retriever_resources": _resources(row["retriever_resources"], row["id"], row["created_at"]),
        "extra_contents": [],
        "total_price": "0",
        "currency": "USD",
    }


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: str, body: UserBody, caller: ChatCaller, store: ConversationsDep
) -> Response:
    target = _uuid_or_404(conversation_id, "Conversation Not Exists.")
    await run_in_threadpool(store.delete, target, caller.user(body.user))
    return Response(status_code=204)


@router.post("/conversations/{conversation_id}/name")
async def rename(conversation_id: str, body: RenameBody, caller: ChatCaller, store: ConversationsDep) -> dict[str, Any]:
    target = _uuid_or_404(conversation_id, "Conversation Not Exists.")
    user = caller.user(body.user)
    name = body.name
    if not name:
        if not body.auto_generate:
            raise InvalidParam("name is required", param="name")
        # The user's own conversation first (else 404): its turns must not decide the answer for another user.
        await run_in_threadpool(store.get, target, user)
        turns = await run_in_threadpool(store.recent_turns, target, 1)
        if not turns:
            raise InvalidParam("the conversation has no messages to name it from")
        name = turns[0][0][:40]
    row = await run_in_threadpool(store.rename, target, user, name)
    return _conversation_item(row)


@router.post("/messages/{message_id}/feedbacks")
async def feedback(message_id: str, body: FeedbackBody, caller: ChatCaller, store: ConversationsDep) -> dict[str, str]:
    target = _uuid_or_404(message_id, "Message Not Exists.")
    await run_in_threadpool(store.set_feedback, target, caller.user(body.user), body.rating, body.content)
    return {"result": "success"}


@router.get("/parameters")
async def parameters(
    _: ChatCaller,
    settings: SettingsDep,
    request: Request,
    language: Annotated[str | None, Query(description="kiosk-edge: `en` or `zh` (the kiosk page's language).")] = None,
) -> dict[str, Any]:
    """The box's settings in the page's language, overridden by central's opening statement and suggested
    questions once the sync agent has pulled them (central is authoritative for app configuration) when
    they are written in that language. Dify has no `language` parameter: without it, the default language."""
    central_store = getattr(request.app.state, "central_parameters", None)
    central = (await run_in_threadpool(central_store.get) if central_store is not None else None) or {}
    language = language if language in LANGUAGES else settings.ui_language
    opening = central.get("opening_statement")
    if not isinstance(opening, str) or detect(opening) != language:
        opening = settings.text("opening_statement", language)
    suggested = central.get("suggested_questions")
    if not isinstance(suggested, list) or not suggested or any(detect(str(q)) != language for q in suggested):
        suggested = settings.suggested_questions.get(language) or settings.suggested_questions.get(DEFAULT_LANGUAGE, [])
    return {
        "opening_statement": opening,
        "suggested_questions": suggested,
        "suggested_questions_after_answer": {"enabled": False},
        "speech_to_text": {"enabled": False},
        "text_to_speech": {"enabled": False, "voice": "", "language": "", "autoPlay": "disabled"},
        "retriever_resource": {"enabled": True},
        "annotation_reply": {"enabled": True},
        "more_like_this": {"enabled": False},
        "sensitive_word_avoidance": {"enabled": False, "type": "", "configs": []},
        "user_input_form": [],
        "file_upload": {"image": {"enabled": False, "number_limits": 0, "detail": "high", "transfer_methods": []}},
        "system_parameters": {
            "file_size_limit": 0,
            "image_file_size_limit": 0,
            "audio_file_size_limit": 0,
            "video_file_size_limit": 0,
            "workflow_file_upload_limit": 0,
        },
    }


@router.get("/info")
async def info(_: AppKey, settings: SettingsDep) -> dict[str, Any]:
    return {
        "name": settings.app_name,
        "description": "kiosk-edge offline assistant",
        "tags": [],
        "mode": "chat",
        "author_name": "kiosk-edge",
    }


@router.get("/meta")
async def meta(_: AppKey) -> dict[str, Any]:
    return {"tool_icons": {}}
