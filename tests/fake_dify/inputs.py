"""An app's input form applied to a request's `inputs`, with Dify's messages (`_validate_inputs`)."""

from __future__ import annotations

from typing import Any

from tests.fake_dify.errors import InvalidParam

TEXT_KINDS = ("text-input", "paragraph", "select")


def validate_inputs(form: list[dict[str, Any]], inputs: dict[str, Any]) -> dict[str, Any]:
    """Keep only the form's variables; refuse missing required ones, wrong types and over-long text."""
    clean: dict[str, Any] = {}
    for item in form:
        ((kind, config),) = item.items()
        name = config["variable"]
        value = inputs.get(name)
        if value is None or value == "":
            if config.get("required"):
                raise InvalidParam(f"{name} is required in input form")
            clean[name] = config.get("default") or ""
            continue
        if kind in TEXT_KINDS:
            if not isinstance(value, str):
                raise InvalidParam(f"{name} in input form must be a string")
            value = value.replace("\x00", "")
            options = config.get("options")
            if kind == "select" and options and value not in options:
                raise InvalidParam(f"{name} in input form must be one of the following: {options}")
            max_length = config.get("max_length")
            if max_length and len(value) > max_length:
                raise InvalidParam(f"{name} in input form must be less than {max_length} characters")
        elif kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidParam(f"{name} in input form must be a valid number")
        clean[name] = value
    return clean
