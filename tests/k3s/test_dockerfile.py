"""The Dockerfiles, read for the rules no engine runs here to check (no Docker engine on this machine):
pinned bases, a torch-free non-root runtime stage, a portable llama.cpp build, and agreement with the
manifests (user, port, paths)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.k3s.conftest import PV_MOUNT, ROOT, Rendered


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]  # global ARG defaults (before the first FROM)
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        (found,) = [s for s in self.stages if s.name == name]
        return found

    def resolve(self, value: str) -> str:
        for _ in range(5):
            value = re.sub(r"\$\{(\w+)\}", lambda m: self.args.get(m.group(1), m.group(0)), value)
        return value


def parse(path: Path) -> Dockerfile:
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, flags=re.IGNORECASE)
            assert match, line
            stages.append(Stage(match.group(1), match.group(2)))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
        elif keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default.strip('"')
    return Dockerfile(args, stages)


RUNTIME = parse(ROOT / "Dockerfile")
BUNDLE = parse(ROOT / "k3s" / "bundle" / "Dockerfile")


def stage_arg(stage: Stage, name: str) -> str:
    (default,) = [a.partition("=")[2].strip('"') for a in stage.all("ARG") if a.partition("=")[0] == name]
    return default


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in stage.all("ENV"):
        env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


@pytest.mark.parametrize("dockerfile", [RUNTIME, BUNDLE], ids=["runtime", "bundle"])
def test_bases_are_pinned(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages:
        image = dockerfile.resolve(stage.base)
        if image in {s.name for s in dockerfile.stages}:
            continue
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and re.fullmatch(r"\d+\.\d+\.\d+[\w.-]*", tag), f"{stage.base} -> {image}: not a pinned version"


def test_runtime_stage_runs_as_the_pods_user(rendered: dict[str, Rendered]) -> None:
    final = RUNTIME.stages[-1]
    assert final.name == "runtime"
    (user,) = final.all("USER")
    uid, _, gid = user.partition(":")
    pod = rendered["x86"].pod["securityContext"]
    assert (int(uid), int(gid)) == (pod["runAsUser"], pod["runAsGroup"])  # numeric: runAsNonRoot can check it
    assert int(uid) >= 10000
    (bundle_user,) = BUNDLE.stages[-1].all("USER")
    assert bundle_user == user


def test_runtime_image_has_no_torch() -> None:
    """The image installs the package's core dependencies only (pyproject keeps torch in `quantize`),
    copies no quantize/ code, and its build fails if torch got in anyway."""
    for stage in RUNTIME.stages:
        for keyword, args in stage.instructions:
            assert "torch" not in args.replace("! pip show torch", ""), (keyword, args)
            assert "quantize" not in args.replace("rm -f /opt/venv/bin/quantize", ""), (keyword, args)
    (install,) = [a for a in RUNTIME.stage("builder").all("RUN") if "pip install ." in a]
    assert "pip install . " in install + " " and "! pip show torch" in install  # no extras, and checked
    core = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert not [d for d in core if re.match(r"(torch|transformers|optimum|accelerate)\b", d)]


def removed_scripts(stage: Stage) -> set[str]:
    return {name for args in stage.all("RUN") for name in re.findall(r"rm -f /opt/venv/bin/([\w-]+)", args)}


def test_the_image_installs_only_commands_it_can_run() -> None:
    """pyproject's scripts whose package is not in the build context (`quantize`) would be installed
    anyway and fail with ModuleNotFoundError: the build removes them, right after installing, and keeps
    `edge`, which it runs once."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    copied = {
        source.rstrip("/")
        for args in RUNTIME.stage("builder").all("COPY")
        for source in args.split()[:-1]
        if not source.startswith("--")
    }
    shipped = {name for name, target in scripts.items() if target.split(".")[0].split(":")[0] in copied}
    assert shipped == {"edge"}
    assert removed_scripts(RUNTIME.stage("builder")) == set(scripts) - shipped
    (install,) = [a for a in RUNTIME.stage("builder").all("RUN") if "pip install ." in a]
    assert install.index("pip install .") < install.index("rm -f /opt/venv/bin/") < install.index("edge --help")
    assert RUNTIME.stages[-1].all("ENTRYPOINT") == ['["edge"]']


def test_apt_leaves_neither_lists_nor_archives() -> None:
    """In the layer that downloads them: the python bases clean the archives on their own (docker-clean),
    the L4T CUDA bases of the Jetson build do not."""
    installs = [args for stage in RUNTIME.stages for args in stage.all("RUN") if "apt-get install" in args]
    assert len(installs) == 2
    for args in installs:
        tail = args[args.rindex("apt-get install") :]
        assert "apt-get clean" in tail, args
        assert "rm -rf /var/lib/apt/lists/*" in tail and "/var/cache/apt/archives/*.deb" in tail, args


def test_llama_cpp_is_built_portable_and_pinned_like_pyproject() -> None:
    builder = RUNTIME.stage("builder")
    flags = stage_arg(builder, "LLAMA_CMAKE_ARGS").split()
    assert "-DGGML_NATIVE=OFF" in flags  # never -march=native: the build machine's CPU is not the store's
    assert {"-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON"} <= set(flags)
    assert stage_arg(builder, "LLAMA_CUDA") == "0"
    (build,) = [a for a in builder.all("RUN") if "llama-cpp-python==" in a]
    assert "-DGGML_CUDA=ON" in build and "CMAKE_CUDA_ARCHITECTURES" in build and "--no-binary llama-cpp-python" in build
    core = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    (pin,) = [d for d in core if d.startswith("llama-cpp-python")]
    assert pin == f"llama-cpp-python=={stage_arg(builder, 'LLAMA_CPP_VERSION')}"


def test_runtime_image_matches_the_manifests(rendered: dict[str, Rendered]) -> None:
    final = RUNTIME.stages[-1]
    env = env_of(final)
    config = rendered["x86"].configmap("kiosk-edge-config")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # read-only root filesystem
    assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"  # the pod's emptyDir
    for key in ("KIOSK_HOST", "KIOSK_PORT", "KIOSK_DATA_DIR", "KIOSK_BUNDLE_DIR"):
        assert env[key] == config[key], key
    assert final.all("EXPOSE") == [config["KIOSK_PORT"]]
    assert env["KIOSK_DATA_DIR"].startswith(PV_MOUNT + "/")
    assert "/opt/venv/bin" in env["PATH"]
    (healthcheck,) = final.all("HEALTHCHECK")
    assert "/healthz" in healthcheck and "--start-period=" in healthcheck
    assert final.all("ENTRYPOINT") == ['["edge"]'] and final.all("CMD") == ['["serve"]']


def dockerignore_allows(path: str) -> bool:
    allowed = False
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        if pattern == "*" or path == pattern or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


def test_copied_files_exist_and_are_in_the_build_context() -> None:
    for stage in RUNTIME.stages:
        for args in stage.all("COPY"):
            if args.startswith("--from="):
                continue
            *sources, _ = [a for a in args.split() if not a.startswith("--")]
            for source in sources:
                source = source.rstrip("/")
                assert (ROOT / source).exists(), source
                assert dockerignore_allows(source), f"{source} is excluded by .dockerignore"
    for excluded in (".venv", "models/default", "tests", "quantize", "build", "data"):
        assert not dockerignore_allows(excluded), excluded


def test_bundle_image_holds_the_bundle_where_the_init_step_reads_it(rendered: dict[str, Rendered]) -> None:
    (copy,) = BUNDLE.stages[-1].all("COPY")
    destination = copy.split()[-1]
    install = rendered["x86"].container("bundle-install")
    assert install["command"][-1] == destination == "/bundle"
    assert BUNDLE.stages[-1].all("HEALTHCHECK") == ["NONE"]


def test_the_readme_tells_podman_users_how_to_keep_the_image_whole() -> None:
    """podman builds OCI images, which drop HEALTHCHECK, unless `--format docker`; and it names images
    `localhost/…`, a name the manifests' `kiosk-edge:<tag>` (docker.io/library/…) never finds on the node."""
    assert RUNTIME.stages[-1].all("HEALTHCHECK")  # what would be lost
    readme = (ROOT / "k3s" / "README.md").read_text(encoding="utf-8")
    assert re.search(r"podman build --format docker -t kiosk-edge:", readme)
    assert "localhost/kiosk-edge" in readme
    assert re.search(r"podman save --format docker-archive docker\.io/library/kiosk-edge:", readme)
