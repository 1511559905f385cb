"""Fixtures: a seeded central (the demo's), the fake over it, and an httpx client through the fake's transport."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fake_dify import Central, FakeDify, FakeDifyState, FakeDifyTransport
from tests.fake_dify.fixtures import fake_central, fake_dify, fake_state, live_fake_dify  # noqa: F401  (fixtures)
from tests.fake_dify.spec import DifySpec, dify_spec

BASE = "http://dify.test"


@pytest.fixture
def state(fake_state: FakeDifyState) -> FakeDifyState:  # noqa: F811
    return fake_state


@pytest.fixture
def central(fake_central: Central) -> Central:  # noqa: F811
    return fake_central


@pytest.fixture
def fake(fake_dify: FakeDify) -> FakeDify:  # noqa: F811
    return fake_dify


@pytest.fixture
def client(fake: FakeDify) -> Iterator[httpx.Client]:
    with httpx.Client(transport=FakeDifyTransport(fake), base_url=BASE, timeout=5) as http:
        yield http


@pytest.fixture(scope="session")
def spec() -> DifySpec:
    return dify_spec()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
