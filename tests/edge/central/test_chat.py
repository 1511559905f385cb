"""The chat client against the fake central, in process (its transport keeps the network's failure modes)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import pytest

from edge.central.chat import CentralChat, CentralFailed, ChatAnswer, ChatQuestion, parse_event
from tests.fake_dify import Central, FakeDify, FakeDifyTransport

REFUND = "Where is my refund?"
REFUND_ANSWER = "Refunds reach your original payment method within 5 to 10 business days."


async def ask(
    fake: FakeDify, key: str, question: ChatQuestion, *, first_byte_s: float = 2.0, idle_s: float = 2.0
) -> tuple[list[str], ChatAnswer, CentralFailed | None]:
    texts: list[str] = []
    answer = ChatAnswer()
    async with httpx.AsyncClient(transport=FakeDifyTransport(fake), base_url="http://dify.test/v1") as http:
        chat = CentralChat(http, key, first_byte_s=first_byte_s, idle_s=idle_s)
        try:
            async for text in chat.stream(question, answer):
                texts.append(text)
        except CentralFailed as exc:
            return texts, answer, exc
    return texts, answer, None


def run(fake: FakeDify, central: Central, query: str = REFUND, **options: Any) -> Any:
    return asyncio.run(ask(fake, central.chat_key, ChatQuestion(query, "kiosk-user"), **options))


def test_relays_the_answer_chunk_by_chunk(fake_dify: FakeDify, fake_central: Central) -> None:
    texts, answer, failure = run(fake_dify, fake_central)
    assert failure is None and answer.finished
    assert len(texts) > 1 and "".join(texts) == REFUND_ANSWER
    assert answer.message_id and answer.conversation_id and answer.first_byte_s is not None


def test_a_follow_up_stays_in_centrals_conversation(fake_dify: FakeDify, fake_central: Central) -> None:
    _, first, _ = run(fake_dify, fake_central)
    question = ChatQuestion("Can I cancel my order?", "kiosk-user", conversation_id=first.conversation_id)
    texts, second, failure = asyncio.run(ask(fake_dify, fake_central.chat_key, question))
    assert failure is None and second.conversation_id == first.conversation_id
    assert second.message_id != first.message_id and "".join(texts).startswith("Yes, until it is dispatched")


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (lambda f: f.rate_limit("/v1/chat-messages"), "status_429"),
        (lambda f: f.unauthorized("/v1/chat-messages"), "status_4xx"),
        (lambda f: f.error("/v1/chat-messages", 500), "status_5xx"),
        (lambda f: f.error("/v1/chat-messages", 502), "status_5xx"),
        (lambda f: f.drop("/v1/chat-messages"), "dropped"),
        (lambda f: f.sse_malformed(after_events=0, how="json"), "malformed"),
        (lambda f: f.sse_malformed(after_events=0, how="shape"), "malformed"),
    ],
)
def test_failures_before_any_text(fake_dify: FakeDify, fake_central: Central, fault: Any, cause: str) -> None:
    fault(fake_dify.faults)
    texts, _, failure = run(fake_dify, fake_central)
    assert texts == [] and failure is not None and failure.cause == cause


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (lambda f: f.sse_error(after_events=3), "error_event"),
        (lambda f: f.sse_drop(after_events=3), "dropped"),
        (lambda f: f.sse_malformed(after_events=3, how="json"), "malformed"),
    ],
)
def test_failures_after_some_text(fake_dify: FakeDify, fake_central: Central, fault: Any, cause: str) -> None:
    fault(fake_dify.faults)
    texts, _, failure = run(fake_dify, fake_central)
    assert texts and "".join(texts) != REFUND_ANSWER
    assert failure is not None and failure.cause == cause


def test_an_unknown_event_is_skipped(fake_dify: FakeDify, fake_central: Central) -> None:
    fake_dify.faults.sse_malformed(after_events=2, how="unknown")
    texts, _, failure = run(fake_dify, fake_central)
    assert failure is None and "".join(texts) == REFUND_ANSWER


@pytest.mark.parametrize("headers_first", [False, True])
def test_no_first_byte_in_time(fake_dify: FakeDify, fake_central: Central, headers_first: bool) -> None:
    """A slow central is given up on at the first-byte deadline, headers or not (pings are no answer)."""
    fake_dify.config.ping_interval = 0.05
    fake_dify.faults.first_byte(5.0, headers_first=headers_first)
    started = time.perf_counter()
    texts, _, failure = run(fake_dify, fake_central, first_byte_s=0.3)
    assert texts == [] and failure is not None and failure.cause == "timeout"
    assert time.perf_counter() - started < 1.5


def test_a_first_byte_inside_the_deadline_is_waited_for(fake_dify: FakeDify, fake_central: Central) -> None:
    fake_dify.faults.first_byte(0.2)
    texts, answer, failure = run(fake_dify, fake_central, first_byte_s=2.0)
    assert failure is None and "".join(texts) == REFUND_ANSWER and answer.first_byte_s >= 0.2


def test_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there

    async def attempt() -> CentralFailed:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1") as http:
            chat = CentralChat(http, "app-key", first_byte_s=2.0, idle_s=2.0)
            with pytest.raises(CentralFailed) as failed:
                async for _ in chat.stream(ChatQuestion("hi", "u"), ChatAnswer()):
                    pass
            return failed.value

    assert asyncio.run(attempt()).cause == "unreachable"


@pytest.mark.parametrize("data", ["{", "[]", '{"event": 3}', '"message"'])
def test_parse_event_refuses_what_is_not_an_event(data: str) -> None:
    with pytest.raises(CentralFailed) as failed:
        parse_event(data)
    assert failed.value.cause == "malformed"
