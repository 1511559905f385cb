"""The rendered manifests against the Kubernetes API schemas of the versions k3s ships, and policy scans
of the manifests and Dockerfiles (checkov, hadolint), all offline."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k3s.conftest import OVERLAYS, ROOT, TARGETS, TOOLS_BIN, VENV_BIN, Rendered, render, tool

# The Kubernetes minors k3s maintains in late 2026 (its stable channel is on one of them). The newest
# schemas kubernetes-validate 1.37.0 bundles are 1.34-1.37; the manifests must pass on each of these.
K8S_VERSIONS = ("1.35.0", "1.36.0", "1.37.0")

# Checkov checks skipped, each because it contradicts running air-gapped. Nothing else is skipped:
# `test_checkov_skips_are_still_needed` fails when a skip stops being needed.
CHECKOV_SKIPS = {
    # Always pull: on a store node the images come from k3s's images directory (tarballs imported at
    # start) and the WAN is often down, so every pull attempt fails and a restart would never come back.
    # IfNotPresent, with pinned version tags (tested), runs exactly the imported image.
    "CKV_K8S_15": "Image Pull Policy should be Always",
    # Digests: an image built and `docker save`d for the images directory is known to containerd by its
    # tag; a digest reference resolves only to a registry's manifest digest, which an imported tarball
    # need not carry, and kubelet would then try to pull it, which fails offline. Tags are pinned instead.
    "CKV_K8S_43": "Image should use digest",
}
DOCKERFILES = (ROOT / "Dockerfile", ROOT / "k3s" / "bundle" / "Dockerfile")


def kubernetes_validate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("kubernetes-validate", VENV_BIN), "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", tuple(TARGETS))
def test_validates_against_the_api_schema(rendered: dict[str, Rendered], target: str, version: str) -> None:
    result = kubernetes_validate(rendered[target].path, version)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_is_strict(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    """A misspelt field fails: the check above is not a YAML syntax check."""
    docs = copy.deepcopy(rendered["x86"].docs)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    result = kubernetes_validate(path, K8S_VERSIONS[-1])
    assert result.returncode != 0
    assert "livenessProbes" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def scan_dir(rendered: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("checkov")
    for name, output in rendered.items():
        (folder / f"{name}.yaml").write_text(output.path.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def checkov(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("checkov", TOOLS_BIN), "--skip-download", "--compact", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_checkov_passes_the_manifests(scan_dir: Path) -> None:
    result = checkov("-d", str(scan_dir), "--framework", "kubernetes", "--skip-check", ",".join(CHECKOV_SKIPS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Failed checks: 0" in result.stdout


def test_checkov_skips_are_still_needed(scan_dir: Path) -> None:
    result = checkov("-d", str(scan_dir), "--framework", "kubernetes", "-o", "json")
    report = json.loads(result.stdout)
    failed = {check["check_id"] for check in report["results"]["failed_checks"]}
    assert failed == set(CHECKOV_SKIPS)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] >= 8 * len(TARGETS)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_checkov_passes_the_dockerfiles(dockerfile: Path) -> None:
    # The Dockerfile's one inline skip (CKV_DOCKER_7, base image from a build argument) says why.
    result = checkov("-f", str(dockerfile), "--framework", "dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_passes_the_dockerfiles(dockerfile: Path) -> None:
    result = subprocess.run(
        [tool("hadolint", TOOLS_BIN), "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("target", OVERLAYS)
def test_overlays_render_the_same_twice(k3s_tree: Path, target: str) -> None:
    """Rendering is deterministic (hash-suffixed names included), so a re-apply changes nothing."""
    directory = k3s_tree / TARGETS[target][0]
    assert render(directory) == render(directory)


def test_the_readme_explains_every_skip_and_version() -> None:
    readme = (ROOT / "k3s" / "README.md").read_text(encoding="utf-8")
    for check in CHECKOV_SKIPS:
        assert check in readme, f"{check} is skipped but k3s/README.md does not say why"
    for version in K8S_VERSIONS:
        assert version.rsplit(".", 1)[0] in readme, version
