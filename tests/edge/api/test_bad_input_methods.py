"""Requests with made-up HTTP methods: answered in the family's envelope, counted under one bounded label."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.edge.api.conftest import AUTH


def test_unknown_methods_share_one_metrics_series(client: TestClient) -> None:
    for n in range(1, 6):
        for path in ("/v1/chat-messages", "/v1/chat/completions", "/no-such-route"):
            response = client.request(f"FOO{n}", path, headers=AUTH)
            assert 400 <= response.status_code < 500
    client.request("PATCH", "/v1/chat-messages", headers=AUTH)
    text = client.get("/metrics").text
    methods = set(re.findall(r'kiosk_http_request_seconds_count\{method="([^"]*)"', text))
    assert not any(method.startswith("FOO") for method in methods), methods
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert {"other", "PATCH"} <= methods
    other = re.findall(r'kiosk_http_request_seconds_count\{method="other",route="[^"]*",status="\d+"\} (\S+)', text)
    assert sum(float(count) for count in other) == 15
