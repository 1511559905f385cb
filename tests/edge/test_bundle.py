import json
from pathlib import Path

import pytest

from edge.bundle import BundleError, load_bundle, load_component, sha256_file
from quantize.bundle import publish, staging_dir, write_component, write_manifest


def make_component(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    (folder / "config.json").write_text('{"a": 1}')
    write_component(folder, "test", ["weights.bin", "config.json"], note="made in a test")
    return folder


def test_component_roundtrip(tmp_path: Path) -> None:
    component = load_component(make_component(tmp_path / "c"))
    assert component.kind == "test"
    assert component.fragment["files"]["weights.bin"]["size"] == 2000
    assert component.fragment["files"]["weights.bin"]["sha256"] == sha256_file(tmp_path / "c" / "weights.bin")
    assert component.config("config.json") == {"a": 1}


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    folder = make_component(tmp_path / "c")
    data = bytearray((folder / "weights.bin").read_bytes())
    data[10] ^= 0xFF
    (folder / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="fails its checksum"):
        load_component(folder)


def test_truncated_and_missing_files_are_refused(tmp_path: Path) -> None:
    folder = make_component(tmp_path / "c")
    (folder / "weights.bin").write_bytes(b"\x00")
    with pytest.raises(BundleError, match="bytes, the manifest says"):
        load_component(folder)
    (folder / "weights.bin").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_component(folder)


def test_unlisted_file_cannot_be_read_through_component(tmp_path: Path) -> None:
    component = load_component(make_component(tmp_path / "c"))
    with pytest.raises(BundleError, match="no file"):
        component.file("other.json")


def test_bundle_manifest_verifies_every_component(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    make_component(bundle / "one")
    make_component(bundle / "two")
    manifest = write_manifest(bundle, "t", {"one": "one", "two": "two"})
    assert set(manifest["components"]) == {"one", "two"}
    assert set(load_bundle(bundle).components) == {"one", "two"}
    (bundle / "two" / "config.json").write_text('{"a": 2}')
    with pytest.raises(BundleError, match=r"config\.json"):
        load_bundle(bundle)


@pytest.mark.parametrize("content", ["not json", "[1, 2]", json.dumps({"format_version": 99, "components": {}})])
def test_malformed_manifest_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(BundleError):
        load_bundle(tmp_path)


def test_missing_bundle_dir(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")


def test_publish_replaces_atomically_and_staging_is_cleaned(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with staging_dir(target) as staging:
        (staging / "new.txt").write_text("new")
        publish(staging, target)
    assert (target / "new.txt").read_text() == "new"
    assert not (target / "old.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), staging_dir(target) as staging:
        (staging / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash mid-build")
    assert list(tmp_path.iterdir()) == []


def shaped_bundle(root: Path, change: str) -> Path:
    """A valid two-file bundle whose manifest is then hand-edited: `components` or `files` made a list."""
    make_component(root / "intent")
    manifest = write_manifest(root, "t", {"intent": "intent"})
    if change == "components":
        manifest["components"] = list(manifest["components"].values())
    elif change == "files":
        component = manifest["components"]["intent"]
        component["files"] = [{"name": name, **entry} for name, entry in component["files"].items()]
    else:
        manifest["components"]["intent"]["files"]["weights.bin"] = "sha256:…"
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.mark.parametrize("change", ["components", "files", "entry"])
@pytest.mark.parametrize("verify", [True, False])
def test_manifest_of_the_wrong_shape_is_refused(tmp_path: Path, change: str, verify: bool) -> None:
    with pytest.raises(BundleError, match="must be a JSON object"):
        load_bundle(shaped_bundle(tmp_path / "b", change), verify=verify)


def test_component_json_with_a_files_list_is_refused(tmp_path: Path) -> None:
    folder = make_component(tmp_path / "c")
    fragment = json.loads((folder / "component.json").read_text())
    fragment["files"] = list(fragment["files"])
    (folder / "component.json").write_text(json.dumps(fragment))
    with pytest.raises(BundleError, match=r"component\.json: files must be a JSON object, not list"):
        load_component(folder)


@pytest.mark.parametrize("change", ["components", "files"])
@pytest.mark.parametrize("command", ["verify", "classify", "serve"])
def test_edge_commands_refuse_a_misshapen_manifest_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str, command: str
) -> None:
    from click.testing import CliRunner

    from edge.cli import main

    bundle = shaped_bundle(tmp_path / "b", change)
    monkeypatch.setenv("KIOSK_BUNDLE_DIR", str(bundle))
    monkeypatch.setenv("KIOSK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KIOSK_APP_KEYS", '["app-test-key-0123456789"]')
    args = {"verify": ["verify", str(bundle)], "classify": ["classify", "hello"], "serve": ["serve"]}[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert result.stderr.count("\n") == 1 and f"{change} must be a JSON object, not list" in result.stderr
