"""Chinese and English end to end through a real uvicorn: the multilingual encoder, the bilingual bank,
answers in the shopper's language, abstention, follow-ups, and the official client libraries."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.language import han_share
from edge.settings import Settings
from tests.conftest import ANSWERS
from tests.edge.api.conftest import AUTH, KEY, LiveServer, make_settings

pytestmark = pytest.mark.slow


def bank(language: str) -> dict[str, str]:
    with (ANSWERS / "answers.csv").open(encoding="utf-8") as handle:
        return {row["label"]: row["answer"] for row in csv.DictReader(handle) if row["language"] == language}


@pytest.fixture(scope="module")
def settings(multilingual_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        multilingual_bundle,
        tmp_path_factory.mktemp("bilingual") / "data",
        curated_answers_csv=ANSWERS / "answers.csv",
        knowledge_seed_csvs=[],
        store_variables={
            "Store Name": {"en": "Harbour Mall", "zh": "海港城店"},
            "Opening Hours": {"en": "from 10:00 to 22:00", "zh": "10:00至22:00"},
        },
    )


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as live:
        yield live


def ask(server: LiveServer, query: str, conversation_id: str = "", user: str = "shopper") -> dict:
    response = httpx.post(
        f"{server.url}/v1/chat-messages",
        headers=AUTH,
        json={
            "query": query,
            "user": user,
            "inputs": {},
            "response_mode": "blocking",
            "conversation_id": conversation_id,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("query", "label"),
    [
        ("洗手间在哪里？", "store.toilets"),
        ("你们这里可以停车吗", "store.parking"),
        ("我要取消订单", "order.cancel_order"),
        ("可以用手机支付吗", "payment.check_payment_methods"),
    ],
)
def test_a_chinese_question_is_answered_verbatim_in_chinese(server: LiveServer, query: str, label: str) -> None:
    body = ask(server, query)
    meta = body["metadata"]
    assert meta["route"] == "curated" and meta["intent"] == label
    assert han_share(body["answer"]) > 0.8, body["answer"]
    assert "{{" not in body["answer"]


def test_store_variables_are_filled_in_the_shoppers_language(server: LiveServer) -> None:
    chinese = ask(server, "你们几点开门？")
    assert chinese["metadata"]["intent"] == "store.opening_hours"
    assert "海港城店" in chinese["answer"] and "10:00至22:00" in chinese["answer"]
    english = ask(server, "what time do you open?")
    assert english["metadata"]["intent"] == "store.opening_hours"
    assert "Harbour Mall" in english["answer"] and "from 10:00 to 22:00" in english["answer"]
    assert han_share(english["answer"]) == 0


def test_english_gets_the_english_answer_of_the_same_item(server: LiveServer) -> None:
    body = ask(server, "where are the toilets please")
    assert body["metadata"]["intent"] == "store.toilets"
    assert body["answer"] == bank("en")["store.toilets"]


@pytest.mark.parametrize("query", ["帮我写一首关于月亮的诗", "明天北京天气怎么样", "这台电视多少钱？"])
def test_off_topic_and_unanswerable_chinese_questions_are_not_answered(server: LiveServer, query: str) -> None:
    body = ask(server, query)
    assert body["metadata"]["route"] in {"handoff", "declined"}, body
    assert han_share(body["answer"]) > 0.8  # the hand-off or decline is in Chinese too


@pytest.mark.parametrize("query", ["write me a poem about the sea", "who won the football last night"])
def test_off_topic_english_is_declined_or_handed_off(server: LiveServer, query: str) -> None:
    assert ask(server, query)["metadata"]["route"] in {"handoff", "declined"}


def test_a_follow_up_is_read_with_the_question_before_it(server: LiveServer) -> None:
    first = ask(server, "is there parking?", user="driver")
    assert first["metadata"]["intent"] == "store.parking"
    follow = ask(server, "how long is it free for?", first["conversation_id"], user="driver")
    assert follow["metadata"]["route"] == "curated" and follow["metadata"]["intent"] == "store.parking"
    assert "two hours" in follow["answer"]


def test_the_staff_button_hands_off_in_the_shoppers_language(server: LiveServer, settings: Settings) -> None:
    response = httpx.post(
        f"{server.url}/v1/chat-messages",
        headers=AUTH,
        json={"query": "请叫一位店员", "user": "u", "inputs": {"handoff": True}, "response_mode": "blocking"},
        timeout=30,
    )
    assert response.json()["answer"] == settings.handoff_message["zh"]


def test_parameters_follow_the_page_language(server: LiveServer, settings: Settings) -> None:
    zh = httpx.get(f"{server.url}/v1/parameters", headers=AUTH, params={"language": "zh"}).json()
    assert zh["opening_statement"] == settings.opening_statement["zh"]
    assert zh["suggested_questions"] == settings.suggested_questions["zh"]
    default = httpx.get(f"{server.url}/v1/parameters", headers=AUTH).json()
    assert default["opening_statement"] == settings.opening_statement["en"]


def test_official_clients_get_chinese_answers(server: LiveServer) -> None:
    import openai
    from dify_client import ChatClient

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY)
    completion = client.chat.completions.create(
        model="kiosk-assistant", messages=[{"role": "user", "content": "厕所在哪"}]
    )
    assert han_share(completion.choices[0].message.content or "") > 0.8
    dify = ChatClient(KEY)
    dify.base_url = f"{server.url}/v1"
    response = dify.create_chat_message({}, "我的退款什么时候到账？", "dify-user", response_mode="streaming")
    events = [json.loads(line[5:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data:")]
    text = "".join(event["answer"] for event in events if event["event"] == "message")
    assert han_share(text) > 0.8, text


def test_metrics_count_answers_by_language(server: LiveServer) -> None:
    ask(server, "退货需要小票吗")
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'language="zh"' in metrics and "kiosk_generation_checks_total" in metrics
