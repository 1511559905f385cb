"""What the schemas cannot say about the rendered manifests: resources, hardening, settings, images."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from dotenv import dotenv_values
from pydantic import ValidationError

from edge.settings import Settings
from tests.k3s.conftest import (
    IMAGE_APP_DIR,
    OVERLAYS,
    PV_MOUNT,
    ROOT,
    TARGETS,
    TEST_KEY,
    Rendered,
    clean_environ,
)

ALL = tuple(TARGETS)
FIELDS = Settings.model_fields
SECRET_FIELDS = {name for name, field in FIELDS.items() if "SecretStr" in str(field.annotation)}

# Settings the pod cannot leave at their defaults (the defaults suit `make run` on a workstation).
POD_SETTINGS = {
    "KIOSK_HOST": "listen on the pod's address, not 127.0.0.1",
    "KIOSK_PORT": "must equal the containerPort the probes and the Service use",
    "KIOSK_DATA_DIR": "SQLite on the persistent volume",
    "KIOSK_BUNDLE_DIR": "the bundle the init steps verified",
    "KIOSK_CURATED_ANSWERS_CSV": "absolute: the image's copy",
    "KIOSK_KNOWLEDGE_SEED_CSVS": "absolute: the image's copy",
    "KIOSK_STORE_ID": "names the store in everything pushed to central",
    "KIOSK_KIOSK_ID": "names the box",
    "KIOSK_CENTRAL_URL": "the sync agent exits without it",
    "KIOSK_LLM_THREADS": "sized to the node kind's cores",
}
# Keys an overlay sets before the runtime has the setting: llama.cpp's GPU offload (n_gpu_layers) needs
# a Settings field `llm_gpu_layers` passed to llama_cpp.Llama. Until then pydantic-settings ignores the
# variable (it ignores unknown environment variables), so Jetson runs on the CPU. `test_pending_settings`
# turns red when the field lands: then drop the entry.
PENDING_SETTINGS = {"KIOSK_LLM_GPU_LAYERS"}


def env_name(field: str) -> str:
    return f"KIOSK_{field.upper()}"


# --- shape ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ALL)
def test_one_pod_recreated_never_two(rendered: dict[str, Rendered], target: str) -> None:
    spec = rendered[target].find("Deployment", "kiosk-edge")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pvc = rendered[target].find("PersistentVolumeClaim", "kiosk-edge-data")["spec"]
    assert pvc["accessModes"] == ["ReadWriteOnce"]
    assert pvc["storageClassName"] == "local-path"
    assert rendered[target].all("StatefulSet") == [] and rendered[target].all("DaemonSet") == []


@pytest.mark.parametrize("target", ALL)
def test_every_container_has_requests_and_limits(rendered: dict[str, Rendered], target: str) -> None:
    for container in rendered[target].all_containers():
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resource in resources.get(kind, {}), f"{target}/{container['name']}: no {kind}.{resource}"


def quantity(value: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


@pytest.mark.parametrize("target", OVERLAYS)
def test_the_pod_fits_a_4_gb_box(rendered: dict[str, Rendered], target: str) -> None:
    """Long-running containers' limits add up to at most 2 GiB, leaving the rest to k3s and the OS;
    init containers run before them, one at a time."""
    pod = rendered[target].pod
    memory = sum(quantity(c["resources"]["limits"]["memory"]) for c in pod["containers"])
    assert memory <= 2 * 2**30
    for container in pod["initContainers"]:
        assert quantity(container["resources"]["limits"]["memory"]) <= 512 * 2**20
    cpu = sum(quantity(c["resources"]["requests"]["cpu"]) for c in pod["containers"])
    assert cpu <= 1.5  # schedulable on a 2-core box beside k3s


@pytest.mark.parametrize("target", ALL)
def test_hardened(rendered: dict[str, Rendered], target: str) -> None:
    pod = rendered[target].pod
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # a Service "kiosk" would inject KIOSK_PORT=tcp://...
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for container in rendered[target].all_containers():
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert context.get("privileged", False) is False, container["name"]
        assert not any("hostPort" in port for port in container.get("ports", [])), container["name"]
    namespace = rendered[target].find("Namespace", "kiosk-edge")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("target", ALL)
def test_python_containers_have_a_writable_tmp(rendered: dict[str, Rendered], target: str) -> None:
    pod = rendered[target].pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in rendered[target].all_containers():
        if container["image"].startswith("kiosk-edge:"):
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], container["name"]
            assert "persistentVolumeClaim" in volumes[mounts[PV_MOUNT]], container["name"]


@pytest.mark.parametrize("target", ALL)
def test_images_are_pinned_and_never_pulled_when_present(rendered: dict[str, Rendered], target: str) -> None:
    for container in rendered[target].all_containers():
        image = container["image"]
        name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
        assert name and "/" not in tag, f"{container['name']}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{container['name']}: {image} is not a pinned version"
        # Air-gapped: the image comes from k3s's images directory; a pull attempt can only fail.
        assert container["imagePullPolicy"] == "IfNotPresent", container["name"]


def test_runtime_image_tag_is_the_package_version(rendered: dict[str, Rendered]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert rendered["x86"].container("runtime")["image"] == f"kiosk-edge:{version}"
    assert rendered["jetson"].container("runtime")["image"] == f"kiosk-edge:{version}-jetson"


@pytest.mark.parametrize("target", ALL)
def test_tolerates_losing_the_control_plane(rendered: dict[str, Rendered], target: str) -> None:
    tolerations = {(t["key"], t["effect"]): t for t in rendered[target].pod["tolerations"]}
    for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"):
        toleration = tolerations[(key, "NoExecute")]
        assert toleration["operator"] == "Exists" and "tolerationSeconds" not in toleration


# --- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ALL)
def test_configmap_keys_are_real_settings(rendered: dict[str, Rendered], target: str) -> None:
    data = rendered[target].configmap("kiosk-edge-config")
    known = {env_name(name) for name in FIELDS}
    unknown = set(data) - known - PENDING_SETTINGS
    assert not unknown, f"not settings of edge/settings.py: {sorted(unknown)}"
    secrets = {env_name(name) for name in SECRET_FIELDS} & set(data)
    assert not secrets, f"secrets belong in the Secret, not the ConfigMap: {sorted(secrets)}"


def test_pending_settings_exist() -> None:
    assert {env_name(name) for name in FIELDS} >= PENDING_SETTINGS


@pytest.mark.parametrize("target", ALL)
def test_configmap_sets_what_a_pod_needs(rendered: dict[str, Rendered], target: str) -> None:
    data = rendered[target].configmap("kiosk-edge-config")
    missing = set(POD_SETTINGS) - set(data)
    assert not missing, f"missing: {sorted(missing)}"
    assert data["KIOSK_HOST"] == "0.0.0.0"
    assert PurePosixPath(data["KIOSK_DATA_DIR"]).is_relative_to(PV_MOUNT)
    # The runtime serves what the init steps verified and switched.
    bundles_root = {
        env["value"]
        for name in ("bundle-install", "bundle-verify")
        for env in rendered[target].container(name)["env"]
        if env["name"] == "BUNDLES_ROOT"
    }
    assert bundles_root == {str(PurePosixPath(data["KIOSK_BUNDLE_DIR"]).parent)}
    assert data["KIOSK_BUNDLE_DIR"].endswith("/current")
    assert PurePosixPath(data["KIOSK_BUNDLE_DIR"]).is_relative_to(PV_MOUNT)


@pytest.mark.parametrize("target", ALL)
def test_configmap_values_are_valid_settings(
    rendered: dict[str, Rendered], target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsed by the runtime's own Settings from the environment, as in the pod (plus a real key)."""
    data = {k: v for k, v in rendered[target].configmap("kiosk-edge-config").items() if k not in PENDING_SETTINGS}
    for key in [k for k in os.environ if k.startswith("KIOSK_")]:
        monkeypatch.delenv(key)
    for key, value in {**data, "KIOSK_APP_KEYS": f'["{TEST_KEY}"]'}.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    # Files the image provides: the paths under /app are the repository's models/data, copied by the Dockerfile.
    for path in [settings.curated_answers_csv, *settings.knowledge_seed_csvs]:
        assert str(path).startswith(IMAGE_APP_DIR + "/"), path
        assert (ROOT / path.relative_to(IMAGE_APP_DIR)).is_file(), path


@pytest.mark.parametrize("target", ALL)
def test_secret_holds_exactly_the_secret_settings(rendered: dict[str, Rendered], target: str) -> None:
    values = dotenv_values(stream=io.StringIO(rendered[target].secret_file()))
    assert set(values) == {env_name(name) for name in SECRET_FIELDS}


def run_edge(args: list[str], env_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", "--env-file", str(env_file), *args],
        env={**clean_environ(), "KIOSK_DATA_DIR": str(tmp_path / "data")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("target", OVERLAYS)
def test_the_example_secret_is_refused(rendered: dict[str, Rendered], target: str, tmp_path: Path) -> None:
    """The overlays ship placeholder keys: both containers refuse to start until a store sets real ones."""
    env_file = tmp_path / "kiosk.env"
    env_file.write_text(rendered[target].secret_file(), encoding="utf-8")
    for command in (["config"], ["serve"], ["sync", "status"]):
        result = run_edge(command, env_file, tmp_path)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "app keys must be real secrets" in result.stderr, result.stderr


def test_a_store_secret_is_accepted(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    env_file = tmp_path / "kiosk.env"
    env_file.write_text(rendered["store-example"].secret_file(), encoding="utf-8")
    result = run_edge(["config"], env_file, tmp_path)
    assert result.returncode == 0, result.stderr
    assert TEST_KEY not in result.stdout  # redacted


def test_placeholder_values_are_refused_by_settings() -> None:
    """The same validator the pod hits, on the base's placeholder file."""
    values = dotenv_values(ROOT / "k3s" / "base" / "secrets.env")
    with pytest.raises(ValidationError, match="real secrets"):
        Settings(app_keys=json.loads(values["KIOSK_APP_KEYS"] or "[]"))


# --- the pod's wiring --------------------------------------------------------------------------------


def named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


@pytest.mark.parametrize("target", ALL)
def test_ports_agree(rendered: dict[str, Rendered], target: str) -> None:
    runtime = rendered[target].container("runtime")
    port = int(rendered[target].configmap("kiosk-edge-config")["KIOSK_PORT"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert named_port(runtime, runtime[probe]["httpGet"]["port"]) == port, probe
    (service_port,) = rendered[target].find("Service", "kiosk-edge")["spec"]["ports"]
    assert named_port(runtime, service_port["targetPort"]) == port
    policy = rendered[target].find("NetworkPolicy", "kiosk-edge")
    assert [named_port(runtime, p["port"]) for p in policy["spec"]["ingress"][0]["ports"]] == [port]


def graceful_shutdown_s() -> int:
    """What `edge serve` gives in-flight requests after SIGTERM (uvicorn's timeout_graceful_shutdown)."""
    source = (ROOT / "edge" / "cli.py").read_text(encoding="utf-8")
    (seconds,) = re.findall(r"timeout_graceful_shutdown=(\d+)", source)
    return int(seconds)


@pytest.mark.parametrize("target", ALL)
def test_shutdown_fits_the_grace_period(rendered: dict[str, Rendered], target: str) -> None:
    pod = rendered[target].pod
    runtime = rendered[target].container("runtime")
    pre_stop = runtime["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 3  # endpoints and kube-proxy catch up before uvicorn closes its socket
    # preStop + uvicorn's drain + closing llama.cpp and SQLite (a few seconds) within the grace period
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + graceful_shutdown_s() + 10


@pytest.mark.parametrize("target", ALL)
def test_startup_probe_is_generous_and_liveness_is_not_hasty(rendered: dict[str, Rendered], target: str) -> None:
    runtime = rendered[target].container("runtime")
    startup = runtime["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180
    liveness = runtime["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30  # a busy 2-core box is not dead


@pytest.mark.parametrize("target", ALL)
def test_bundle_is_installed_then_verified_before_the_runtime(rendered: dict[str, Rendered], target: str) -> None:
    pod = rendered[target].pod
    assert [c["name"] for c in pod["initContainers"]] == ["bundle-install", "bundle-verify"]
    install, verify = pod["initContainers"]
    assert install["image"].startswith("kiosk-edge-bundle:")
    assert install["command"][-2:] == ["install", "/bundle"]
    assert verify["image"] == rendered[target].container("runtime")["image"]
    assert verify["command"][-1] == "activate"
    assert all(c.get("restartPolicy") != "Always" for c in pod["initContainers"])  # not sidecars: they finish


@pytest.mark.parametrize("target", ALL)
def test_both_containers_share_the_volume_and_the_settings(rendered: dict[str, Rendered], target: str) -> None:
    containers = rendered[target].pod["containers"]
    names = [c["name"] for c in containers]
    assert names == (["runtime"] if target == "x86-no-sync" else ["runtime", "sync"])
    for container in containers:
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts[PV_MOUNT] == "data"
        assert container["envFrom"] == containers[0]["envFrom"]
        assert container["command"][:3] == ["edge", "--env-file", "/etc/kiosk/secrets/kiosk.env"]
    assert containers[0]["command"][3:] == ["serve"]
    if len(containers) > 1:
        assert containers[1]["command"][3:] == ["sync", "run"]


@pytest.mark.parametrize("target", ALL)
def test_network_policy(rendered: dict[str, Rendered], target: str) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in rendered[target].all("NetworkPolicy")}
    main = policies["kiosk-edge"]
    assert main["policyTypes"] == ["Ingress", "Egress"] and main["egress"] == []  # egress denied by default
    (ingress,) = main["ingress"]
    assert all("ipBlock" in peer for peer in ingress["from"])  # the kiosks, not the world
    if target == "x86-no-sync":
        assert set(policies) == {"kiosk-edge"}
        return
    central = policies["kiosk-edge-central"]
    assert central["policyTypes"] == ["Egress"]
    https, dns = central["egress"]
    assert [p["port"] for p in https["ports"]] == [443] and all("ipBlock" in peer for peer in https["to"])
    assert {p["port"] for p in dns["ports"]} == {53}
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_no_sync_component(rendered: dict[str, Rendered]) -> None:
    assert rendered["x86-no-sync"].configmap("kiosk-edge-config")["KIOSK_CENTRAL_URL"] == ""


# --- node kinds ------------------------------------------------------------------------------------------


def test_x86_overlay(rendered: dict[str, Rendered]) -> None:
    pod = rendered["x86"].pod
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    assert "runtimeClassName" not in pod
    assert rendered["x86"].all("RuntimeClass") == []


def test_jetson_overlay(rendered: dict[str, Rendered]) -> None:
    jetson = rendered["jetson"]
    pod = jetson.pod
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert pod["runtimeClassName"] == "nvidia"
    runtime_class = jetson.find("RuntimeClass", "nvidia")
    assert runtime_class["handler"] == "nvidia"
    assert "namespace" not in runtime_class["metadata"]  # cluster-scoped
    runtime = jetson.container("runtime")
    assert {e["name"]: e["value"] for e in runtime["env"]}["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert runtime["image"].endswith("-jetson")
    # The GPU is not requested by default: the device plugin is unreliable on Orin.
    assert all("nvidia.com/gpu" not in c["resources"].get("limits", {}) for c in jetson.all_containers())
    assert jetson.configmap("kiosk-edge-config")["KIOSK_LLM_GPU_LAYERS"] == "-1"
    # Shared CPU/GPU memory: the process limit is below x86's, the GPU's share is reserved at the node.
    x86_limit = quantity(rendered["x86"].container("runtime")["resources"]["limits"]["memory"])
    assert quantity(runtime["resources"]["limits"]["memory"]) < x86_limit


def test_gpu_resource_component(rendered: dict[str, Rendered]) -> None:
    runtime = rendered["jetson-gpu"].container("runtime")
    assert runtime["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (
        runtime["resources"]["limits"]["memory"]
        == rendered["jetson"].container("runtime")["resources"]["limits"]["memory"]
    )


def test_store_example_overrides_the_store_values(rendered: dict[str, Rendered]) -> None:
    store = rendered["store-example"].configmap("kiosk-edge-config")
    base = rendered["x86"].configmap("kiosk-edge-config")
    assert store["KIOSK_STORE_ID"] != base["KIOSK_STORE_ID"]
    assert set(base) <= set(store)
    # The Deployment points at the store's generated Secret, not the base's placeholders.
    (volume,) = [v for v in rendered["store-example"].pod["volumes"] if v["name"] == "secrets"]
    (secret,) = rendered["store-example"].all("Secret")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
