"""Chat app endpoints: chat-messages (blocking and streaming), stop, messages, conversations, feedback.

Answers are deterministic: a scripted answer for the exact query, else a matching annotation (when
annotation reply is on), else the best-matching segment of the app's datasets (English words, Chinese
character bigrams), else a fixed apology in the query's language. The message row is committed before
the answer is sent, as in Dify, so a lost response still leaves it in `GET /messages`; a `first_byte`
fault delays what follows the commit.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_dify import render
from tests.fake_dify.errors import InvalidParam, NotFound
from tests.fake_dify.faults import RequestInfo, Rule
from tests.fake_dify.inputs import validate_inputs
from tests.fake_dify.render import iso
from tests.fake_dify.sse import Event, sse_body, sse_response
from tests.fake_dify.state import CHAT_MODES, App, Conversation, FakeDifyState, Message
from tests.fake_dify.wire import (
    ENTRY_KEY,
    UUID_RE,
    app_auth,
    ctx,
    int_arg,
    json_body,
    note_fault,
    route,
    text,
    user,
    uuid_arg,
)

SORTS = ("created_at", "-created_at", "updated_at", "-updated_at")
NO_ANSWER = "Sorry, I could not find an answer to that."
NO_ANSWER_ZH = "抱歉，我没有找到这个问题的答案。"
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
CJK_CHUNK = 4  # characters per streamed chunk of Chinese text (it has no spaces to split on)


def no_answer(query: str) -> str:
    return NO_ANSWER_ZH if CJK.search(query) else NO_ANSWER


def compose(state: FakeDifyState, app: App, message: Message, min_score: float = 0.0) -> None:
    """Fill in the answer, its sources and the annotation used, as a model run would.

    A segment counts as a source when at least `min_score` of the query's terms are in it."""
    query = message.query
    annotation = None
    if app.annotation_reply_enabled:
        wanted = query.strip().lower()
        annotation = next((a for a in state.list_annotations(app.id) if a.question.strip().lower() == wanted), None)
    hits = [] if annotation else state.knowledge.search(app.dataset_ids, query)
    hits = [(seg, score) for seg, score in hits if score >= min_score]
    if query in app.answers:
        message.answer = app.answers[query]
    elif annotation is not None:
        message.answer, message.annotation_id = annotation.answer, annotation.id
        annotation.hit_count += 1
    else:
        message.answer = hits[0][0].content if hits else no_answer(query)
    if app.retriever_resource_enabled:
        message.retriever_resources = [
            _resource(state, message, n, seg, score) for n, (seg, score) in enumerate(hits, 1)
        ]
    for seg, _ in hits:
        seg.hit_count += 1  # Dify counts hits too: a field that changes without any edit


def _resource(state: FakeDifyState, message: Message, position: int, seg: Any, score: float) -> dict[str, Any]:
    ks = state.knowledge
    return {
        "id": state.ids.uuid(),
        "message_id": message.id,
        "position": position,
        "dataset_id": seg.dataset_id,
        "dataset_name": ks.datasets[seg.dataset_id].name,
        "document_id": seg.document_id,
        "document_name": ks.documents[seg.document_id].name,
        "data_source_type": "upload_file",
        "segment_id": seg.id,
        "score": score,
        "hit_count": seg.hit_count,
        "word_count": seg.word_count,
        "segment_position": seg.position,
        "index_node_hash": seg.index_node_hash,
        "content": seg.content,
        "summary": None,
        "created_at": message.created_at,
    }


def _chunks(answer: str) -> list[str]:
    """A word a chunk; runs of Chinese text a few characters a chunk."""
    chunks = []
    for word in re.findall(r"\s*\S+", answer):
        if CJK.search(word):
            chunks += [word[i : i + CJK_CHUNK] for i in range(0, len(word), CJK_CHUNK)]
        else:
            chunks.append(word)
    return chunks or [answer]


async def _first_byte_wait(request: Request, rule: Rule) -> None:
    """Wait as a thinking model would; a client that hangs up meanwhile is noted (the answer goes nowhere)."""
    with anyio.move_on_after(rule.seconds or 0.0):
        while (await request.receive())["type"] != "http.disconnect":
            pass
        entry = request.scope.get(ENTRY_KEY)
        if entry is not None:
            entry.outcome = "stalled"


async def chat_messages(request: Request) -> Response:
    app = app_auth(request, *CHAT_MODES)
    body = await json_body(request)
    query = text(body, "query").replace("\x00", "")
    if not query.strip():
        raise InvalidParam("query is required", params="query")
    session = user(body)
    inputs = body.get("inputs")
    if not isinstance(inputs, dict):
        raise InvalidParam("inputs is required" if inputs is None else "inputs must be an object", params="inputs")
    mode = body.get("response_mode") or "blocking"
    if mode not in ("blocking", "streaming"):
        raise InvalidParam("response_mode must be blocking or streaming", params="response_mode")
    conversation_id = body.get("conversation_id") or ""
    if conversation_id and not (isinstance(conversation_id, str) and UUID_RE.fullmatch(conversation_id)):
        raise InvalidParam(f"{conversation_id} is not a valid uuid.", params="conversation_id")
    c = ctx(request)
    state = c.state
    with state.lock:
        end_user = state.end_user(app.id, session)
        existing = state.conversation(conversation_id.lower(), app.id, end_user.id) if conversation_id else None
        clean = validate_inputs(app.user_input_form, inputs) if existing is None else existing.inputs
        conversation, message = state.start_message(app, end_user, query, clean, existing)
        compose(state, app, message, c.config.chat_min_score)
        task_id = state.ids.uuid()
    delay = c.faults.take("delay", RequestInfo.from_scope(request.scope))
    if delay is not None:
        note_fault(request, delay, "pending")
        if not (delay.headers_first and mode == "streaming"):
            await _first_byte_wait(request, delay)
    if mode == "blocking":
        return JSONResponse(
            {
                "event": "message",
                "task_id": task_id,
                "id": message.id,
                "message_id": message.id,
                "conversation_id": conversation.id,
                "mode": app.mode,
                "answer": message.answer,
                "metadata": render.metadata(state, message),
                "created_at": message.created_at,
            }
        )
    stop = asyncio.Event()
    c.tasks[task_id] = (app.id, session, stop)
    fault = c.faults.take("stream", RequestInfo.from_scope(request.scope))
    if fault is not None and fault.kind == "sse_malformed":
        note_fault(request, fault, "pending")  # the stream still ends well: the outcome stays ok

    def error_base() -> Event:
        return {"conversation_id": conversation.id, "message_id": message.id, "created_at": message.created_at}

    def on_error(sent: list[Event], rule: Rule) -> None:
        note_fault(request, rule, "stream_error")
        with state.lock:
            message.answer = "".join(e.get("answer", "") for e in sent if e["event"] == "message")
            message.status, message.error = "error", rule.message

    first_wait = (delay.seconds or 0.0) if delay is not None and delay.headers_first else 0.0
    events = _stream(
        state, app, conversation, message, task_id, stop, c.config.token_delay, c.config.future_events, first_wait
    )
    body_ = sse_body(
        events, ping_interval=c.config.ping_interval, fault=fault, error_base=error_base, on_error=on_error
    )
    return sse_response(_forget(body_, c.tasks, task_id))


async def _forget(body: AsyncIterator[bytes], tasks: dict[str, Any], task_id: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in body:
            yield chunk
    finally:
        tasks.pop(task_id, None)


async def _stream(
    state: FakeDifyState,
    app: App,
    conversation: Conversation,
    message: Message,
    task_id: str,
    stop: asyncio.Event,
    token_delay: float,
    future: bool = False,
    first_wait: float = 0.0,
) -> AsyncIterator[Event]:
    common = {
        "task_id": task_id,
        "conversation_id": conversation.id,
        "message_id": message.id,
        "created_at": message.created_at,
    }
    if first_wait:
        await asyncio.sleep(first_wait)  # headers are out; pings keep coming meanwhile (see `sse.with_pings`)
    chatflow = app.mode == "advanced-chat"
    run_id = state.ids.uuid() if chatflow else ""
    if chatflow:
        for event in _workflow_start(state, app, run_id, conversation.inputs, message.created_at):
            yield {**event, **common}
    sent = ""
    for n, chunk in enumerate(_chunks(message.answer)):
        if n and token_delay:
            await asyncio.sleep(token_delay)
        if stop.is_set():
            with state.lock:
                message.answer = sent  # Dify keeps what was generated before the stop
            break
        sent += chunk
        event = {"event": "message", **common, "id": message.id, "answer": chunk}
        if chatflow:
            event["from_variable_selector"] = ["llm", "text"]
        if future:
            event["future_field"] = {"added_in": "a later Dify"}
        yield event
    if future:  # clients must skip events they do not know (spec §8c, "version tolerance")
        yield {"event": "future_event", **common, "data": {"added_in": "a later Dify"}}
    yield {
        "event": "message_end",
        **common,
        "id": message.id,
        "metadata": render.metadata(state, message),
        "files": None,
    }
    if chatflow:
        data = {
            "id": run_id,
            "workflow_id": app.workflow_id,
            "status": "succeeded",
            "outputs": {"answer": message.answer},
            "error": None,
            "elapsed_time": 0.05,
            "total_tokens": 0,
            "total_steps": 2,
            "created_at": message.created_at,
            "finished_at": message.created_at,
            "exceptions_count": 0,
            "files": [],
        }
        yield {"event": "workflow_finished", **common, "workflow_run_id": run_id, "data": data}


def _workflow_start(state: FakeDifyState, app: App, run_id: str, inputs: dict[str, Any], now: int) -> list[Event]:
    node = {
        "id": state.ids.uuid(),
        "node_id": "start",
        "node_type": "start",
        "title": "Start",
        "index": 1,
        "predecessor_node_id": None,
        "inputs": inputs,
        "created_at": now,
        "extras": {},
        "iteration_id": None,
        "loop_id": None,
    }
    finished = {
        **{k: v for k, v in node.items() if k != "extras"},
        "process_data": None,
        "outputs": inputs,
        "status": "succeeded",
        "error": None,
        "elapsed_time": 0.01,
        "execution_metadata": None,
        "finished_at": now,
        "files": [],
    }
    started = {"id": run_id, "workflow_id": app.workflow_id, "inputs": inputs, "created_at": now, "reason": "initial"}
    return [
        {"event": "workflow_started", "workflow_run_id": run_id, "data": started},
        {"event": "node_started", "workflow_run_id": run_id, "data": node},
        {"event": "node_finished", "workflow_run_id": run_id, "data": finished},
    ]


async def stop_chat(request: Request) -> Response:
    app = app_auth(request, *CHAT_MODES)
    session = user(await json_body(request))
    task = ctx(request).tasks.get(request.path_params["task_id"])
    if task is not None and task[0] == app.id and task[1] == session:
        task[2].set()
    return JSONResponse({"result": "success"})  # always, as Dify: unknown tasks are ignored


async def list_messages(request: Request) -> Response:
    app = app_auth(request, *CHAT_MODES)
    conversation_id = uuid_arg(request, "conversation_id")
    if conversation_id is None:
        raise InvalidParam("conversation_id is required", params="conversation_id")
    first_id = uuid_arg(request, "first_id")
    limit = int_arg(request, "limit", 20, maximum=100)
    state = ctx(request).state
    with state.lock:
        end_user = state.end_user(app.id, request.query_params.get("user"))
        conversation = state.conversation(conversation_id, app.id, end_user.id)
        rows = state.messages_of(conversation.id)
        if first_id is not None:
            first = next((m for m in rows if m.id == first_id), None)
            if first is None:
                raise NotFound("First Message Not Exists.")
            rows = [m for m in rows if (m.created_at, m.seq) < (first.created_at, first.seq)]
        page = rows[-limit:]  # the newest `limit` before first_id, oldest first within the page
        return JSONResponse({"limit": limit, "has_more": len(rows) > limit, "data": [render.message(m) for m in page]})


async def list_conversations(request: Request) -> Response:
    app = app_auth(request, *CHAT_MODES)
    limit = int_arg(request, "limit", 20, maximum=100)
    last_id = uuid_arg(request, "last_id")
    sort_by = request.query_params.get("sort_by", "-updated_at")
    if sort_by not in SORTS:
        raise InvalidParam(f"sort_by must be one of {', '.join(SORTS)}", params="sort_by")
    field, descending = sort_by.lstrip("-"), sort_by.startswith("-")
    state = ctx(request).state
    with state.lock:
        end_user = state.end_user(app.id, request.query_params.get("user"))
        rows = sorted(state.conversations_of(app.id, end_user.id), key=lambda c: (getattr(c, field), c.seq))
        if descending:
            rows.reverse()
        if last_id is not None:
            last = next((c for c in rows if c.id == last_id), None)
            if last is None:
                raise NotFound("Last Conversation Not Exists.")
            pivot = getattr(last, field)  # strictly beyond, as Dify compares: equal timestamps are skipped
            rows = [c for c in rows if (getattr(c, field) < pivot if descending else getattr(c, field) > pivot)]
        data = [render.conversation(c) for c in rows[:limit]]
        return JSONResponse({"limit": limit, "has_more": len(rows) > limit, "data": data})


def _own_conversation(request: Request, app: App, session: str) -> Conversation:
    state = ctx(request).state
    return state.conversation(request.path_params["conversation_id"], app.id, state.end_user(app.id, session).id)


async def delete_conversation(request: Request) -> Response:
    app = app_auth(request, *CHAT_MODES)
    session = user(await json_body(request))
    state = ctx(request).state
    with state.lock:
        state.delete_conversation(_own_conversation(request, app, session).id)
    return Response(status_code=204)


async def rename_conversation(request: Request) -> Response:
    app = app_auth(request, *CHAT_MODES)
    body = await json_body(request)
    session = user(body)
    auto = body.get("auto_generate") is True
    name = text(body, "name", required=not auto)
    state = ctx(request).state
    with state.lock:
        conversation = _own_conversation(request, app, session)
        if auto:
            first = next(iter(state.messages_of(conversation.id)), None)
            if first is None:
                raise InvalidParam("The conversation has no messages to name it after.")
            name = first.query[:30]
        conversation.name = name
        return JSONResponse(render.conversation(conversation))


async def message_feedback(request: Request) -> Response:
    app = app_auth(request, *CHAT_MODES)
    body = await json_body(request)
    session = user(body)
    rating = body.get("rating")
    if rating not in ("like", "dislike", None):
        raise InvalidParam("rating must be like, dislike or null", params="rating")
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        raise InvalidParam("content must be a string", params="content")
    state = ctx(request).state
    with state.lock:
        end_user = state.end_user(app.id, session)
        message = state.messages.get(request.path_params["message_id"])
        if message is None or message.app_id != app.id or message.end_user_id != end_user.id:
            raise NotFound("Message Not Exists.")
        if rating is None:
            if message.feedback is None:
                raise InvalidParam("Feedback does not exist.")
            message.feedback = None
        else:
            now = state.clock.ts()
            old = message.feedback or {"id": state.ids.uuid(), "created_at": now}
            message.feedback = {**old, "rating": rating, "content": content, "updated_at": now}
    return JSONResponse({"result": "success"})


async def app_feedbacks(request: Request) -> Response:
    app = app_auth(request)
    page, limit = int_arg(request, "page", 1), int_arg(request, "limit", 20, maximum=101)
    state = ctx(request).state
    with state.lock:
        rows = [m for m in state.messages.values() if m.app_id == app.id and m.feedback]
        rows.sort(key=lambda m: (m.feedback["created_at"], m.seq), reverse=True)  # type: ignore[index]
        data = [
            {
                "id": m.feedback["id"],  # type: ignore[index]
                "app_id": app.id,
                "conversation_id": m.conversation_id,
                "message_id": m.id,
                "rating": m.feedback["rating"],  # type: ignore[index]
                "content": m.feedback["content"],  # type: ignore[index]
                "from_source": "user",
                "from_end_user_id": m.end_user_id,
                "from_account_id": None,
                "created_at": iso(m.feedback["created_at"]),  # type: ignore[index]
                "updated_at": iso(m.feedback["updated_at"]),  # type: ignore[index]
            }
            for m in rows[(page - 1) * limit : page * limit]
        ]
    return JSONResponse({"data": data})  # no has_more, no total: page until a short page


def routes() -> list[Route]:
    return [
        route("/v1/chat-messages", chat_messages, "POST"),
        route("/v1/chat-messages/{task_id}/stop", stop_chat, "POST"),
        route("/v1/messages", list_messages, "GET"),
        route("/v1/messages/{message_id:uuid}/feedbacks", message_feedback, "POST"),
        route("/v1/app/feedbacks", app_feedbacks, "GET"),
        route("/v1/conversations", list_conversations, "GET"),
        route("/v1/conversations/{conversation_id:uuid}", delete_conversation, "DELETE"),
        route("/v1/conversations/{conversation_id:uuid}/name", rename_conversation, "POST"),
    ]
