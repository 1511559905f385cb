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
    K3S,
    OVERLAYS,
    PV_MOUNT,
    ROOT,
    SECRETS,
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
# Keys an overlay may set before the runtime has the setting (pydantic-settings ignores unknown
# environment variables). `test_pending_settings_are_still_pending` turns red when one lands: then drop
# the entry, and the notes saying it is missing (`test_no_note_calls_a_real_setting_missing`).
PENDING_SETTINGS: set[str] = set()
# Which pod needs which key: each gets only its own (`test_each_pod_holds_only_its_own_keys`).
POD_SECRETS = {
    "kiosk-edge": {"KIOSK_APP_KEYS"},
    "kiosk-edge-sync": {"KIOSK_CENTRAL_APP_KEY", "KIOSK_CENTRAL_DATASET_KEY", "KIOSK_CENTRAL_INGEST_KEY"},
}
# Keys a pod holds only when a store turns a feature on, so the shipped Secrets leave them out:
# central's chat key is the runtime's only with live escalation (KIOSK_ESCALATE, k3s/README.md); the staff
# PIN's digest the runtime's with the staff page; the webhook URL (its query holds a chat group's key) the
# sync agent's with staff alerts (KIOSK_STAFF_ALERTS).
OPTIONAL_SECRETS = {
    "kiosk-edge": {"KIOSK_CENTRAL_CHAT_KEY", "KIOSK_STAFF_PIN_DIGEST"},
    "kiosk-edge-sync": {"KIOSK_STAFF_WEBHOOK_URL"},
}


def env_name(field: str) -> str:
    return f"KIOSK_{field.upper()}"


# --- shape ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ALL)
def test_one_pod_recreated_never_two(rendered: dict[str, Rendered], target: str) -> None:
    deployments = rendered[target].all("Deployment")
    expected = {"kiosk-edge"} if target == "x86-no-sync" else {"kiosk-edge", "kiosk-edge-sync"}
    assert {d["metadata"]["name"] for d in deployments} == expected
    for deployment in deployments:
        spec = deployment["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        # No Deployment's selector picks the other's pods (an overlap would make them fight over pods).
        for other in deployments:
            if other is not deployment:
                theirs = other["spec"]["template"]["metadata"]["labels"]
                assert not spec["selector"]["matchLabels"].items() <= theirs.items()
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
    """Long-running containers' limits (both pods) add up to at most 2 GiB, leaving the rest to k3s and
    the OS; init containers run before them, one at a time."""
    containers = [c for pod in rendered[target].pods for c in pod["containers"]]
    memory = sum(quantity(c["resources"]["limits"]["memory"]) for c in containers)
    assert memory <= 2 * 2**30
    for pod in rendered[target].pods:
        for container in pod["initContainers"]:
            assert quantity(container["resources"]["limits"]["memory"]) <= 512 * 2**20
    cpu = sum(quantity(c["resources"]["requests"]["cpu"]) for c in containers)
    assert cpu <= 1.5  # schedulable on a 2-core box beside k3s


@pytest.mark.parametrize("target", ALL)
def test_hardened(rendered: dict[str, Rendered], target: str) -> None:
    for pod in rendered[target].pods:
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False  # a Service "kiosk" would inject KIOSK_PORT=tcp://...
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] >= 10000
        assert pod["securityContext"] == rendered[target].pod["securityContext"]  # one user owns the volume
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
    for pod in rendered[target].pods:
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod.get("initContainers", []) + pod["containers"]:
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
    for pod in rendered[target].pods:
        tolerations = {(t["key"], t["effect"]): t for t in pod["tolerations"]}
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


def test_pending_settings_are_still_pending() -> None:
    assert not {env_name(name) for name in FIELDS} & PENDING_SETTINGS


# Phrases that say a setting does not exist yet, around a setting's name (field or KIOSK_ variable).
MISSING_NOTE = re.compile(
    r"(?:does not have (?:that|the|this) setting|not have that setting yet|until `?edge/settings\.py`? gains|"
    r"Needs Settings\.|is ignored|PENDING_SETTINGS)",
    flags=re.IGNORECASE,
)


def test_no_note_calls_a_real_setting_missing() -> None:
    """Notes written while a setting was pending (k3s/README.md, the overlays' env files) go when it lands."""
    stale = []
    for path in [K3S / "README.md", *K3S.rglob("*.env"), *K3S.rglob("*.yaml")]:
        paragraphs = re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))
        for paragraph in paragraphs:
            if not MISSING_NOTE.search(paragraph):
                continue
            named = set(re.findall(r"KIOSK_[A-Z0-9_]+", paragraph))
            named |= {env_name(n) for n in re.findall(r"\b([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b", paragraph)}
            real = sorted(named & {env_name(name) for name in FIELDS})
            if real:
                stale.append(f"{path.relative_to(ROOT)}: {real}: {paragraph.strip()[:200]}")
    assert not stale, "\n".join(stale)


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


def test_every_secret_setting_belongs_to_one_pod() -> None:
    runtime, sync = (POD_SECRETS[pod] | OPTIONAL_SECRETS[pod] for pod in POD_SECRETS)
    assert runtime | sync == {env_name(name) for name in SECRET_FIELDS} and not runtime & sync


@pytest.mark.parametrize("target", ALL)
def test_each_pod_holds_only_its_own_keys(rendered: dict[str, Rendered], target: str) -> None:
    """The runtime serves the store LAN and runs the models on shoppers' input: it holds the app keys and
    none of central's (the dataset key can rewrite or delete the chain's knowledge bases)."""
    output = rendered[target]
    deployments = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in output.all("Deployment")}
    for name, pod in deployments.items():
        secret_names = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        (secret,) = secret_names
        assert secret.rsplit("-", 1)[0] == SECRETS[name], (name, secret)
        values = dotenv_values(stream=io.StringIO(output.secret_file(SECRETS[name])))
        assert set(values) == POD_SECRETS[name], name
        for container in pod.get("initContainers", []) + pod["containers"]:
            sources = container.get("envFrom", []) + [e.get("valueFrom", {}) for e in container.get("env", [])]
            assert not any("secretRef" in s or "secretKeyRef" in s for s in sources), container["name"]
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            if "secrets" in mounts:
                assert container["name"] in ("runtime", "sync"), container["name"]  # not the init steps
    # A store without sync has no central keys anywhere.
    if target == "x86-no-sync":
        assert [s["metadata"]["name"].rsplit("-", 1)[0] for s in output.all("Secret")] == [SECRETS["kiosk-edge"]]


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
def test_the_example_secrets_are_refused(rendered: dict[str, Rendered], target: str, tmp_path: Path) -> None:
    """The overlays ship placeholder keys: neither pod starts until a store sets real ones."""
    runtime, sync = tmp_path / "runtime.env", tmp_path / "sync.env"
    runtime.write_text(rendered[target].secret_file(SECRETS["kiosk-edge"]), encoding="utf-8")
    sync.write_text(rendered[target].secret_file(SECRETS["kiosk-edge-sync"]), encoding="utf-8")
    for command, env_file, message in (
        (["config"], runtime, "app keys must be real secrets"),
        (["serve"], runtime, "app keys must be real secrets"),
        (["config"], sync, "not a placeholder"),
        (["sync", "status"], sync, "not a placeholder"),
    ):
        result = run_edge(command, env_file, tmp_path)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert message in result.stderr, result.stderr


def test_a_store_secret_is_accepted(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    for secret in SECRETS.values():
        env_file = tmp_path / f"{secret}.env"
        env_file.write_text(rendered["store-example"].secret_file(secret), encoding="utf-8")
        result = run_edge(["config"], env_file, tmp_path)
        assert result.returncode == 0, result.stderr
        assert TEST_KEY not in result.stdout and "0123456789abcdef" not in result.stdout  # redacted


def test_placeholder_values_are_refused_by_settings() -> None:
    """The same validators the pods hit, on the base's placeholder files."""
    values = dotenv_values(ROOT / "k3s" / "base" / "runtime-secrets.env")
    with pytest.raises(ValidationError, match="real secrets"):
        Settings(app_keys=json.loads(values["KIOSK_APP_KEYS"] or "[]"))
    for key, value in dotenv_values(ROOT / "k3s" / "base" / "sync-secrets.env").items():
        with pytest.raises(ValidationError, match="placeholder"):
            Settings(**{key.removeprefix("KIOSK_").lower(): value})


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
def test_the_sync_agent_embeds_with_the_bundle_the_runtime_serves(rendered: dict[str, Rendered], target: str) -> None:
    """Its pod waits until the runtime serves its bundle image's bundle, and names that image, so a new
    bundle rolls it too (its embedder must be the one the runtime searches with)."""
    sync_pod = rendered[target].sync_pod
    if sync_pod is None:
        return
    (wait,) = sync_pod["initContainers"]
    install = rendered[target].container("bundle-install")
    assert wait["image"] == install["image"]
    assert wait["command"][-2:] == ["wait", "/bundle"]
    assert [e for e in wait["env"] if e["name"] == "BUNDLES_ROOT"] == [
        e for e in install["env"] if e["name"] == "BUNDLES_ROOT"
    ]
    assert {m["mountPath"]: m.get("readOnly", False) for m in wait["volumeMounts"]}[PV_MOUNT] is True


@pytest.mark.parametrize("target", ALL)
def test_runtime_and_sync_share_the_volume_and_the_settings(rendered: dict[str, Rendered], target: str) -> None:
    """Two pods (NetworkPolicy cannot tell containers apart), one volume and one ConfigMap."""
    output = rendered[target]
    assert [c["name"] for c in output.pod["containers"]] == ["runtime"]
    if target == "x86-no-sync":
        assert output.sync_pod is None
        return
    assert output.sync_pod is not None and [c["name"] for c in output.sync_pod["containers"]] == ["sync"]
    runtime, sync = output.container("runtime"), output.container("sync")
    claims = {
        pod["volumes"][[v["name"] for v in pod["volumes"]].index("data")]["persistentVolumeClaim"]["claimName"]
        for pod in (output.pod, output.sync_pod)
    }
    assert claims == {"kiosk-edge-data"}
    for container in (runtime, sync):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts[PV_MOUNT] == "data"
        assert container["envFrom"] == runtime["envFrom"]
        assert container["command"][:3] == ["edge", "--env-file", "/etc/kiosk/secrets/kiosk.env"]
    assert runtime["command"][3:] == ["serve"]
    assert sync["command"][3:] == ["sync", "run"]


def selects(policy: dict[str, Any], deployment: dict[str, Any]) -> bool:
    selector = policy["spec"]["podSelector"]
    assert set(selector) <= {"matchLabels"}, selector  # matchExpressions would need evaluating here
    return selector.get("matchLabels", {}).items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def allowed(output: Rendered, deployment: dict[str, Any], direction: str) -> list[dict[str, Any]]:
    """What the policies selecting the pod allow in one direction (they add up); each pod must be selected
    for both directions, so that what is not allowed is denied."""
    policies = [p["spec"] for p in output.all("NetworkPolicy") if selects(p, deployment)]
    assert any(direction in p["policyTypes"] for p in policies), (deployment["metadata"]["name"], direction)
    key = direction.lower()
    return [rule for p in policies if direction in p["policyTypes"] for rule in p.get(key, [])]


@pytest.mark.parametrize("target", ALL)
def test_network_policy(rendered: dict[str, Rendered], target: str) -> None:
    """Only the sync agent's pod reaches out (central and DNS); only the runtime's pod is reached (by the
    kiosks). NetworkPolicy selects pods: this is why the agent has its own."""
    output = rendered[target]
    runtime = output.find("Deployment", "kiosk-edge")
    assert allowed(output, runtime, "Egress") == []
    (ingress,) = allowed(output, runtime, "Ingress")
    assert all("ipBlock" in peer for peer in ingress["from"])  # the kiosks, not the world
    names = {p["metadata"]["name"] for p in output.all("NetworkPolicy")}
    if target == "x86-no-sync":
        assert names == {"kiosk-edge"}
        return
    assert names == {"kiosk-edge", "kiosk-edge-central"}
    sync = output.find("Deployment", "kiosk-edge-sync")
    assert allowed(output, sync, "Ingress") == []
    https, dns = allowed(output, sync, "Egress")
    assert [p["port"] for p in https["ports"]] == [443] and all("ipBlock" in peer for peer in https["to"])
    assert {p["port"] for p in dns["ports"]} == {53}
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    # The Service sends the kiosks to the runtime's pod only.
    service = output.find("Service", "kiosk-edge")["spec"]["selector"]
    assert service.items() <= runtime["spec"]["template"]["metadata"]["labels"].items()
    assert not service.items() <= sync["spec"]["template"]["metadata"]["labels"].items()


def test_no_sync_component(rendered: dict[str, Rendered]) -> None:
    assert rendered["x86-no-sync"].configmap("kiosk-edge-config")["KIOSK_CENTRAL_URL"] == ""


# --- node kinds ------------------------------------------------------------------------------------------


def test_x86_overlay(rendered: dict[str, Rendered]) -> None:
    for pod in rendered["x86"].pods:
        assert pod["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
        assert "runtimeClassName" not in pod
    assert rendered["x86"].all("RuntimeClass") == []


def test_jetson_overlay(rendered: dict[str, Rendered]) -> None:
    jetson = rendered["jetson"]
    pod = jetson.pod
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert pod["runtimeClassName"] == "nvidia"
    sync_pod = jetson.sync_pod
    assert sync_pod is not None and sync_pod["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert "runtimeClassName" not in sync_pod  # the agent embeds on the CPU: no GPU in its pod
    assert jetson.container("sync")["image"] == jetson.container("runtime")["image"]
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
    # Each Deployment points at the store's generated Secret, not the base's placeholders.
    example = rendered["store-example"]
    secrets = {s["metadata"]["name"] for s in example.all("Secret")}
    assert len(secrets) == 2
    for pod in example.pods:
        (volume,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
        assert volume["secret"]["secretName"] in secrets
    assert "change-me" not in example.secret_file(SECRETS["kiosk-edge"])
    assert "change-me" not in example.secret_file(SECRETS["kiosk-edge-sync"])
