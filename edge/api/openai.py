"""OpenAI's chat API: `kiosk-assistant` runs the full assistant; the LLM's own id gives plain generation."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from edge.api.deps import AppKey, AssistantDep
from edge.api.errors import InvalidParam, NotFound, Overloaded
from edge.api.sse import data_line
from edge.assistant.pipeline import Delta, Finished, Started
from edge.errors import EdgeError
from edge.inference.llm import Draining, Generation, QueueFull

router = APIRouter(prefix="/v1")
ASSISTANT_MODEL = "kiosk-assistant"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float | None = Field(default=None, ge=0, le=2)
    user: str | None = Field(default=None, max_length=255)


def _history(messages: list[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """The last user message is the question; earlier user/assistant pairs are the memory."""
    if messages[-1].role != "user":
        raise InvalidParam("the last message must come from the user", param="messages")
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for message in messages[:-1]:
        if message.role == "user":
            pending = message.text()
        elif message.role == "assistant" and pending is not None:
            pairs.append((pending, message.text()))
            pending = None
    return messages[-1].text(), pairs


def _chunk(completion_id: str, model: str, created: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _completion(
    completion_id: str, model: str, created: int, text: str, finish: str, usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": usage,
    }


@router.get("/models")
async def models(_: AppKey, request: Request) -> dict[str, Any]:
    created = int(request.app.state.started_at)
    ids = [ASSISTANT_MODEL] + ([request.app.state.llm.model_id] if request.app.state.llm else [])
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "created": created, "owned_by": "kiosk-edge"} for i in ids],
    }


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, _: AppKey, assistant: AssistantDep, request: Request
) -> Response:
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    llm = request.app.state.llm
    if body.model == ASSISTANT_MODEL:
        question, history = _history(body.messages)
        query = assistant.clean_query(question)
        user = body.user or "openai-client"
        prepared = await assistant.prepare(query, user, None, {}, history=history)
        stream = _assistant_events(assistant.run(prepared, query, user))
    elif llm is not None and body.model == llm.model_id:
        messages = [{"role": m.role if m.role != "developer" else "system", "content": m.text()} for m in body.messages]
        try:
            generation = llm.submit(
                messages,
                max_tokens=body.max_completion_tokens or body.max_tokens or 256,
                temperature=body.temperature if body.temperature is not None else 0.0,
            )
        except QueueFull as exc:
            raise Overloaded(
                "The model is busy; please retry shortly.", headers={"Retry-After": str(exc.retry_after)}
            ) from None
        except Draining as exc:
            raise Overloaded(str(exc), headers={"Retry-After": "5"}) from None
        stream = _generation_events(generation)
    else:
        raise NotFound(f"The model `{body.model}` does not exist", param="model")
    if body.stream:
        return StreamingResponse(_sse(stream, completion_id, body.model, created), media_type="text/event-stream")
    text: list[str] = []
    finish, usage = "stop", {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    async for kind, value in stream:
        if kind == "delta":
            text.append(value)
        else:
            finish, usage = value
    return JSONResponse(_completion(completion_id, body.model, created, "".join(text), finish, usage))


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _assistant_events(events: AsyncIterator[Started | Delta | Finished]) -> AsyncIterator[tuple[str, Any]]:
    async for event in events:
        if isinstance(event, Delta):
            yield "delta", event.text
        elif isinstance(event, Finished):
            yield "end", ("stop", _usage(event.prompt_tokens, event.completion_tokens))


async def _generation_events(generation: Generation) -> AsyncIterator[tuple[str, Any]]:
    try:
        async for chunk in generation.achunks():
            yield "delta", chunk
    except Draining as exc:  # queued when shutdown began
        raise Overloaded(str(exc), headers={"Retry-After": "5"}) from None
    finally:
        generation.cancel()  # a no-op when finished; stops the model when the client went away
    finish = "length" if generation.finish_reason == "length" else "stop"
    yield "end", (finish, _usage(generation.prompt_tokens, generation.completion_tokens))


async def _sse(
    stream: AsyncIterator[tuple[str, Any]], completion_id: str, model: str, created: int
) -> AsyncIterator[str]:
    yield data_line(_chunk(completion_id, model, created, {"role": "assistant", "content": ""}, None))
    try:
        async for kind, value in stream:
            if kind == "delta":
                yield data_line(_chunk(completion_id, model, created, {"content": value}, None))
            else:
                finish, usage = value
                yield data_line({**_chunk(completion_id, model, created, {}, finish), "usage": usage})
    except EdgeError as exc:
        yield data_line(
            {"error": {"message": exc.message, "type": exc.openai_type, "param": exc.param, "code": exc.code}}
        )
    except Exception:
        yield data_line(
            {
                "error": {
                    "message": "internal error",
                    "type": "server_error",
                    "param": None,
                    "code": "internal_server_error",
                }
            }
        )
    yield "data: [DONE]\n\n"
