"""Central's `POST /v1/chat-messages`, streamed, for live escalation: one place that knows its wire format.

Strict on purpose: anything central sends that is not what the spec says (a status, a content type, an
event without its fields, JSON that does not parse) raises `CentralFailed` with a cause, so the caller
falls back to the local answer instead of showing something half-understood. Deadlines are
`asyncio.timeout_at` around single awaits, never across a `yield`, so the shopper's side is never
cancelled by central's clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

TEXT_EVENTS = frozenset({"message", "agent_message"})
CAUSES = (
    "timeout",
    "status_429",
    "status_4xx",
    "status_5xx",
    "error_event",
    "dropped",
    "malformed",
    "unreachable",
    "circuit_open",
)


class CentralFailed(Exception):
    """Central did not answer (fully); `cause` is one of `CAUSES` (a metric label, so a closed set)."""

    def __init__(self, cause: str, detail: str = "") -> None:
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause
        self.detail = detail


@dataclass(frozen=True)
class ChatQuestion:
    query: str
    user: str
    conversation_id: str | None = None  # central's, for a follow-up
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChatAnswer:
    """What the stream told so far: ids (from the first event on) and, at the end, central's metadata."""

    message_id: str | None = None
    conversation_id: str | None = None
    first_byte_s: float | None = None
    finished: bool = False
    # `message_end` cited knowledge (`metadata.retriever_resources`) or an annotation answered
    # (`metadata.annotation_reply`): central answered from what its team curated, not from its model
    # alone (which is where "I don't know" and guesses come from).
    grounded: bool = False


class CentralChat:
    """Streams one answer from central's chat app over an injected `httpx.AsyncClient` (its base URL is
    central's service API, e.g. `https://dify.example.com/v1`)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        key: str,
        *,
        first_byte_s: float,
        idle_s: float,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.http = http
        self.key = key
        self.first_byte_s = first_byte_s
        self.idle_s = idle_s
        self.clock = clock

    async def stream(self, question: ChatQuestion, answer: ChatAnswer) -> AsyncIterator[str]:
        """Yield central's answer text chunk by chunk; fill `answer` as ids arrive. Ends normally only
        after `message_end`; every other ending raises `CentralFailed`."""
        loop = asyncio.get_running_loop()
        started = self.clock()
        deadline = loop.time() + self.first_byte_s
        body: dict[str, Any] = {
            "query": question.query,
            "inputs": question.inputs,
            "response_mode": "streaming",
            "user": question.user,
            "auto_generate_name": False,
        }
        if question.conversation_id:
            body["conversation_id"] = question.conversation_id
        request = self.http.build_request(
            "POST", "chat-messages", json=body, headers={"Authorization": f"Bearer {self.key}"}
        )
        response = await self._open(request, deadline)
        try:
            _check_response(response)
            lines = response.aiter_lines()
            got_text = False
            while True:
                event = await self._next_event(lines, deadline, got_text)
                if event is None:
                    raise CentralFailed("dropped", "the stream ended without message_end")
                kind = event["event"]
                if kind in TEXT_EVENTS:
                    text = _ids(event, answer, "answer")
                    if not text:
                        continue
                    if not got_text:
                        got_text = True
                        answer.first_byte_s = self.clock() - started
                    yield text
                    deadline = loop.time() + self.idle_s
                elif kind == "message_end":
                    _ids(event, answer, None)
                    metadata = event.get("metadata")
                    resources = metadata.get("retriever_resources") if isinstance(metadata, dict) else None
                    annotation = metadata.get("annotation_reply") if isinstance(metadata, dict) else None
                    answer.grounded = bool(isinstance(resources, list) and resources) or isinstance(annotation, dict)
                    if not got_text:
                        raise CentralFailed("malformed", "an answer without text")
                    answer.finished = True
                    return
                elif kind == "error":
                    raise CentralFailed("error_event", str(event.get("code") or event.get("message") or ""))
                elif kind == "message_replace":  # moderation rewrote the answer: what was shown cannot stand
                    raise CentralFailed("malformed", "central replaced its answer")
                # Anything else carries nothing for the shopper: workflow progress, agent thoughts, pings, and
                # events a newer Dify adds (as Dify's own clients do, they are skipped).
        finally:
            await response.aclose()

    async def _open(self, request: httpx.Request, deadline: float) -> httpx.Response:
        try:
            async with asyncio.timeout_at(deadline):
                return await self.http.send(request, stream=True)
        except TimeoutError:
            raise CentralFailed("timeout", "no response headers in time") from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise CentralFailed("unreachable", type(exc).__name__) from None
        except httpx.HTTPError as exc:
            raise CentralFailed("dropped", type(exc).__name__) from None

    async def _next_event(self, lines: AsyncIterator[str], deadline: float, got_text: bool) -> dict[str, Any] | None:
        """The next `data:` event (None at the end of the stream); comments and `event: ping` are skipped.
        Before the first text, pings do not move the deadline: a central that only pings is not answering."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    line = await anext(lines)
            except StopAsyncIteration:
                return None
            except TimeoutError:
                raise CentralFailed("timeout" if not got_text else "dropped", "central went silent") from None
            except httpx.HTTPError as exc:
                raise CentralFailed("dropped", type(exc).__name__) from None
            if got_text:
                deadline = loop.time() + self.idle_s
            if not line.startswith("data:"):
                continue  # blank separators, `event: ping`, comments
            return parse_event(line[5:].strip())


def parse_event(data: str) -> dict[str, Any]:
    """One SSE `data:` payload as a Dify event, or `CentralFailed("malformed")`."""
    try:
        event = json.loads(data)
    except ValueError:
        raise CentralFailed("malformed", "an event that is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise CentralFailed("malformed", "an event without its type")
    return event


def _check_response(response: httpx.Response) -> None:
    status = response.status_code
    if status == 429:
        raise CentralFailed("status_429")
    if 400 <= status < 500:
        raise CentralFailed("status_4xx", str(status))
    if status >= 500:
        raise CentralFailed("status_5xx", str(status))
    if status != 200:  # a redirect (not followed) or another 2xx: not the stream the spec promises
        raise CentralFailed("malformed", f"status {status}")
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        raise CentralFailed("malformed", "not an event stream")


def _ids(event: dict[str, Any], answer: ChatAnswer, text_field: str | None) -> str:
    """Check the event's ids (they must not change within one answer) and return its text."""
    message_id, conversation_id = event.get("message_id") or event.get("id"), event.get("conversation_id")
    if not isinstance(message_id, str) or not isinstance(conversation_id, str) or not message_id:
        raise CentralFailed("malformed", f"{event['event']} without its ids")
    if answer.message_id not in (None, message_id) or answer.conversation_id not in (None, conversation_id):
        raise CentralFailed("malformed", "the ids changed within one answer")
    answer.message_id, answer.conversation_id = message_id, conversation_id
    if text_field is None:
        return ""
    text = event.get(text_field)
    if not isinstance(text, str):
        raise CentralFailed("malformed", f"{event['event']} without text")
    return text
