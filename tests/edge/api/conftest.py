"""A real app on a small real bundle: the session's INT8 intent model and the packaged SmolLM2 GGUF."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edge.app import create_app
from edge.settings import Settings
from tests.conftest import RETAIL

STORE_FAQ = RETAIL.parent / "knowledge" / "store_faq.csv"
KEY = "app-test-key-0123456789abcd"
AUTH = {"Authorization": f"Bearer {KEY}"}


def make_settings(bundle: Path, data_dir: Path, **overrides: object) -> Settings:
    values = dict(
        bundle_dir=bundle,
        data_dir=data_dir,
        app_keys=[KEY],
        curated_answers_csv=RETAIL / "intent_responses.csv",
        knowledge_seed_csvs=[STORE_FAQ],
        llm_max_tokens=24,
        rate_limit_per_s=1000.0,
        rate_limit_burst=1000,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(api_bundle: Path, tmp_path: Path) -> Settings:
    return make_settings(api_bundle, tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


class LiveServer:
    """A real uvicorn on loopback, in a thread, for the official client libraries."""

    def __init__(self, settings: Settings) -> None:
        import socket

        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_config=None, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as server:
        yield server
