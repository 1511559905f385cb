"""Read and verify model bundles.

A bundle is a directory with `manifest.json` at its root and one sub-directory per component
(`intent/`, `embedder/`, `llm/`). Each component also carries its own `component.json` (the
fragment `quantize` wrote), so a single component can be loaded and verified on its own.
Nothing is loaded before every listed file has been checked against its sha256 and size: a box
must never answer customers from a half-copied or tampered model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
COMPONENT_NAME = "component.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


class BundleError(Exception):
    """A bundle or component is missing, malformed, or fails its checksums."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """The manifest entry of one file: its sha256 and size in bytes."""
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"{path} is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a JSON object")
    return data


def _object(value: Any, where: str) -> dict[str, Any]:
    """`value` if it is a JSON object; a hand-edited manifest with a list or a string there is refused."""
    if not isinstance(value, dict):
        raise BundleError(f"{where} must be a JSON object, not {type(value).__name__}")
    return value


def _fragment(fragment: Any, where: str) -> dict[str, Any]:
    """A component's manifest entry, checked in shape: `files` maps each name to {sha256, size}."""
    fragment = _object(fragment, where)
    for name, entry in _object(fragment.get("files", {}), f"{where}: files").items():
        _object(entry, f"{where}: files[{name!r}]")
    return fragment


def verify_files(root: Path, files: dict[str, Any]) -> None:
    """Check every listed file under `root` against its recorded size and sha256."""
    if not files:
        raise BundleError(f"{root}: the manifest lists no files")
    for name, entry in files.items():
        path = root / name
        if not path.is_file():
            raise BundleError(f"{path} is listed in the manifest but missing")
        size = path.stat().st_size
        if size != entry.get("size"):
            raise BundleError(f"{path} is {size} bytes, the manifest says {entry.get('size')}")
        actual = sha256_file(path)
        if actual != entry.get("sha256"):
            raise BundleError(
                f"{path} fails its checksum: sha256 {actual[:12]}…, the manifest says {str(entry.get('sha256'))[:12]}…"
            )


@dataclass(frozen=True)
class Component:
    """One verified component: its directory and its manifest fragment."""

    name: str
    path: Path
    fragment: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.fragment.get("kind", self.name))

    def file(self, name: str) -> Path:
        if name not in self.fragment.get("files", {}):
            raise BundleError(f"component {self.name!r} has no file {name!r} in its manifest")
        return self.path / name

    def config(self, name: str) -> dict[str, Any]:
        """A JSON file of the component, read only if the manifest lists (and so verified) it."""
        return _read_json(self.file(name))


def load_component(path: Path, *, verify: bool = True) -> Component:
    """Read a component directory on its own, through its `component.json`."""
    path = Path(path)
    fragment = _fragment(_read_json(path / COMPONENT_NAME), str(path / COMPONENT_NAME))
    if verify:
        verify_files(path, fragment.get("files", {}))
    return Component(name=str(fragment.get("kind", path.name)), path=path, fragment=fragment)


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    components: dict[str, Component]

    def component(self, name: str) -> Component:
        try:
            return self.components[name]
        except KeyError:
            have = ", ".join(sorted(self.components)) or "none"
            raise BundleError(f"bundle {self.path} has no {name!r} component (it has: {have})") from None


def load_bundle(path: Path, *, verify: bool = True) -> Bundle:
    """Read `manifest.json` and verify every component it lists before anything is loaded."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle directory {path} does not exist")
    manifest = _read_json(path / MANIFEST_NAME)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path / MANIFEST_NAME}: format_version {version!r}, expected {FORMAT_VERSION}")
    components: dict[str, Component] = {}
    where = str(path / MANIFEST_NAME)
    for name, entry in _object(manifest.get("components", {}), f"{where}: components").items():
        fragment = _fragment(entry, f"{where}: components[{name!r}]")
        component_dir = path / str(fragment.get("path", name))
        if verify:
            verify_files(component_dir, fragment.get("files", {}))
        components[name] = Component(name=name, path=component_dir, fragment=fragment)
    if not components:
        raise BundleError(f"{path / MANIFEST_NAME} lists no components")
    return Bundle(path=path, manifest=manifest, components=components)
