"""The pod's scripts, run for real: the bundle init steps (install in busybox as in the bundle image,
activate with the real `edge verify`) and the sync agent's liveness check against a real database."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.store.db import open_database
from edge.store.sync_state import SyncState
from quantize.bundle import write_component, write_manifest
from tests.k3s.conftest import K3S, VENV_BIN

BUNDLE_INIT = K3S / "base" / "bundle-init.sh"
SYNC_ALIVE = K3S / "base" / "sync-alive.py"


def make_bundle(path: Path, payload: bytes) -> Path:
    """A small real bundle: one component whose file the manifest fingerprints."""
    component = path / "intent"
    component.mkdir(parents=True)
    (component / "model.onnx").write_bytes(payload)
    write_component(component, "intent", ["model.onnx"])
    write_manifest(path, path.name, {"intent": "intent"})
    return path


def bundle_id(bundle: Path) -> str:
    return hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def busybox_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PATH of busybox applets only, like the bundle image (busybox:1.37)."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox is missing: run `make tools` (the bundle image's shell and tools)")
    folder = tmp_path_factory.mktemp("busybox")
    subprocess.run([busybox, "--install", "-s", str(folder)], check=True)
    return folder


class Volume:
    """The pod's volume and the two init steps that run on it."""

    def __init__(self, root: Path, busybox_bin: Path) -> None:
        self.root = root / "bundles"
        self.busybox_bin = busybox_bin

    def install(self, source: Path) -> subprocess.CompletedProcess[str]:
        env = {"PATH": str(self.busybox_bin), "BUNDLES_ROOT": str(self.root)}
        return subprocess.run(
            [str(self.busybox_bin / "sh"), str(BUNDLE_INIT), "install", str(source)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def activate(self, keep: int = 3) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{VENV_BIN}:/usr/bin:/bin",
            "BUNDLES_ROOT": str(self.root),
            "BUNDLES_KEEP": str(keep),
            "HOME": str(self.root.parent),
        }
        return subprocess.run(
            ["/bin/sh", str(BUNDLE_INIT), "activate"], env=env, capture_output=True, text=True, timeout=120
        )

    def wait(self, source: Path) -> subprocess.Popen[str]:
        """The sync pod's init step, started: it returns once the runtime serves `source`'s bundle."""
        env = {"PATH": str(self.busybox_bin), "BUNDLES_ROOT": str(self.root), "BUNDLES_WAIT_S": "1"}
        return subprocess.Popen(
            [str(self.busybox_bin / "sh"), str(BUNDLE_INIT), "wait", str(source)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def roll(self, source: Path) -> None:
        for step in (self.install(source), self.activate()):
            assert step.returncode == 0, step.stdout + step.stderr

    def link(self, name: str) -> str | None:
        path = self.root / name
        return os.readlink(path) if path.is_symlink() else None

    def installed(self) -> set[str]:
        return {p.name for p in self.root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")}


@pytest.fixture
def volume(tmp_path: Path, busybox_bin: Path) -> Volume:
    return Volume(tmp_path / "pv", busybox_bin)


@pytest.fixture
def bundles(tmp_path: Path) -> list[Path]:
    return [make_bundle(tmp_path / "images" / f"bundle-{n}", f"weights {n}".encode() * 1000) for n in range(4)]


def test_first_start_installs_verifies_and_serves(volume: Volume, bundles: list[Path]) -> None:
    volume.roll(bundles[0])
    first = bundle_id(bundles[0])
    assert volume.link("current") == first and volume.link("previous") is None
    served = volume.root / "current"
    assert (served / "intent" / "model.onnx").read_bytes() == (bundles[0] / "intent" / "model.onnx").read_bytes()
    assert (served / "manifest.json").read_bytes() == (bundles[0] / "manifest.json").read_bytes()
    assert subprocess.run([str(VENV_BIN / "edge"), "verify", str(served)], capture_output=True).returncode == 0


def test_a_restart_copies_nothing(volume: Volume, bundles: list[Path]) -> None:
    volume.roll(bundles[0])
    marker = volume.root / bundle_id(bundles[0]) / "installed-once"
    marker.touch()
    result = volume.install(bundles[0])
    assert "already on the volume" in result.stderr
    volume.roll(bundles[0])
    assert marker.exists()


def test_new_bundle_then_rollback(volume: Volume, bundles: list[Path]) -> None:
    old, new = bundle_id(bundles[0]), bundle_id(bundles[1])
    volume.roll(bundles[0])
    volume.roll(bundles[1])
    assert (volume.link("current"), volume.link("previous")) == (new, old)
    marker = volume.root / old / "kept"
    marker.touch()
    volume.roll(bundles[0])  # the previous image tag again: nothing to copy, just verify and switch
    assert (volume.link("current"), volume.link("previous")) == (old, new)
    assert marker.exists()


def corrupt(volume: Volume, bundle: Path) -> str:
    assert volume.install(bundle).returncode == 0
    installed = bundle_id(bundle)
    with (volume.root / installed / "intent" / "model.onnx").open("r+b") as handle:  # a bad sector, a bad copy
        handle.write(b"X")
    return installed


def test_a_corrupt_update_never_reaches_the_runtime(volume: Volume, bundles: list[Path]) -> None:
    """The store keeps answering on the bundle it had; the next start copies the new one again."""
    volume.roll(bundles[0])
    good = bundle_id(bundles[0])
    bad = corrupt(volume, bundles[1])
    result = volume.activate()
    assert result.returncode == 0, result.stderr
    assert "fails its checksum" in result.stdout + result.stderr
    assert f"bundle {bad} failed verification" in result.stderr and f"still serving {good}" in result.stderr
    assert volume.link("current") == good
    assert (volume.root / "failed").read_text().strip() == bad  # for the operator
    assert bad not in volume.installed()  # removed, so that the restarted init copies it again
    volume.roll(bundles[1])
    assert volume.link("current") == bad
    assert not (volume.root / "failed").exists()


def test_a_corrupt_first_bundle_stops_the_pod(volume: Volume, bundles: list[Path]) -> None:
    """Nothing verified to fall back on: the init step fails, so the runtime never starts."""
    bad = corrupt(volume, bundles[0])
    result = volume.activate()
    assert result.returncode == 1
    assert "no verified bundle to serve" in result.stderr
    assert volume.link("current") is None and bad not in volume.installed()


def test_old_bundles_are_pruned(volume: Volume, bundles: list[Path]) -> None:
    for bundle in bundles:
        volume.roll(bundle)
        time.sleep(0.02)  # distinct modification times
    ids = [bundle_id(b) for b in bundles]
    assert (volume.link("current"), volume.link("previous")) == (ids[3], ids[2])
    assert volume.installed() == {ids[3], ids[2], ids[1]}


def test_refuses_what_is_not_a_bundle(volume: Volume, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = volume.install(tmp_path / "empty")
    assert result.returncode == 1 and "not a bundle" in result.stderr
    result = volume.activate()
    assert result.returncode == 1 and "no bundle was installed" in result.stderr


def test_half_copied_bundle_is_never_published(volume: Volume, bundles: list[Path]) -> None:
    """A copy interrupted by a crash leaves `.incoming`, never `<id>`; the next start copies again."""
    volume.root.mkdir(parents=True)
    (volume.root / ".incoming").mkdir()
    (volume.root / ".incoming" / "partial").write_bytes(b"x")
    volume.roll(bundles[0])
    assert not (volume.root / ".incoming").exists()
    assert volume.installed() == {bundle_id(bundles[0])}


def finished(process: subprocess.Popen[str], within_s: float) -> tuple[int, str] | None:
    """(exit code, stderr) once `process` ends, or None if it is still running after `within_s`."""
    try:
        _, stderr = process.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        return None
    return process.returncode, stderr


@pytest.fixture
def waiting(volume: Volume) -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """Starts the sync pod's init step; whatever is still waiting at the end is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(source: Path) -> subprocess.Popen[str]:
        started.append(volume.wait(source))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_sync_pod_waits_for_the_runtime_to_serve_its_bundle(
    volume: Volume, bundles: list[Path], waiting: Callable[[Path], subprocess.Popen[str]]
) -> None:
    first = waiting(bundles[0])  # a fresh node: the runtime's init steps have not run yet
    assert finished(first, 2.5) is None
    volume.roll(bundles[0])
    result = finished(first, 10)
    assert result is not None and result[0] == 0, result
    assert f"the runtime serves bundle {bundle_id(bundles[0])}" in result[1]
    # A new bundle image: the agent's pod waits while the runtime still serves the old one.
    update = waiting(bundles[1])
    assert finished(update, 2.5) is None
    volume.roll(bundles[1])
    result = finished(update, 10)
    assert result is not None and result[0] == 0, result


def test_the_sync_pod_follows_the_runtime_when_a_bundle_is_refused(volume: Volume, bundles: list[Path]) -> None:
    """A corrupt update: the runtime keeps the verified bundle, and so does the agent, instead of hanging."""
    volume.roll(bundles[0])
    bad = corrupt(volume, bundles[1])
    assert volume.activate().returncode == 0
    result = finished(volume.wait(bundles[1]), 10)
    assert result is not None and result[0] == 0, result
    assert f"bundle {bad} failed verification" in result[1] and bundle_id(bundles[0]) in result[1]


def test_wait_refuses_what_is_not_a_bundle(volume: Volume, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = finished(volume.wait(tmp_path / "empty"), 10)
    assert result is not None and result[0] == 1 and "not a bundle" in result[1]


# --- the sync agent's liveness --------------------------------------------------------------------------


def sync_alive(data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SYNC_ALIVE)],
        env={"PATH": os.environ["PATH"], "KIOSK_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sync_alive_on_a_fresh_box(tmp_path: Path) -> None:
    assert sync_alive(tmp_path / "data").returncode == 0  # no database yet
    open_database(tmp_path / "data" / "kiosk.sqlite3").close()
    assert sync_alive(tmp_path / "data").returncode == 0  # no pass yet


def test_sync_alive_follows_the_agents_records(tmp_path: Path) -> None:
    db = open_database(tmp_path / "kiosk.sqlite3")
    now = time.time()
    SyncState(db, clock=lambda: now - 120).record("central", "offline", success=False, error="unreachable")
    assert sync_alive(tmp_path).returncode == 0
    SyncState(db, clock=lambda: now - 7200).record("central", "online", success=True)
    result = sync_alive(tmp_path)
    assert result.returncode == 1, result.stdout
    assert sync_alive(tmp_path, KIOSK_SYNC_BACKOFF_MAX_S="7200").returncode == 0  # a long backoff is not a hang
    SyncState(db, clock=lambda: now).record("knowledge", "ok", success=True)  # any stream's attempt counts
    assert sync_alive(tmp_path).returncode == 0
    db.close()
