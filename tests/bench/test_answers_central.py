"""`bench/answers.py --central` (issue #13): central's knowledge file, the `central` expectations, what the
fake central answers for them, the scoring with central counted, and the streaming client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.bench.test_answers_set import CASES, bench
from tests.fake_dify import FakeDifyState, FakeDifyTransport, create_fake_dify
from tests.fake_dify.demo import ChatCentral, seed_chat
from tests.fake_dify.routes_chat import NO_ANSWER, NO_ANSWER_ZH

FACTS = bench.load_facts()
Outcome = bench.Outcome


@pytest.fixture(scope="module")
def central() -> Iterator[tuple[httpx.Client, ChatCentral]]:
    """The fake central as the bench seeds it (one document a fact, the bench's least score)."""
    state = FakeDifyState(seed=13)
    chat = seed_chat(state, [{"title": fact.id, "content": fact.content} for fact in FACTS.values()])
    fake = create_fake_dify(state, chat_min_score=bench.CENTRAL_MIN_SCORE)
    headers = {"Authorization": f"Bearer {chat.key}"}
    with httpx.Client(transport=FakeDifyTransport(fake), base_url="http://dify.test", headers=headers) as client:
        yield client, chat


def test_the_knowledge_file_is_well_formed() -> None:
    assert len(FACTS) >= 24
    for language in bench.LANGUAGES:
        assert sum(fact.language == language for fact in FACTS.values()) >= 12


def test_central_expectations_name_facts_of_their_language() -> None:
    bench.check_central_expectations(CASES, FACTS)
    named = [(case, turn) for case in CASES for turn in case.turns if turn.central]
    assert len(named) >= 20
    for case, turn in named:
        assert FACTS[turn.central].language == case.language, case.id
        assert turn.expect == bench.HANDOFF, "central knows what the box's bank lacks: locally a hand-off"


def test_a_malformed_knowledge_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "facts.jsonl"
    path.write_text('{"id": "a", "language": "en", "content": "x"}\n{"id": "a", "language": "en", "content": "y"}\n')
    with pytest.raises(ValueError, match=":2:"):
        bench.load_facts(path)


def test_the_fake_central_answers_exactly_what_the_expectations_say(central: tuple[httpx.Client, ChatCentral]) -> None:
    """Named facts come back verbatim; the other near-domain and off-topic questions get an honest no-answer."""
    client, _ = central
    wrong = []
    for case in CASES:
        if case.kind not in ("near_domain", "off_topic"):
            continue
        for turn in case.turns:
            body = {"query": turn.query, "user": "bench", "inputs": {}, "response_mode": "blocking"}
            answer = client.post("/v1/chat-messages", json=body).json()["answer"]
            want = (
                FACTS[turn.central].content if turn.central else (NO_ANSWER_ZH if case.language == "zh" else NO_ANSWER)
            )
            if answer != want:
                wrong.append((case.id, turn.query, answer))
    assert wrong == []


def test_the_streaming_client_times_the_first_token(central: tuple[httpx.Client, ChatCentral]) -> None:
    client, _ = central  # the box speaks Dify's chat API too, so the fake stands in for it here
    status, payload, latency_ms = bench.chat_streaming(client, "do plastic bags cost extra?", "bench-x", "")
    assert status == 200 and isinstance(payload, dict)
    assert payload["answer"] == FACTS["plastic-bags"].content and payload["message_id"] and payload["conversation_id"]
    assert 0 <= payload["first_token_ms"] <= latency_ms


TURN = bench.Turn("do plastic bags cost extra?", bench.HANDOFF, (), "plastic-bags")
LOCAL = bench.Turn("where can I park?", "faq:Is there parking at the store?")
BAGS = FACTS["plastic-bags"].content


@pytest.mark.parametrize(
    ("turn", "accepted", "route", "label", "answer", "outcome"),
    [
        (TURN, {"handoff"}, "central", None, BAGS, Outcome.CORRECT),
        (TURN, {"handoff"}, "central", None, f"  {BAGS}\n", Outcome.CORRECT),
        (TURN, {"handoff"}, "central", None, NO_ANSWER, Outcome.WRONG),
        (TURN, {"handoff"}, "handoff", None, "", Outcome.MISSED),  # central knew: a hand-off is a miss now
        (TURN, {"handoff"}, "curated", "store.parking", "", Outcome.WRONG),
        (LOCAL, {"store.parking"}, "central", None, BAGS, Outcome.WRONG),
        (LOCAL, {"store.parking"}, "curated", "store.parking", "", Outcome.CORRECT),
        (bench.Turn("tell me a joke", bench.HANDOFF), {"handoff"}, "declined", None, "", Outcome.HANDED_OFF),
        (bench.Turn("tell me a joke", bench.HANDOFF), {"handoff"}, "central", None, NO_ANSWER, Outcome.WRONG),
    ],
)
def test_score_with_central(
    turn: object, accepted: set[str], route: str, label: str | None, answer: str, outcome: object
) -> None:
    assert bench.score_with_central(turn, frozenset(accepted), route, label, answer, FACTS) is outcome


def test_central_is_opt_in_and_documented() -> None:
    source = Path(bench.__file__).read_text(encoding="utf-8")
    assert '"--central", action="store_true"' in source
    assert '`"central": "<fact id>"`' in (bench.__doc__ or "")
