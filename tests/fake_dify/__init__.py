"""A fake central Dify for the sync agent's tests and for demos (issue #6).

It follows the wire contract (`specs/dify-api.md`, Dify's OpenAPI document) and adds what a test
needs: deterministic seeded state, a request journal, scripted faults, and edits of central's state
between two requests. In-process with `FakeDifyTransport`, or on a real socket with `LiveFakeDify`.

    state = FakeDifyState(seed=0)
    central = seed_demo(state)
    fake = create_fake_dify(state)
    fake.faults.commit_then("/v1/workflows/run", 502)
    async with httpx.AsyncClient(transport=FakeDifyTransport(fake), base_url="http://dify.test/v1") as client:
        ...
    assert fake.journal.count("POST", "/v1/workflows/run") == 2
"""

from tests.fake_dify.app import FakeDify, FakeDifyConfig, create_fake_dify
from tests.fake_dify.demo import Central, seed_demo
from tests.fake_dify.faults import ConnectionDropped, Faults, Rule
from tests.fake_dify.journal import Journal, JournalEntry
from tests.fake_dify.live import LiveFakeDify
from tests.fake_dify.state import Clock, FakeDifyState
from tests.fake_dify.transport import FakeDifyTransport

__all__ = [
    "Central",
    "Clock",
    "ConnectionDropped",
    "FakeDify",
    "FakeDifyConfig",
    "FakeDifyState",
    "FakeDifyTransport",
    "Faults",
    "Journal",
    "JournalEntry",
    "LiveFakeDify",
    "Rule",
    "create_fake_dify",
    "seed_demo",
]
