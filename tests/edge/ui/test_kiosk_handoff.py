"""A kiosk's hand-offs on the real app: the turn opens one, the page reads its own, a reset abandons it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edge.api.kiosk_auth import COOKIE, USER_PREFIX
from edge.app import create_app
from edge.settings import Settings
from edge.store.handoffs import ABANDONED, ABSTENTION, BUTTON, CLAIMED, OPEN, Handoffs
from tests.edge.api.conftest import AUTH, make_settings

pytestmark = pytest.mark.slow
ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture(scope="module")
def app_client(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # A floor of 1.0: anything uncurated hands off at once, so no test here waits on the LLM.
    settings: Settings = make_settings(
        api_bundle, tmp_path_factory.mktemp("kiosk-handoff") / "data", llm_floor=1.0, kiosk_id="box-7"
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def kiosk(app_client: TestClient) -> Iterator[TestClient]:
    app_client.cookies.clear()
    assert app_client.get("/").status_code == 200
    yield app_client
    app_client.cookies.clear()


def handoffs(client: TestClient) -> Handoffs:
    return client.app.state.handoffs  # type: ignore[attr-defined]


def user_of(client: TestClient) -> str:
    return USER_PREFIX + client.cookies[COOKIE].split(".")[0]


def call_staff(client: TestClient, query: str = "Please call a staff member", **inputs: object) -> dict:
    response = client.post(
        "/v1/chat-messages",
        headers=ORIGIN,
        json={"query": query, "user": "kiosk", "response_mode": "blocking", "inputs": {"handoff": True, **inputs}},
    )
    assert response.status_code == 200, response.text
    return response.json()


def status(client: TestClient) -> dict:
    response = client.get("/kiosk/handoff")
    assert response.status_code == 200, response.text
    return response.json()


def test_the_staff_button_opens_a_hand_off_the_page_can_follow(kiosk: TestClient) -> None:
    assert status(kiosk) == {"status": "none"}
    answer = call_staff(kiosk, "请帮我叫一位店员", kiosk_id="entrance")
    seen = status(kiosk)
    assert seen["status"] == OPEN and seen["conversation_id"] == answer["conversation_id"]
    item = handoffs(kiosk).get(seen["id"])
    assert (item["reason"], item["language"], item["kiosk_id"]) == (BUTTON, "zh", "entrance")
    assert item["user"] == user_of(kiosk) and item["message_id"] == answer["message_id"]
    handoffs(kiosk).claim(seen["id"], "Li")
    assert status(kiosk)["status"] == CLAIMED and status(kiosk)["claimed_by"] == "Li"


UNSURE = {
    "en": ["Does the warranty on my washing machine cover damage from a power surge?", "Can my dog come in?"],
    "zh": ["我的洗衣机被雷击坏了，保修管吗？", "上个月买的冰箱能不能延长保修到五年？"],
}


def test_a_question_the_box_cannot_answer_calls_staff_in_the_shoppers_language(app_client: TestClient) -> None:
    opened = 0
    for language, questions in UNSURE.items():
        for question in questions:
            app_client.cookies.clear()
            app_client.get("/")  # each question from a new shopper
            answer = app_client.post(
                "/v1/chat-messages", headers=ORIGIN, json={"query": question, "user": "k", "response_mode": "blocking"}
            )
            assert answer.status_code == 200
            listing = {"conversation_id": answer.json()["conversation_id"], "user": "k"}
            [turn] = app_client.get("/v1/messages", headers=ORIGIN, params=listing).json()["data"]
            seen = status(app_client)
            if turn["route"] != "handoff":  # answered, or declined as off-topic: nobody is called for that
                assert seen == {"status": "none"}, question
                continue
            opened += 1
            item = handoffs(app_client).get(seen["id"])
            assert (item["reason"], item["language"], item["kiosk_id"]) == (ABSTENTION, language, "box-7"), question
            assert item["question"] == turn["query"] and item["detail"] != "button"
    app_client.cookies.clear()
    assert opened >= 1  # the floor of 1.0 hands off every question without a curated answer


def test_pressing_again_counts_on_the_same_hand_off(kiosk: TestClient) -> None:
    first = call_staff(kiosk)
    second = kiosk.post(
        "/v1/chat-messages",
        headers=ORIGIN,
        json={"query": "Please call a staff member", "user": "k", "response_mode": "blocking",
              "conversation_id": first["conversation_id"], "inputs": {"handoff": True}},
    )  # fmt: skip
    assert second.status_code == 200
    active = [item for item in handoffs(kiosk).active() if item["conversation_id"] == first["conversation_id"]]
    assert len(active) == 1 and active[0]["calls"] == 2


@pytest.mark.parametrize("reset", ["start over", "reload"])
def test_a_reset_kiosk_abandons_its_open_hand_off(kiosk: TestClient, reset: str) -> None:
    call_staff(kiosk)
    left = status(kiosk)["id"]
    if reset == "start over":
        assert kiosk.post("/kiosk/session", headers=ORIGIN).status_code == 200
    else:
        assert kiosk.get("/").status_code == 200
    assert handoffs(kiosk).get(left)["status"] == ABANDONED
    assert status(kiosk) == {"status": "none"}  # the next shopper's session has none


def test_a_claimed_hand_off_survives_the_reset(kiosk: TestClient) -> None:
    call_staff(kiosk)
    claimed = status(kiosk)["id"]
    handoffs(kiosk).claim(claimed, "Wang")
    assert kiosk.post("/kiosk/session", headers=ORIGIN).status_code == 200
    assert handoffs(kiosk).get(claimed)["status"] == CLAIMED  # the colleague is with the shopper already


def test_a_forged_cookie_abandons_nothing(kiosk: TestClient) -> None:
    call_staff(kiosk)
    mine = status(kiosk)["id"]
    sid, issued, _ = kiosk.cookies[COOKIE].split(".")
    kiosk.cookies.clear()
    kiosk.cookies.set(COOKIE, f"{sid}.{issued}.forgedforgedforgedforgedforgedforgedforged0")
    assert kiosk.post("/kiosk/session", headers=ORIGIN).status_code == 200
    assert handoffs(kiosk).get(mine)["status"] == OPEN


def test_deleting_the_conversation_abandons_its_hand_off(kiosk: TestClient) -> None:
    answer = call_staff(kiosk)
    mine = status(kiosk)["id"]
    target = f"/v1/conversations/{answer['conversation_id']}"
    deleted = kiosk.request("DELETE", target, headers=ORIGIN, json={"user": "k"})
    assert deleted.status_code == 204, deleted.text
    assert handoffs(kiosk).get(mine)["status"] == ABANDONED


def test_one_kiosk_never_sees_another_kiosks_hand_off(app_client: TestClient) -> None:
    app_client.cookies.clear()
    app_client.get("/")
    call_staff(app_client)
    app_client.cookies.clear()
    app_client.get("/")
    assert status(app_client) == {"status": "none"}
    app_client.cookies.clear()


def test_the_hand_off_status_needs_the_kiosk_cookie(app_client: TestClient) -> None:
    app_client.cookies.clear()
    for headers in ({}, AUTH):
        response = app_client.get("/kiosk/handoff", headers=headers)
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    app_client.cookies.set(COOKIE, "not.a.token")
    assert app_client.get("/kiosk/handoff").status_code == 401
    app_client.cookies.clear()


def test_an_app_key_client_opens_hand_offs_as_well(app_client: TestClient) -> None:
    app_client.cookies.clear()
    response = app_client.post(
        "/v1/chat-messages",
        headers=AUTH,
        json={"query": "staff please", "user": "till-3", "response_mode": "blocking", "inputs": {"handoff": "true"}},
    )
    assert response.status_code == 200
    [item] = [h for h in handoffs(app_client).active() if h["user"] == "till-3"]
    assert item["reason"] == BUTTON and item["kiosk_id"] == "box-7"
