"""`create_fake_dify(state, faults)`: Dify's Service API, behind a layer that journals and misbehaves.

The outer layer sees every request first: it records it in the journal, applies "before" faults
(nothing committed), runs Dify's routes, then applies "after" faults (committed, response lost) and
hooks (central edited between two requests). Dropping a connection needs the socket: under uvicorn
the layer aborts the transport; in-process it raises `ConnectionDropped`, which `FakeDifyTransport`
turns into the network error an httpx client would see.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from tests.fake_dify import control, routes_apps, routes_chat, routes_knowledge
from tests.fake_dify.errors import INTERNAL, NO_SUCH_URL, DifyError, MethodNotAllowed, NotFound
from tests.fake_dify.faults import ConnectionDropped, Faults, RequestInfo, Rule
from tests.fake_dify.journal import Journal, JournalEntry, body_for_journal
from tests.fake_dify.mutations import apply_mutation
from tests.fake_dify.state import FakeDifyState
from tests.fake_dify.wire import ENTRY_KEY, Ctx

log = logging.getLogger("fake_dify")
PROXY_PAGE = "<html>\r\n<head><title>{0} {1}</title></head>\r\n<body>\r\n<center><h1>{0} {1}</h1></center>\r\n"
PROXY_PAGE += "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"


@dataclass
class FakeDifyConfig:
    """How the fake behaves, as opposed to what it knows (that is `FakeDifyState`)."""

    ping_interval: float = 10.0  # seconds without an event before an `event: ping` keep-alive
    token_delay: float = 0.0  # seconds between streamed answer chunks
    stall_seconds: float = 30.0  # default length of a stall fault (it also ends when the client leaves)
    future_events: bool = False  # streams also carry an unknown event and an unknown field, as newer Difys do
    run_seconds: float = 0.0  # a workflow run stays `running` this long; a blocking run answers when it ends
    run_list_delay: float = 0.0  # a new workflow run is missing from `GET /workflows/logs` this long
    logs_user_filter: bool = True  # False: a Dify before `created_by_end_user_session_id`/`created_by_account`
    chat_min_score: float = 0.0  # least share of a chat query's terms a segment must hold to answer it
    control_loopback_only: bool = True


class FakeDify:
    """The ASGI app. `state`, `faults` and `journal` are public: tests script and inspect through them."""

    def __init__(self, state: FakeDifyState, faults: Faults, journal: Journal, config: FakeDifyConfig) -> None:
        self.state, self.faults, self.journal, self.config = state, faults, journal, config
        self.api = Starlette(
            routes=[*routes_apps.routes(), *routes_chat.routes(), *routes_knowledge.routes()],
            exception_handlers={DifyError: _dify_error, HTTPException: _http_error, Exception: _crash},
        )
        self.api.router.redirect_slashes = False
        self.api.state.ctx = Ctx(state, faults, config)
        self.control = control.build(self)

    def configure(self, **settings: Any) -> None:
        """Change `FakeDifyConfig` fields while the fake serves (unknown names: TypeError; wrong types: ValueError)."""
        for name, value in settings.items():
            if not hasattr(self.config, name):
                raise TypeError(f"unknown fake Dify setting {name!r}")
            current = getattr(self.config, name)
            if isinstance(current, bool) != isinstance(value, bool) or not isinstance(value, type(current) | int):
                raise ValueError(f"{name} must be a {type(current).__name__}")
            setattr(self.config, name, type(current)(value))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.api(scope, receive, send)
        elif scope["type"] != "http":
            return
        elif scope["path"] == "/_fake" or scope["path"].startswith("/_fake/"):
            if self.config.control_loopback_only and not _loopback(scope):
                await NotFound(NO_SUCH_URL).response()(scope, receive, send)
            else:
                await self.control(scope, receive, send)
        else:
            await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, raw_send: Send) -> None:
        body = await _read_body(receive)
        headers = Headers(scope=scope)
        request = RequestInfo.from_scope(scope)
        entry = self.journal.begin(
            at=self.state.clock.now(),
            method=request.method,
            path=request.path,
            query=request.query,
            body=body_for_journal(body, headers.get("content-type", "")),
            key_id=self._key_id(headers.get("authorization", "")),
        )
        scope = {**scope, ENTRY_KEY: entry}
        replay, send = _replay(body, receive), self._dated(raw_send)
        try:
            rule = self.faults.take("before", request)
            if rule is not None:
                entry.fault = rule.id
                if rule.kind != "stall":
                    await self._misbehave(rule, scope, receive, send, raw_send, entry)
                    return
                if not await self._stall(rule, receive, entry):
                    return  # the client gave up waiting: nothing more to send
            after = self.faults.take("after", request)
            if after is None:
                await self._handle(scope, replay, send, raw_send, entry)
            else:
                await self._commit_then(after, scope, replay, receive, send, raw_send, entry)
        except asyncio.CancelledError:
            entry.outcome = "cancelled" if entry.outcome == "pending" else entry.outcome
            raise
        finally:
            self._run_hooks(request, entry)
            if entry.outcome == "pending":
                entry.outcome = "ok"

    async def _handle(self, scope: Scope, receive: Receive, send: Send, raw_send: Send, entry: JournalEntry) -> None:
        async def tracking(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            await send(message)

        try:
            await self.api(scope, receive, tracking)
        except Exception as exc:
            dropped = _dropped(exc)
            if dropped is None:
                entry.outcome = "crashed"
                log.exception("fake Dify crashed on %s %s", scope["method"], scope["path"])
                return
            entry.fault = dropped.args[0] if dropped.args else entry.fault
            await self._drop(raw_send, entry, started=entry.status is not None)

    async def _commit_then(
        self,
        rule: Rule,
        scope: Scope,
        replay: Receive,
        receive: Receive,
        send: Send,
        raw_send: Send,
        entry: JournalEntry,
    ) -> None:
        """Run the request for real (committing whatever it writes), then lose or spoil the answer."""
        entry.fault = rule.id
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)

        try:
            await self.api(scope, replay, capture)
        except Exception as exc:  # a stream fault as well: moot, the answer is lost anyway
            if _dropped(exc) is None:
                log.exception("fake Dify crashed on %s %s", scope["method"], scope["path"])
        entry.committed_status = next((m["status"] for m in captured if m["type"] == "http.response.start"), None)
        if rule.kind == "reshape":  # the answer arrives, but its body breaks the contract
            for message in rule.reshape_messages(captured, RequestInfo.from_scope(scope).page):
                await send(message)
            entry.status = entry.committed_status
            return
        if rule.kind == "stall" and await self._stall(rule, receive, entry):
            for message in captured:  # a slow answer that still arrives, if the client waited
                await send(message)
            entry.status = entry.committed_status
            return
        if rule.kind != "stall":
            await self._misbehave(rule, scope, receive, send, raw_send, entry)

    async def _misbehave(
        self, rule: Rule, scope: Scope, receive: Receive, send: Send, raw_send: Send, entry: JournalEntry
    ) -> None:
        if rule.kind == "drop":
            await self._drop(raw_send, entry, started=False)
            return
        error = rule.error()
        if error is None:
            phrase = HTTPStatus(rule.status).phrase
            response: Response = HTMLResponse(PROXY_PAGE.format(rule.status, phrase), status_code=rule.status)
        else:
            response = error.response()
        entry.status = rule.status
        await response(scope, receive, send)

    async def _stall(self, rule: Rule, receive: Receive, entry: JournalEntry) -> bool:
        """Wait `seconds`; False if the client hung up first (then nothing more is sent)."""
        seconds = rule.seconds if rule.seconds is not None else self.config.stall_seconds
        with anyio.move_on_after(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass
            entry.outcome = "stalled"
            return False
        return True

    async def _drop(self, raw_send: Send, entry: JournalEntry, *, started: bool) -> None:
        entry.outcome = "stream_dropped" if started else "dropped"
        entry.status = entry.status if started else None
        cycle = getattr(raw_send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None:  # in-process: let the transport raise the client's network error
            raise ConnectionDropped(entry.fault)
        transport.abort()  # an RST, not a polite close: what a crashed proxy or a cut cable looks like
        for _ in range(10):
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0)

    def _run_hooks(self, request: RequestInfo, entry: JournalEntry) -> None:
        for rule in self.faults.hooks(request):
            try:
                if rule.action is not None:
                    rule.action(self.state)
                else:
                    apply_mutation(self.state, rule.mutation or {})
            except Exception:
                log.exception("fault %s: the hook after request %s failed", rule.id, entry.seq)

    def _key_id(self, authorization: str) -> str | None:
        parts = authorization.split(None, 1)
        key = self.state.keys.get(parts[1]) if len(parts) == 2 else None
        return key.id if key is not None else None

    def _dated(self, send: Send) -> Send:
        """A `Date` header from the fake's clock, so clock skew shows where clients look for it."""

        async def dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"date" for name, _ in headers):
                    headers.append((b"date", formatdate(self.state.clock.now(), usegmt=True).encode()))
                message = {**message, "headers": headers}
            await send(message)

        return dated


def create_fake_dify(
    state: FakeDifyState | None = None,
    faults: Faults | None = None,
    *,
    journal: Journal | None = None,
    config: FakeDifyConfig | None = None,
    **settings: Any,
) -> FakeDify:
    """A fake Dify over `state` (a fresh, seeded one by default); `settings` override `FakeDifyConfig` fields."""
    config = config or FakeDifyConfig()
    for name, value in settings.items():
        if not hasattr(config, name):
            raise TypeError(f"unknown fake Dify setting {name!r}")
        setattr(config, name, value)
    return FakeDify(state or FakeDifyState(), faults or Faults(), journal or Journal(), config)


# --- helpers --------------------------------------------------------------------------------------


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The already-read body once, then the real channel (which reports the disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _loopback(scope: Scope) -> bool:
    client = scope.get("client")
    return client is None or client[0] in ("::1", "localhost", "testclient") or client[0].startswith("127.")


def _dropped(exc: BaseException) -> ConnectionDropped | None:
    if isinstance(exc, ConnectionDropped):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _dropped(inner)
            if found is not None:
                return found
    return None


async def _dify_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DifyError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return MethodNotAllowed("The method is not allowed for the requested URL.").response()
    if exc.status_code == 404:
        return NotFound(NO_SUCH_URL).response()
    return DifyError(str(exc.detail), status=exc.status_code).response()


async def _crash(request: Request, exc: Exception) -> Response:
    return JSONResponse({"code": "internal_server_error", "message": INTERNAL, "status": 500}, status_code=500)
