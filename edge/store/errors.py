"""Storage errors, worded as Dify words them so the API layer can pass `message` straight through.

Each class carries the HTTP status and Dify error code it maps to (spec §1.3), so one handler per API
family can turn any `StoreError` into `{code, message, status}` without a lookup table.
"""

from __future__ import annotations

CONVERSATION_NOT_EXISTS = "Conversation Not Exists."
LAST_CONVERSATION_NOT_EXISTS = "Last Conversation Not Exists."
FIRST_MESSAGE_NOT_EXISTS = "First Message Not Exists."
MESSAGE_NOT_EXISTS = "Message Not Exists."


class StoreError(Exception):
    """Base of every storage error; `message` is safe to show to a kiosk."""

    status: int = 500
    code: str = "internal_server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(StoreError):
    """The row is missing, deleted, or belongs to another user (all three must look the same)."""

    status = 404
    code = "not_found"


class InvalidParam(StoreError):
    """The request is well-formed but not acceptable (Dify's 400 `invalid_param`)."""

    status = 400
    code = "invalid_param"


class Conflict(StoreError):
    """The row moved on meanwhile (a hand-off another colleague claimed first); `message` says how."""

    status = 409
    code = "conflict"
