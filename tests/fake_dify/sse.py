"""Dify's SSE framing (§2.1): `data: {compact json}\\n\\n`, keep-alive `event: ping\\n\\n`, nothing else.

Stream faults act here: after N data events the connection drops, or an `error` event (which has no
`task_id`) ends the stream. Once the status line is out, a failure can only be an event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse

from tests.fake_dify.faults import ConnectionDropped, Rule

PING = b"event: ping\n\n"
Event = dict[str, Any]


def frame(event: Event) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


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
    stream = with_pings(events, ping_interval)
    try:
        async for event in stream:
            if event is None:
                yield PING
                continue
            if fault is not None and len(sent) >= fault.after_events:
                break
            sent.append(event)
            yield frame(event)
        else:
            if fault is None:
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
