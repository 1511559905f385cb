"""An in-process httpx transport for the fake, sync or async, that keeps the network's failure modes.

`httpx.ASGITransport` buffers the whole response and re-raises app exceptions, so a dropped stream
or a stall would look nothing like the network. Here the body streams chunk by chunk, one chunk in
flight (the app waits for the reader, as over a socket with full buffers); a dropped
connection becomes `httpx.RemoteProtocolError`, and a stall longer than the request's read timeout
becomes `httpx.ReadTimeout` (a real wait on the event loop), as they would over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio.from_thread
import httpx

from tests.fake_dify.faults import ConnectionDropped

_END = object()
GRACE_SECONDS = 1.0


class _Exchange:
    """One request's run of the app: the response start, the body chunks, and the client's hang-up."""

    def __init__(self, app: Any, request: httpx.Request, body: bytes, client: tuple[str, int]) -> None:
        self.request = request
        self.timeout = (request.extensions.get("timeout") or {}).get("read")
        self.start: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.start.add_done_callback(_mark_retrieved)  # a client that timed out never looks at it
        self.chunks: asyncio.Queue[Any] = asyncio.Queue()
        self.hung_up = asyncio.Event()
        self.credit = asyncio.Semaphore(1)  # one chunk in flight: the app cannot run ahead of the reader
        self.complete = False
        self._body = body
        self._body_sent = False
        url = request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "client": client,
            "server": (url.host, url.port or (443 if url.scheme == "https" else 80)),
        }
        self.task = asyncio.ensure_future(self._run(app, scope))

    async def _receive(self) -> dict[str, Any]:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self.hung_up.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.start.set_result(message)
        elif message["type"] == "http.response.body":
            if not self.hung_up.is_set():
                await self.credit.acquire()
            self.chunks.put_nowait(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
                self.chunks.put_nowait(_END)

    async def _run(self, app: Any, scope: dict[str, Any]) -> None:
        try:
            await app(scope, self._receive, self._send)
        except ConnectionDropped:
            pass  # reported below as the network error it stands for
        except BaseException as exc:
            if not self.start.done():
                self.start.set_exception(exc)
            self.chunks.put_nowait(exc)
            raise
        finally:
            if not self.start.done():
                self.start.set_exception(
                    httpx.RemoteProtocolError("Server disconnected without sending a response.", request=self.request)
                )
            self.chunks.put_nowait(_END)

    async def _wait(self, awaitable: Any) -> Any:
        try:
            return await asyncio.wait_for(awaitable, self.timeout)
        except TimeoutError:
            await self.close()
            raise httpx.ReadTimeout("timed out", request=self.request) from None

    async def response(self) -> httpx.Response:
        start = await self._wait(asyncio.shield(self.start))
        headers = [(k, v) for k, v in start.get("headers", [])]
        return httpx.Response(start["status"], headers=headers, stream=_AsyncBody(self), request=self.request)

    async def chunks_iter(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._wait(self.chunks.get())
            self.credit.release()
            if item is _END:
                if not self.complete:
                    raise httpx.RemoteProtocolError(
                        "peer closed connection without sending complete message body", request=self.request
                    )
                return
            if isinstance(item, BaseException):
                raise item
            if item:
                yield item

    async def close(self) -> None:
        """Hang up: the app hears `http.disconnect` and gets a moment to notice before it is cancelled."""
        self.hung_up.set()
        self.credit.release()  # unblock a chunk waiting for a reader that is gone
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(self.task), GRACE_SECONDS)
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


def _mark_retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, exchange: _Exchange) -> None:
        self.exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.exchange.chunks_iter():
            yield chunk

    async def aclose(self) -> None:
        await self.exchange.close()


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, portal: anyio.from_thread.BlockingPortal, stream: _AsyncBody) -> None:
        self.portal, self.stream = portal, stream

    def __iter__(self) -> Iterator[bytes]:
        iterator = self.stream.__aiter__()

        async def following() -> bytes | None:
            try:
                return await iterator.__anext__()
            except StopAsyncIteration:
                return None

        while (chunk := self.portal.call(following)) is not None:
            yield chunk

    def close(self) -> None:
        self.portal.call(self.stream.aclose)


class FakeDifyTransport(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """`httpx.AsyncClient(transport=FakeDifyTransport(fake), base_url="http://dify.local")` (or `httpx.Client`)."""

    def __init__(self, app: Any, client: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        self.app = app
        self.client = client
        self._portal_cm: Any = None
        self._portal: anyio.from_thread.BlockingPortal | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        return await _Exchange(self.app, request, body, self.client).response()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Sync clients: the app runs on a private event loop thread (a blocking portal)."""
        body = request.read()
        if self._portal is None:
            self._portal_cm = anyio.from_thread.start_blocking_portal()
            self._portal = self._portal_cm.__enter__()
        portal = self._portal

        async def run() -> httpx.Response:
            return await _Exchange(self.app, request, body, self.client).response()

        response = portal.call(run)
        assert isinstance(response.stream, _AsyncBody)
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_SyncBody(portal, response.stream), request=request
        )

    def close(self) -> None:
        if self._portal_cm is not None:
            self._portal_cm.__exit__(None, None, None)
            self._portal_cm = self._portal = None

    async def aclose(self) -> None:
        self.close()
