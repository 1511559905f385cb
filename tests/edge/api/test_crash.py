"""`kill -9` under load loses no turn that a client saw acknowledged."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.edge.api.conftest import AUTH, KEY

pytestmark = pytest.mark.slow
QUERIES = ["I want to cancel my order", "where is my refund", "how long does delivery take", "delete my account"]


def start_server(bundle: Path, data_dir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "KIOSK_APP_KEYS": json.dumps([KEY]),
        "KIOSK_BUNDLE_DIR": str(bundle),
        "KIOSK_DATA_DIR": str(data_dir),
        "KIOSK_PORT": str(port),
        "KIOSK_RATE_LIMIT_PER_S": "10000",
        "KIOSK_RATE_LIMIT_BURST": "10000",
        "KIOSK_CURATED_ANSWERS_CSV": str(Path("models/data/bitext_retail/intent_responses.csv").resolve()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not become ready")


def test_kill_9_during_load_loses_no_acknowledged_turn(api_bundle: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    process, url = start_server(api_bundle, data)
    acknowledged: list[tuple[str, str, str]] = []  # (user, conversation, message)
    stop = threading.Event()

    def kiosk(index: int) -> None:
        with httpx.Client(base_url=url, headers=AUTH, timeout=10) as client:
            for n in range(10_000):
                if stop.is_set():
                    return
                user = f"kiosk-{index}"
                try:
                    response = client.post("/v1/chat-messages", json={"query": QUERIES[n % 4], "user": user})
                except httpx.HTTPError:
                    return  # the server died mid-request: not acknowledged
                if response.status_code == 200:
                    body = response.json()
                    acknowledged.append((user, body["conversation_id"], body["message_id"]))

    workers = [threading.Thread(target=kiosk, args=(i,)) for i in range(4)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    stop.set()
    for worker in workers:
        worker.join(timeout=15)
    assert len(acknowledged) >= 40

    process, url = start_server(api_bundle, data)
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=10) as client:
            for user, conversation, message in acknowledged:
                history = client.get("/v1/messages", params={"conversation_id": conversation, "user": user})
                assert history.status_code == 200
                assert message in [m["id"] for m in history.json()["data"]]
    finally:
        process.terminate()
        process.wait(timeout=30)
