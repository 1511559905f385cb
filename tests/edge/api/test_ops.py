"""Operations: metrics per route and intent, request ids, structured logs."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from edge.logs import CONVERSATION_ID, REQUEST_ID, JsonFormatter
from tests.edge.api.conftest import AUTH

pytestmark = pytest.mark.slow


def test_metrics_count_routes_intents_and_cache(client: TestClient) -> None:
    for _ in range(2):
        client.post("/v1/chat-messages", headers=AUTH, json={"query": "I want to cancel my order", "user": "m"})
    text = client.get("/metrics").text
    assert 'kiosk_answers_total{intent="order.cancel_order",language="en",route="curated"} 1.0' in text
    # a cached answer still names the item it came from
    assert 'kiosk_answers_total{intent="order.cancel_order",language="en",route="cache"} 1.0' in text
    assert "kiosk_cache_hit_ratio 0.5" in text
    assert 'kiosk_http_request_seconds_count{method="POST",route="/v1/chat-messages",status="200"} 2.0' in text
    assert "kiosk_llm_queue_depth 0.0" in text


def test_request_id_is_returned_and_kept(client: TestClient) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    assert client.get("/healthz", headers={"X-Request-Id": "kiosk-42"}).headers["x-request-id"] == "kiosk-42"


def test_json_log_lines_carry_request_and_conversation_ids() -> None:
    record = logging.makeLogRecord({"name": "edge.test", "levelname": "INFO", "msg": "answered %s", "args": ("ok",)})
    request_token = REQUEST_ID.set("req-1")
    conversation_token = CONVERSATION_ID.set("conv-1")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        REQUEST_ID.reset(request_token)
        CONVERSATION_ID.reset(conversation_token)
    assert line["message"] == "answered ok"
    assert line["request_id"] == "req-1" and line["conversation_id"] == "conv-1"
