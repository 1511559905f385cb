"""What the pod's termination does to a real server: SIGTERM (after the preStop sleep) while answers
are streaming. Every request already inside finishes, new connections are refused, and both
processes exit 0 within the manifest's terminationGracePeriodSeconds."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.k3s.conftest import (
    ROOT,
    EdgeServer,
    Rendered,
    auth,
    clean_environ,
    free_port,
    local_env,
)

MAX_STREAMS = 4
DRAIN_BUDGET_S = 8.0  # well inside uvicorn's 20 s, however slow the shared machine is today


def grace_period_s(rendered: dict[str, Rendered]) -> int:
    return rendered["x86"].pod["terminationGracePeriodSeconds"]


def stream_answer(url: str, model: str, n: int, results: dict[int, dict[str, object]]) -> None:
    """One plain LLM generation, streamed (OpenAI API), recorded as what the client saw."""
    body = {
        "model": model,
        "stream": True,
        "max_tokens": 48,
        "messages": [{"role": "user", "content": f"Write a long story about shop number {n}."}],
    }
    seen: dict[str, object] = {"status": None, "done": False, "finish": None, "text": "", "error": None}
    try:
        with (
            httpx.Client(timeout=120) as client,
            client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=auth()) as response,
        ):
            seen["status"] = response.status_code
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    seen["done"] = True
                elif line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        seen["error"] = chunk["error"]
                        continue
                    choice = chunk["choices"][0]
                    seen["text"] = str(seen["text"]) + (choice["delta"].get("content") or "")
                    seen["finish"] = choice["finish_reason"] or seen["finish"]
    except httpx.HTTPError as exc:
        seen["error"] = repr(exc)
    results[n] = seen


def refuses_connections(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def sigterm_under_load(server: EdgeServer, grace_s: int) -> tuple[int, bool, dict[int, dict[str, object]]]:
    """SIGTERM while streams are generating and queued: (exit code, refused while draining, what clients saw).

    The load is sized to the machine: one answer is timed first, and as many streams are sent as drain
    in DRAIN_BUDGET_S at that speed (2 to 4), so that the test checks the drain, not the machine's speed."""
    assert server.process is not None
    model = httpx.get(f"{server.url}/v1/models", headers=auth(), timeout=10).json()["data"][1]["id"]
    warmup: dict[int, dict[str, object]] = {}
    started = time.monotonic()
    stream_answer(server.url, model, 99, warmup)
    one_answer_s = time.monotonic() - started
    assert warmup[99]["done"], warmup
    streams = max(2, min(MAX_STREAMS, int(DRAIN_BUDGET_S // max(one_answer_s, 0.1))))

    results: dict[int, dict[str, object]] = {}
    clients = [threading.Thread(target=stream_answer, args=(server.url, model, n, results)) for n in range(streams)]
    for client in clients:
        client.start()
    # In flight: one generating, the others queued inside the server (its own readiness figures).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if httpx.get(f"{server.url}/readyz", timeout=10).json().get("llm_queue_depth", 0) >= streams - 1:
            break
        time.sleep(0.01)
    else:
        raise AssertionError(f"the streams never queued up: {results}")

    server.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    refused_while_draining = False
    while time.monotonic() - sent < 10:
        if refuses_connections(server.port):
            refused_while_draining = len(results) < streams  # some answers still streaming
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the server kept accepting connections after SIGTERM")
    code = server.process.wait(timeout=grace_s)
    for client in clients:
        client.join(timeout=30)
    assert sorted(results) == list(range(streams))
    return code, refused_while_draining, results


def serve(rendered: dict[str, Rendered], api_bundle: Path, tmp_path: Path, secrets_file: Path) -> EdgeServer:
    env = local_env(rendered["x86"].configmap("kiosk-edge-config"), api_bundle, tmp_path / "data", free_port())
    env["KIOSK_LLM_MAX_QUEUE"] = str(MAX_STREAMS)
    return EdgeServer(env, secrets_file, tmp_path / "serve.log")


def test_sigterm_under_load_finishes_in_flight_answers(
    rendered: dict[str, Rendered], api_bundle: Path, tmp_path: Path, secrets_file: Path
) -> None:
    with serve(rendered, api_bundle, tmp_path, secrets_file) as server:
        code, refused_while_draining, results = sigterm_under_load(server, grace_period_s(rendered))
    log = (tmp_path / "serve.log").read_text()
    assert code == 0, log  # drained and stopped cleanly (edge serve does not die of the SIGTERM)
    assert "timeout graceful shutdown exceeded" not in log, log
    assert refused_while_draining, f"all answers had finished before the socket closed: {results}"
    for n, seen in results.items():
        assert seen["status"] == 200 and seen["error"] is None, (n, seen, log)
        assert seen["done"] and seen["finish"] in ("stop", "length"), (n, seen)
        assert str(seen["text"]).strip(), (n, seen)


def test_serve_exits_0_after_sigterm(api_bundle: Path, tmp_path: Path, secrets_file: Path) -> None:
    env = local_env({}, api_bundle, tmp_path / "data", free_port())
    with EdgeServer(env, secrets_file, tmp_path / "serve.log") as server:
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=60)
    assert code == 0


def test_sigterm_ends_the_staff_pages_event_stream(api_bundle: Path, tmp_path: Path, secrets_file: Path) -> None:
    """A signed-in staff tablet holds an endless event stream: SIGTERM ends it at once, so the stop is
    clean (no task cancelled after uvicorn's graceful timeout) and the page reconnects to the next box."""
    from edge.pin import hash_pin

    env = local_env({}, api_bundle, tmp_path / "data", free_port())
    env["KIOSK_STAFF_PIN_DIGEST"] = hash_pin("13572468", iterations=1000)
    log = tmp_path / "serve.log"
    with EdgeServer(env, secrets_file, log) as server:
        assert server.process is not None
        origin = {"Origin": server.url}
        with httpx.Client(base_url=server.url, headers=origin, timeout=httpx.Timeout(10, read=60)) as staff:
            staff.post("/staff/api/session", json={"pin": "13572468", "name": "Li"}).raise_for_status()
            with staff.stream("GET", "/staff/api/events") as events:
                assert events.status_code == 200
                lines = events.iter_lines()
                assert next(line for line in lines if line.startswith("event:")) == "event: handoffs"
                server.process.send_signal(signal.SIGTERM)
                for _ in lines:  # runs out only once the server ends the stream
                    pass
        code = server.process.wait(timeout=60)
    text = log.read_text()
    assert code == 0, text
    assert "timeout graceful shutdown exceeded" not in text, text  # uvicorn's words when it cancels the stream


def test_sigterm_stops_the_sync_agent(
    rendered: dict[str, Rendered], api_bundle: Path, tmp_path: Path, sync_secrets_file: Path
) -> None:
    """The sync container: offline from central (nothing listens), SIGTERM between passes → exit 0."""
    data = tmp_path / "data"
    env = {
        **clean_environ(),
        **local_env(rendered["x86"].configmap("kiosk-edge-config"), api_bundle, data, free_port()),
        "KIOSK_CENTRAL_URL": f"http://127.0.0.1:{free_port()}/v1",
    }
    log = tmp_path / "sync.log"
    with log.open("wb") as out:
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge", "--env-file", str(sync_secrets_file), "sync", "run"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        alive = [sys.executable, str(ROOT / "k3s" / "base" / "sync-alive.py")]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            probe = subprocess.run(alive, env=env, capture_output=True, text=True, timeout=30)
            if "last attempt" in probe.stdout:  # the agent has recorded its first (offline) pass
                assert probe.returncode == 0
                break
            assert agent.poll() is None, log.read_text()
            time.sleep(0.2)
        else:
            raise AssertionError(f"the agent recorded no pass:\n{log.read_text()}")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=grace_period_s(rendered)) == 0, log.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
