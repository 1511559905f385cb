"""The k3s manifests, rendered once per session with the real kubectl (kustomize), and a real server.

No Kubernetes runs on these machines, so what can be checked is checked for real: kustomize renders
every overlay, the output is validated against the API schemas and scanned for policy, and the app the
manifests point at is started from the rendered settings and probed on the rendered paths.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K3S = ROOT / "k3s"
VENV_BIN = Path(sys.executable).parent
TOOLS_BIN = ROOT / ".venv-tools" / "bin"  # checkov and hadolint: `make tools` (they conflict with our pins)
PV_MOUNT = "/var/lib/kiosk"
IMAGE_APP_DIR = "/app"  # the runtime image's WORKDIR, where models/data is copied (Dockerfile)

# Real-looking keys for the stores the tests render and start (the example's placeholders are refused):
# the runtime's Secret holds the app keys, the sync agent's central's keys.
TEST_KEY = "app-k3s-test-0123456789abcdef"
TEST_RUNTIME_SECRETS_ENV = f"KIOSK_APP_KEYS='[\"{TEST_KEY}\"]'\n"
TEST_SYNC_SECRETS_ENV = (
    "KIOSK_CENTRAL_APP_KEY=app-central-0123456789abcdef\n"
    "KIOSK_CENTRAL_DATASET_KEY=dataset-0123456789abcdef\n"
    "KIOSK_CENTRAL_INGEST_KEY=app-ingest-0123456789abcdef\n"
)
# The Secret each pod mounts, by the name of its Deployment.
SECRETS = {"kiosk-edge": "kiosk-edge-runtime-secrets", "kiosk-edge-sync": "kiosk-edge-sync-secrets"}

# name -> (kustomization directory under k3s/, extra kustomization written for the test or None)
TARGETS: dict[str, tuple[str, str | None]] = {
    "x86": ("overlays/x86", None),
    "jetson": ("overlays/jetson", None),
    "store-example": ("stores/example", None),
    "jetson-gpu": (
        "stores/test-jetson-gpu",
        "resources: [../../overlays/jetson]\ncomponents: [../../components/gpu-resource]\n",
    ),
    "x86-no-sync": (
        "stores/test-no-sync",
        "resources: [../../overlays/x86]\ncomponents: [../../components/no-sync]\n",
    ),
}
OVERLAYS = ("x86", "jetson")


def tool(name: str, where: Path) -> str:
    path = where / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make install tools` (the k3s tests need it)")
    return str(path)


@dataclass
class Rendered:
    name: str
    path: Path  # the rendered YAML
    docs: list[dict[str, Any]]

    def find(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    @property
    def pod(self) -> dict[str, Any]:
        """The runtime's pod (Deployment kiosk-edge)."""
        return self.find("Deployment", "kiosk-edge")["spec"]["template"]["spec"]

    @property
    def sync_pod(self) -> dict[str, Any] | None:
        """The sync agent's pod (Deployment kiosk-edge-sync), None in a store without sync."""
        found = [d for d in self.all("Deployment") if d["metadata"]["name"] == "kiosk-edge-sync"]
        return found[0]["spec"]["template"]["spec"] if found else None

    @property
    def pods(self) -> list[dict[str, Any]]:
        return [d["spec"]["template"]["spec"] for d in self.all("Deployment")]

    def container(self, name: str) -> dict[str, Any]:
        found = [c for c in self.all_containers() if c["name"] == name]
        assert len(found) == 1, f"{self.name}: no container {name}"
        return found[0]

    def all_containers(self) -> list[dict[str, Any]]:
        return [c for pod in self.pods for c in pod.get("initContainers", []) + pod["containers"]]

    def configmap(self, prefix: str) -> dict[str, str]:
        """The data of the generated ConfigMap named `prefix-<hash>` (the pod references it by that name)."""
        maps = [d for d in self.all("ConfigMap") if d["metadata"]["name"].rsplit("-", 1)[0] == prefix]
        assert len(maps) == 1, f"{self.name}: expected one ConfigMap {prefix}-<hash>"
        return maps[0].get("data", {})

    def secret_file(self, prefix: str, key: str = "kiosk.env") -> str:
        secrets = [d for d in self.all("Secret") if d["metadata"]["name"].rsplit("-", 1)[0] == prefix]
        assert len(secrets) == 1, f"{self.name}: expected one Secret {prefix}-<hash>"
        return base64.b64decode(secrets[0]["data"][key]).decode()


def render(directory: Path) -> str:
    result = subprocess.run(
        [tool("kubectl", VENV_BIN), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def k3s_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of k3s/ with the test stores added (and the example store's secrets files written)."""
    tree = tmp_path_factory.mktemp("k3s") / "k3s"
    shutil.copytree(K3S, tree, ignore=shutil.ignore_patterns("*secrets.env", "README.md"))
    for name, text in (("runtime", TEST_RUNTIME_SECRETS_ENV), ("sync", TEST_SYNC_SECRETS_ENV)):
        shutil.copyfile(K3S / "base" / f"{name}-secrets.env", tree / "base" / f"{name}-secrets.env")
        (tree / "stores" / "example" / f"{name}-secrets.env").write_text(text, encoding="utf-8")
    for directory, extra in TARGETS.values():
        if extra is not None:
            store = tree / directory
            store.mkdir(parents=True)
            (store / "kustomization.yaml").write_text(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n" + extra, encoding="utf-8"
            )
    return tree


@pytest.fixture(scope="session")
def rendered(k3s_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    out = tmp_path_factory.mktemp("rendered")
    result = {}
    for name, (directory, _) in TARGETS.items():
        text = render(k3s_tree / directory)
        path = out / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        result[name] = Rendered(name, path, [d for d in yaml.safe_load_all(text) if d])
    return result


# --- a real `edge serve`, started from rendered settings ----------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def local_env(configmap: dict[str, str], bundle: Path, data_dir: Path, port: int) -> dict[str, str]:
    """The ConfigMap's settings with the pod's paths mapped onto this machine: the volume onto
    `bundle`/`data_dir`, the image's /app onto the repository (whose models/data the image copies)."""

    def local(value: str) -> str:
        return value.replace(IMAGE_APP_DIR + "/", str(ROOT) + "/")

    env = {key: local(value) for key, value in configmap.items()}
    env.update(
        KIOSK_BUNDLE_DIR=str(bundle),
        KIOSK_DATA_DIR=str(data_dir),
        KIOSK_HOST="127.0.0.1",
        KIOSK_PORT=str(port),
        KIOSK_RATE_LIMIT_PER_S="10000",
        KIOSK_RATE_LIMIT_BURST="10000",
    )
    return env


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}


class EdgeServer:
    """`python -m edge --env-file SECRETS serve` as the pod runs it, on loopback."""

    def __init__(self, env: dict[str, str], secrets_file: Path, log: Path) -> None:
        self.env = {**clean_environ(), **env, "PYTHONDONTWRITEBYTECODE": "1"}
        self.port = int(env["KIOSK_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.secrets_file = secrets_file
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EdgeServer:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge", "--env-file", str(self.secrets_file), "serve"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"edge serve exited {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"edge serve did not become ready:\n{self.log.read_text()}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def write_secrets(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    """The runtime's keys file: the app keys only, as its pod mounts it."""
    return write_secrets(tmp_path / "kiosk.env", TEST_RUNTIME_SECRETS_ENV)


@pytest.fixture
def sync_secrets_file(tmp_path: Path) -> Path:
    """The sync agent's keys file: central's keys only, as its pod mounts it."""
    return write_secrets(tmp_path / "sync-kiosk.env", TEST_SYNC_SECRETS_ENV)


@pytest.fixture
def x86_server(
    rendered: dict[str, Rendered], api_bundle: Path, tmp_path: Path, secrets_file: Path
) -> Iterator[EdgeServer]:
    """The app as the x86 overlay configures it (paths mapped to this machine), on the test bundle."""
    env = local_env(rendered["x86"].configmap("kiosk-edge-config"), api_bundle, tmp_path / "data", free_port())
    with EdgeServer(env, secrets_file, tmp_path / "serve.log") as server:
        yield server


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_KEY}"}


def dumps(value: object) -> str:
    return json.dumps(value, indent=2, default=str)
