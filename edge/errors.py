"""The core's errors: each carries its HTTP status and code, so the API layer renders any of them in
its family's envelope (Dify or OpenAI) without knowing the core, and the core never imports the API."""

from __future__ import annotations


class EdgeError(Exception):
    """Base of the runtime's errors; `message` is safe to show to a kiosk."""

    status = 500
    code = "internal_server_error"
    openai_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}


class BadInput(EdgeError):
    """The request is well-formed but its content cannot be answered (Dify's 400 `invalid_param`)."""

    status, code, openai_type = 400, "invalid_param", "invalid_request_error"


class Busy(EdgeError):
    """The box cannot take this work now (LLM queue full, shutting down); retry after `Retry-After`."""

    status, code, openai_type = 503, "service_unavailable", "server_error"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
