"""Fixtures for other test packages (the sync agent's): import the ones you need into your conftest.

    from tests.fake_dify.fixtures import fake_central, fake_dify, fake_dify_transport, fake_state  # noqa: F401

`fake_dify_transport` goes to `httpx.Client(transport=...)` or to the agent's client; `live_fake_dify`
is the same central on a real loopback socket (`live_fake_dify.api_url`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_dify.app import FakeDify, create_fake_dify
from tests.fake_dify.demo import Central, seed_demo
from tests.fake_dify.live import LiveFakeDify
from tests.fake_dify.state import FakeDifyState
from tests.fake_dify.transport import FakeDifyTransport


@pytest.fixture
def fake_state() -> FakeDifyState:
    """Seeded (ids and keys repeat run to run), with a fixed clock at 2026-01-01T00:00:00Z."""
    return FakeDifyState(seed=0)


@pytest.fixture
def fake_central(fake_state: FakeDifyState) -> Central:
    """The demo central: a chat app, an ingest workflow app, one dataset, their keys."""
    return seed_demo(fake_state)


@pytest.fixture
def fake_dify(fake_state: FakeDifyState, fake_central: Central) -> FakeDify:
    return create_fake_dify(fake_state)


@pytest.fixture
def fake_dify_transport(fake_dify: FakeDify) -> Iterator[FakeDifyTransport]:
    transport = FakeDifyTransport(fake_dify)
    yield transport
    transport.close()


@pytest.fixture
def live_fake_dify(fake_state: FakeDifyState, fake_central: Central) -> Iterator[LiveFakeDify]:
    with LiveFakeDify(fake_state) as server:
        yield server
