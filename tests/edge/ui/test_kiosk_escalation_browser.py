"""The kiosk page showing an escalated answer (issue #13): central's text streams in, piece by piece, and
is shown as text (markup in it is never parsed); the page itself talks to the box only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.store.db import open_database
from edge.store.sync_state import CENTRAL, SyncState
from tests.edge.api.conftest import LiveServer, make_settings
from tests.edge.ui.test_kiosk_browser import ARTIFACTS, PARTIALS, Kiosk, browser  # noqa: F401  (fixture)
from tests.fake_dify import FakeDifyState, LiveFakeDify, seed_demo

pytestmark = pytest.mark.slow

QUESTION = "Can I bring my bicycle inside?"
ANSWER = "Yes: folded bicycles are welcome, <b>others</b> go in the rack <img src=x onerror=alert(1)> by the door."


@pytest.fixture(scope="module")
def central() -> Iterator[tuple[LiveFakeDify, str]]:
    """The fake central on loopback, streaming a word every 0.15 s, and its chat app's key."""
    state = FakeDifyState(seed=3)
    ids = seed_demo(state)
    state.apps[ids.chat_app_id].answers[QUESTION] = ANSWER
    # The answer cites central's knowledge (`retriever_resources`), so it stands alone in place of the
    # hand-off the box would have given (an uncited one is followed by the hand-off: test_escalation.py).
    bikes = "Can I bring my bicycle inside the store? Folded bicycles yes; others go in the rack by the door."
    state.knowledge.add_document(ids.dataset_id, "Bicycles", segments=[bikes])
    with LiveFakeDify(state, token_delay=0.15) as server:
        yield server, ids.chat_key


@pytest.fixture(scope="module")
def server(
    api_bundle: Path, tmp_path_factory: pytest.TempPathFactory, central: tuple[LiveFakeDify, str]
) -> Iterator[LiveServer]:
    fake, chat_key = central
    folder = tmp_path_factory.mktemp("kiosk-escalation")
    answers = folder / "answers.csv"
    answers.write_text("label,answer\n")
    settings = make_settings(
        api_bundle,
        folder / "data",
        curated_answers_csv=answers,
        knowledge_seed_csvs=[],
        llm_floor=1.0,
        escalate=True,
        central_url=fake.api_url,
        central_chat_key=chat_key,
    )
    with LiveServer(settings) as live:
        db = open_database(settings.database_path)
        try:
            SyncState(db).record(CENTRAL, "online", success=True)  # what `edge sync` writes
        finally:
            db.close()
        yield live


def test_an_escalated_answer_streams_in_as_text(browser: Any, server: LiveServer) -> None:  # noqa: F811
    artifacts = ARTIFACTS.parent / "kiosk-escalation"
    artifacts.mkdir(parents=True, exist_ok=True)
    kiosk = Kiosk(browser, server, artifacts, clock=False)
    try:
        page = kiosk.page
        kiosk.open()
        page.evaluate(PARTIALS)
        page.get_by_label("Your question", exact=True).fill(QUESTION)
        page.get_by_label("Your question", exact=True).press("Enter")
        page.wait_for_selector("#messages .turn.answer[data-state=streaming]")
        kiosk.shot("01-escalated-streaming")
        kiosk.wait_answers_done(1)
        kiosk.shot("02-escalated-answer")
        answer = kiosk.answers().nth(0)
        assert answer.get_attribute("data-route") == "central"
        assert answer.locator(".text").text_content() == ANSWER  # markup shown as text
        assert answer.locator("b, img").count() == 0
        partials = [text for text in page.evaluate("window.partials") if text]
        assert len(set(partials)) >= 3, f"the answer did not grow on screen: {partials}"
        assert all(ANSWER.startswith(text) for text in partials)
        assert kiosk.foreign_requests() == []  # the box asked central; the page never did
    finally:
        kiosk.close()
