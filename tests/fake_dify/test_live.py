"""The fake on a real socket: TCP-level faults, the control API over HTTP, an official client, the demo CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest
from dify_client import ChatClient

from tests.conftest import ROOT
from tests.fake_dify import Central, LiveFakeDify
from tests.fake_dify.conftest import auth
from tests.fake_dify.spec import sse_frames

RUN = {
    "inputs": {"store_id": "s1", "kiosk_id": "k1", "edge_session_id": "e1", "transcript": "hi"},
    "user": "edge:s1:k1:e1",
    "response_mode": "blocking",
}
STREAM = {"query": "How long does standard delivery take?", "user": "u", "inputs": {}, "response_mode": "streaming"}


@pytest.fixture
def live(live_fake_dify: LiveFakeDify, central: Central) -> tuple[LiveFakeDify, Central]:
    return live_fake_dify, central


def _settled(server: LiveFakeDify, method: str) -> str:
    """The journal outcome once the server has seen the end of the exchange (it may trail the client)."""
    deadline = time.monotonic() + 10
    while (outcome := server.journal.entries(method)[-1].outcome) == "pending" and time.monotonic() < deadline:
        time.sleep(0.01)
    return outcome


def test_a_real_connection_is_reset(live: tuple[LiveFakeDify, Central]) -> None:
    server, central = live
    server.faults.drop("/v1/workflows/run", after=True)
    with httpx.Client(base_url=server.url) as client:
        with pytest.raises(httpx.TransportError):
            client.post("/v1/workflows/run", headers=auth(central.workflow_key), json=RUN)
        assert client.get("/v1/").json()["welcome"] == "Dify OpenAPI", "the server lives on"
    assert len(server.state.workflow_runs) == 1 and _settled(server, "POST") == "dropped"


def test_a_real_stall_times_the_client_out(live: tuple[LiveFakeDify, Central]) -> None:
    server, central = live
    server.faults.commit_then("/v1/workflows/run", "stall", seconds=60)
    with httpx.Client(base_url=server.url, timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/v1/workflows/run", headers=auth(central.workflow_key), json=RUN)
    assert len(server.state.workflow_runs) == 1 and _settled(server, "POST") == "stalled"


def test_a_real_stream_cut_after_one_event(live: tuple[LiveFakeDify, Central]) -> None:
    server, central = live
    server.faults.sse_drop(after_events=1)
    lines: list[str] = []
    with (
        httpx.Client(base_url=server.url) as client,
        pytest.raises(httpx.TransportError),
        client.stream("POST", "/v1/chat-messages", headers=auth(central.chat_key), json=STREAM) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines.extend(response.iter_lines())
    assert [json.loads(line[6:])["event"] for line in lines if line.startswith("data: ")] == ["message"]
    assert _settled(server, "POST") == "stream_dropped"


def test_the_control_api_over_http(live: tuple[LiveFakeDify, Central]) -> None:
    server, central = live
    with httpx.Client(base_url=server.url) as client:
        created = client.post("/_fake/faults", json={"kind": "error", "path": "/v1/info", "status": 500})
        assert created.status_code == 201 and created.json()["id"] == "fault-1"
        assert client.post("/_fake/faults", json={"kind": "nope", "path": "/"}).status_code == 400
        assert client.get("/v1/info", headers=auth(central.chat_key)).status_code == 500
        assert client.get("/_fake/faults").json()["data"][0]["fired"] == 1
        assert client.delete("/_fake/faults/fault-1").status_code == 204
        assert client.delete("/_fake/faults/fault-1").status_code == 404
        mutated = client.post("/_fake/mutations", json={"op": "set_app_api", "app_id": central.chat_app_id})
        assert mutated.status_code == 200
        assert client.get("/v1/info", headers=auth(central.chat_key)).status_code == 403
        assert client.post("/_fake/mutations", json={"op": "delete_segment", "segment_id": "x"}).status_code == 404
        assert client.post("/_fake/mutations", json={"op": "explode"}).status_code == 404
        assert client.post("/_fake/clock", json={"advance": 60, "skew": 5}).json()["now"] == 1_767_225_665
        journal = client.get("/_fake/journal", params={"path": "/v1/info"}).json()["data"]
        assert [(e["status"], e["fault"]) for e in journal] == [(500, "fault-1"), (403, None)]
        summary = client.get("/_fake/state").json()
        assert {k["token"] for k in summary["keys"]} == {central.chat_key, central.workflow_key, central.dataset_key}
        assert client.delete("/_fake/journal").status_code == 204
        assert client.get("/_fake/journal").json()["data"] == []


def test_the_official_dify_client_talks_to_the_fake(live: tuple[LiveFakeDify, Central]) -> None:
    server, central = live
    client = ChatClient(central.chat_key)
    client.base_url = server.api_url
    answer = client.create_chat_message({}, "Do you ship abroad?", "kiosk-7").json()
    assert answer["answer"] == "Not yet: we deliver within the country only."
    streamed = client.create_chat_message({}, "Where is my refund?", "kiosk-7", response_mode="streaming")
    assert sse_frames(streamed.text)[-1]["event"] == "message_end"  # type: ignore[index]
    history = client.get_conversation_messages("kiosk-7", answer["conversation_id"]).json()
    assert [m["query"] for m in history["data"]] == ["Do you ship abroad?"]
    assert client.get_application_parameters("kiosk-7").json()["suggested_questions"]


def test_python_m_runs_the_demo() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "tests.fake_dify", "--port", str(port), "--seed-demo", "--seed", "0"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(6)]
        assert banner[0].startswith(f"fake Dify on http://127.0.0.1:{port}/v1")
        keys = [line.split()[0] for line in banner[1:4]]
        assert [k.split("-")[0] for k in keys] == ["app", "app", "dataset"]
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v1/datasets", headers=auth(keys[2]))
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "the demo server did not start"
                time.sleep(0.05)
        assert [d["name"] for d in response.json()["data"]] == ["Store policies"]
    finally:
        process.terminate()
        process.wait(timeout=30)
