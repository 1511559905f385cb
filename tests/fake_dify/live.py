"""`LiveFakeDify`: the fake on a real uvicorn, on a free loopback port, in a background thread.

For end-to-end tests (the sync agent as a real process, official clients) and whenever a fault must
be real TCP: a reset connection, a response that never comes.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from tests.fake_dify.app import FakeDify, create_fake_dify
from tests.fake_dify.faults import Faults
from tests.fake_dify.journal import Journal
from tests.fake_dify.state import FakeDifyState


def uvicorn_config(app: FakeDify, host: str = "127.0.0.1", port: int = 0, **options: Any) -> uvicorn.Config:
    """The fake's server settings: its own `Date` header (clock skew), no access log, quick shutdown."""
    defaults: dict[str, Any] = {
        "log_config": None,
        "access_log": False,
        "date_header": False,
        "server_header": False,
        "lifespan": "off",
        "http": "h11",
        "loop": "asyncio",
        "timeout_graceful_shutdown": 1,
    }
    return uvicorn.Config(app, host=host, port=port, **(defaults | options))


class LiveFakeDify:
    """`with LiveFakeDify(state) as fake: httpx.get(fake.url + "/v1/")` — `state`, `faults`, `journal` stay live.

    `stop()` then `start()` again is central going down and coming back: connections are refused in
    between, and it returns on the same port with the same state, faults and journal. `port=` picks one.
    """

    def __init__(
        self,
        state: FakeDifyState | None = None,
        faults: Faults | None = None,
        *,
        journal: Journal | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        **settings: Any,
    ) -> None:
        self.app = create_fake_dify(state, faults, journal=journal, **settings)
        self.host = host
        self.port = port
        self._new_server()

    def _new_server(self) -> None:
        self.server = uvicorn.Server(uvicorn_config(self.app, self.host, self.port))
        self.thread = threading.Thread(target=self.server.run, name="live-fake-dify", daemon=True)

    @property
    def state(self) -> FakeDifyState:
        return self.app.state

    @property
    def faults(self) -> Faults:
        return self.app.faults

    @property
    def journal(self) -> Journal:
        return self.app.journal

    @property
    def url(self) -> str:
        """The server root; Dify's API base URL is `api_url`."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + "/v1"

    def start(self, timeout: float = 30.0) -> LiveFakeDify:
        if self.thread.ident is not None:  # started before: a new server on the same port
            self._new_server()
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the fake Dify's uvicorn did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and self.server.started and not self.server.should_exit

    def __enter__(self) -> LiveFakeDify:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
