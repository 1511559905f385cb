"""Dify's OpenAPI document as JSON Schema validators, to hold the fake to the real contract.

The approach of `tests/edge/api/test_contract.py` (not imported: that module is a heavy test module
owned elsewhere), as a small library: every response is checked as the document is written, and
with every documented property required too (the document marks almost nothing required, so "as
written" alone would pass `{}`). `NOT_SENT_BY_DIFY` lists fields the document declares but Dify's
code leaves out of that particular response.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

_ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = (  # the copy vendored with the contract tests; the shared spec of record beside the repository
    _ROOT / "tests" / "edge" / "api" / "data" / "dify_openapi_service.json",
    _ROOT.parent / "shared" / "specs" / "dify" / "openapi_service.json",
)
NOT_SENT_BY_DIFY: dict[str, set[str]] = {
    "StreamEventChatError": {"task_id"},  # spec §2.1 and §9.7: an error event has no task_id
    "StreamEventError": {"task_id"},  # a workflow stream's error event neither
    # "Only present in streaming workflow_finished events", says the document itself
    "WorkflowBlockingResponse": {"created_by", "exceptions_count", "files"},
}
DIFY_ERROR = {
    "type": "object",
    "required": ["code", "message", "status"],
    "properties": {
        "code": {"type": "string", "minLength": 1},
        "message": {"type": "string"},  # the document's own no_messages example has an empty one
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "params": {"type": "string"},
    },
}
_OAS_ONLY = frozenset({"nullable", "discriminator", "example", "xml", "externalDocs"})
_LITERAL = frozenset({"enum", "default", "const", "examples", "required"})
_FORMATS = jsonschema.FormatChecker(formats=["uuid"])


@_FORMATS.checks("decimal", raises=(InvalidOperation, TypeError))
def _is_decimal(instance: object) -> bool:
    return not isinstance(instance, str) or Decimal(instance).is_finite()


@_FORMATS.checks("int64")
def _is_int64(instance: object) -> bool:
    return not isinstance(instance, int) or -(2**63) <= instance < 2**63


def _problems(validator: Any, instance: Any) -> list[str]:
    found = []
    for error in validator.iter_errors(instance):
        where = "/".join(str(part) for part in error.absolute_path) or "<root>"
        detail = "; ".join(sorted({sub.message for sub in error.context or []}))
        found.append(f"{where}: {error.message}" + (f" ({detail})" if detail else ""))
    return found


class DifySpec:
    """Dify's OpenAPI 3.0 document, its schemas turned into JSON Schema validators on demand."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self._validators: dict[tuple[str, bool], Any] = {}

    def resolve(self, ref: str) -> Any:
        node: Any = self.document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def operation(self, method: str, app_path: str) -> dict[str, Any] | None:
        return self.document["paths"].get(app_path.removeprefix("/v1"), {}).get(method.lower())

    def response_ref(self, method: str, template: str, status: str = "200") -> str:
        """Where the document keeps the JSON schema of this operation's response (`template` as documented)."""
        operation = self.operation(method, template)
        assert operation is not None, f"{method.upper()} {template} is not in the document"
        response = operation["responses"][status]
        path = template.removeprefix("/v1").replace("~", "~0").replace("/", "~1")
        prefix = f"#/paths/{path}/{method.lower()}/responses/{status}"
        if "$ref" in response:
            prefix, response = response["$ref"], self.resolve(response["$ref"])
        schema = response["content"]["application/json"]["schema"]
        return schema.get("$ref", f"{prefix}/content/application~1json/schema")

    def event_ref(self, event: str, family: str = "ChunkChatEvent") -> str:
        """The schema of one SSE event, from the document's own discriminator (`ChunkWorkflowEvent` for workflows)."""
        mapping = self.document["components"]["schemas"][family]["discriminator"]["mapping"]
        assert event in mapping, f"event {event!r} is not a {family} of the document"
        return mapping[event]

    def check(self, instance: Any, ref: str, *, every_field: bool) -> list[str]:
        key = (ref, every_field)
        if key not in self._validators:
            optional = NOT_SENT_BY_DIFY.get(ref.rsplit("/", 1)[-1], set())
            schema = self._convert({"$ref": ref}, every_field, optional, ())
            jsonschema.Draft202012Validator.check_schema(schema)
            self._validators[key] = jsonschema.Draft202012Validator(schema, format_checker=_FORMATS)
        return _problems(self._validators[key], instance)

    def _convert(self, node: Any, every_field: bool, optional: set[str], seen: tuple[str, ...]) -> Any:
        """OpenAPI 3.0 → JSON Schema: $refs inlined, `nullable` as a null alternative, OAS-only keys dropped."""
        if isinstance(node, list):
            return [self._convert(item, every_field, optional, seen) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            if node["$ref"] in seen:
                return {}
            out = self._convert(self.resolve(node["$ref"]), every_field, optional, (*seen, node["$ref"]))
        else:
            out = {}
            for key, value in node.items():
                if key in _LITERAL:
                    out[key] = value
                elif key == "properties":
                    out[key] = {name: self._convert(sub, every_field, optional, seen) for name, sub in value.items()}
                elif key not in _OAS_ONLY:
                    out[key] = self._convert(value, every_field, optional, seen)
            if every_field and "properties" in node:
                out["required"] = sorted((set(out.get("required", [])) | set(node["properties"])) - optional)
        return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") is True else out


@cache
def dify_spec() -> DifySpec:
    path = next((p for p in SPEC_FILES if p.is_file()), SPEC_FILES[0])
    return DifySpec(json.loads(path.read_text(encoding="utf-8")))


def dify_error_problems(status: int, body: Any) -> list[str]:
    """An error in Dify's envelope, whose `status` repeats the HTTP status."""
    problems = _problems(jsonschema.Draft202012Validator(DIFY_ERROR), body)
    if isinstance(body, dict) and body.get("status") != status:
        problems.append(f"status {body.get('status')!r} is not the HTTP status {status}")
    return problems


def sse_frames(text: str) -> list[dict[str, Any] | None]:
    """Data events as dicts and `event: ping` as None; any other framing is an assertion error."""
    frames: list[dict[str, Any] | None] = []
    assert text.endswith("\n\n") or not text, f"a stream must end on a frame boundary: {text[-80:]!r}"
    for block in text.split("\n\n"):
        if not block:
            continue
        if block == "event: ping":
            frames.append(None)
            continue
        assert block.startswith("data: ") and "\n" not in block, f"not a Dify SSE frame: {block!r}"
        frames.append(json.loads(block.removeprefix("data: ")))
    return frames
