"""The probes of the rendered manifests, and the image's HEALTHCHECK, against the app they point at:
`edge serve` started from each overlay's ConfigMap and the keys file, as in the pod."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.k3s.conftest import (
    OVERLAYS,
    ROOT,
    EdgeServer,
    Rendered,
    auth,
    clean_environ,
    free_port,
    local_env,
)

PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


@pytest.fixture(params=OVERLAYS)
def overlay_server(
    request: pytest.FixtureRequest, rendered: dict[str, Rendered], api_bundle: Path, tmp_path: Path, secrets_file: Path
) -> Iterator[tuple[Rendered, EdgeServer]]:
    output = rendered[request.param]
    env = local_env(output.configmap("kiosk-edge-config"), api_bundle, tmp_path / "data", free_port())
    with EdgeServer(env, secrets_file, tmp_path / "serve.log") as server:
        yield output, server


def test_probe_paths_answer_on_the_running_app(overlay_server: tuple[Rendered, EdgeServer]) -> None:
    output, server = overlay_server
    runtime = output.container("runtime")
    paths = {runtime[probe]["httpGet"]["path"] for probe in PROBES}
    assert paths == {"/healthz", "/readyz"}
    for probe in PROBES:
        get = runtime[probe]["httpGet"]
        assert get.get("scheme", "HTTP") == "HTTP"
        response = httpx.get(server.url + get["path"], timeout=10)
        assert response.status_code == 200, (probe, response.text)
    assert httpx.get(f"{server.url}/readyz", timeout=10).json()["loaded"] is True
    assert httpx.get(f"{server.url}/healthzz", timeout=10).status_code == 404  # the check can fail
    # ... and the server it probes is the assistant the kiosks use, configured as the overlay says.
    answer = httpx.post(
        f"{server.url}/v1/chat-messages",
        json={"query": "I want to cancel my order", "user": "probe-test", "inputs": {}},
        headers=auth(),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["answer"]


def healthcheck_command() -> list[str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    (command,) = re.findall(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, flags=re.MULTILINE)
    return json.loads(command)


def test_the_images_healthcheck_passes_on_the_running_app(x86_server: EdgeServer) -> None:
    program, *args = healthcheck_command()
    assert program == "python"  # the venv's, first on the image's PATH
    env = {**clean_environ(), "KIOSK_PORT": str(x86_server.port), "PATH": os.environ["PATH"]}
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    env["KIOSK_PORT"] = str(free_port())  # nothing listens there: unhealthy
    assert subprocess.run([sys.executable, *args], env=env, capture_output=True, timeout=30).returncode != 0
