"""Write bundle components and manifests, and publish them atomically.

Everything is built in a staging directory beside the target and renamed into place only once it
is complete and has passed its gate, so a crash or a failed gate never leaves a half-written or
unverified model where the box (or `make run`) would pick it up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.bundle import COMPONENT_NAME, FORMAT_VERSION, MANIFEST_NAME, file_entry


class NotPublished(Exception):
    """A gate refused the build: nothing was published, the report was kept in `report_dir`."""

    def __init__(self, reason: str, report_dir: Path) -> None:
        super().__init__(reason)
        self.reason = reason
        self.report_dir = report_dir


def keep_rejected_reports(staging: Path, target: Path, names: tuple[str, ...] = ("report.json", "report.md")) -> Path:
    """Copy only the reports of a refused build to `<target>.rejected/`, for the operator to read."""
    rejected = target.with_name(target.name + ".rejected")
    if rejected.exists():
        shutil.rmtree(rejected)
    rejected.mkdir(parents=True)
    for name in names:
        shutil.copyfile(staging / name, rejected / name)
    return rejected


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_component(component_dir: Path, kind: str, files: list[str], **details: Any) -> dict[str, Any]:
    """Fingerprint `files` (relative to `component_dir`) and write the component's manifest fragment."""
    fragment: dict[str, Any] = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "created_at": now_iso(),
        "files": {name: file_entry(component_dir / name) for name in files},
        **details,
    }
    write_json(component_dir / COMPONENT_NAME, fragment)
    return fragment


def write_manifest(bundle_dir: Path, name: str, components: dict[str, str]) -> dict[str, Any]:
    """Gather the fragments of `components` (name → sub-directory) into the bundle's manifest."""
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "created_at": now_iso(),
        "components": {},
    }
    for component, subdir in components.items():
        fragment = json.loads((bundle_dir / subdir / COMPONENT_NAME).read_text(encoding="utf-8"))
        manifest["components"][component] = {"path": subdir, **fragment}
    write_json(bundle_dir / MANIFEST_NAME, manifest)
    return manifest


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A fresh directory beside `target`, removed on the way out unless published."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the box's non-root user must read the bundle
    try:
        yield staging
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, target: Path) -> None:
    """Move a finished staging directory to `target`, replacing what was there."""
    previous = target.with_name(f".{target.name}.previous")
    if previous.exists():
        shutil.rmtree(previous)
    if target.exists():
        os.replace(target, previous)
    os.replace(staging, target)
    if previous.exists():
        shutil.rmtree(previous, ignore_errors=True)
