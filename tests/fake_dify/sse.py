"""Dify's SSE framing (§2.1): `data: {compact json}\\n\\n`, keep-alive `event: ping\\n\\n`, nothing else.

Stream faults act here: after N data events the connection drops, or an `error` event (which has no
`task_id`) ends the stream, or one malformed event slips in. Once the status line is out, a failure can
only be an event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse

from tests.fake_dify.faults import ConnectionDropped, Rule

PING = b"event: ping\n\n"
COMMON = ("task_id", "conversation_id", "message_id", "created_at")
Event = dict[str, Any]


def frame(event: Event) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def malformed(how: str, base: Event) -> bytes:
    """One broken event (see `Faults.sse_malformed`): cut JSON, a `message` of the wrong shape, an unknown event."""
    if how == "json":
        return b'data: {"event":"message","answer":"\xe2\x80\xa6\n\n'  # the closing quote and brace never come
    if how == "shape":
        return frame({"event": "message", "conversation_id": base.get("conversation_id"), "answer": {"text": 42}})
    return frame({"event": "future_event", **base, "data": {"added_in": "a later Dify"}})


async def with_pings(events: AsyncIterator[Event], interval: float) -> AsyncIterator[Event | None]:
    """The events, with None whenever `interval` seconds pass without one (time for a ping)."""
    iterator = events.__aiter__()
    pending: asyncio.Future[Event] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield None
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield event
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


async def sse_body(
    events: AsyncIterator[Event],
    *,
    ping_interval: float,
    fault: Rule | None,
    error_base: Callable[[], Event],
    on_error: Callable[[list[Event], Rule], None],
) -> AsyncIterator[bytes]:
    """Frame the events; a stream fault fires after `fault.after_events` data events (or at the end, if fewer)."""
    sent: list[Event] = []
    slipped = fault is None or fault.kind != "sse_malformed"  # True once a malformed event needs no sending
    stream = with_pings(events, ping_interval)
    try:
        async for event in stream:
            if event is None:
                yield PING
                continue
            if fault is not None and len(sent) >= fault.after_events:
                if fault.kind != "sse_malformed":
                    break
                if not slipped:
                    slipped = True
                    yield malformed(fault.how, {k: event[k] for k in COMMON if k in event})
            sent.append(event)
            yield frame(event)
        else:
            if fault is None:
                return
            if not slipped:
                yield malformed(fault.how, error_base())
            if fault.kind == "sse_malformed":
                return
    finally:
        await stream.aclose()
    assert fault is not None  # a fault fires after N events, or at the end of a shorter stream
    if fault.kind == "sse_drop":
        raise ConnectionDropped(fault.id)
    on_error(sent, fault)
    yield frame(
        {"event": "error", **error_base(), "status": fault.status, "code": fault.code, "message": fault.message}
    )


def sse_response(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
