"""Dify's error envelope, `{code, message, status}` (+ `params`), and the exceptions that carry it.

Messages are Dify's own wording (§1.2–1.3 of the spec), because clients and operators read them.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="api"'}
NO_SUCH_URL = (
    "The requested URL was not found on the server. If you entered the URL manually please check your spelling "
    "and try again."
)
NOT_JSON = "Did not attempt to load JSON data because the request Content-Type was not 'application/json'."
EMPTY_JSON = "Invalid JSON payload received or JSON payload is empty."
INTERNAL = "Internal Server Error, please contact support."
WRONG_MODE = "Please check if your app mode matches the right API route."


class DifyError(Exception):
    """An error with its HTTP status and Dify code; rendered by one handler, in one shape."""

    status = 500
    code = "internal_server_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        params: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status
        self.params = params
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.params:
            body["params"] = self.params
        return body

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class InvalidParam(DifyError):
    """What any `ValueError` (pydantic included) becomes in Dify."""

    status, code = 400, "invalid_param"


class BadRequest(DifyError):
    status, code = 400, "bad_request"


class Unauthorized(DifyError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers=dict(WWW_AUTHENTICATE))


class Forbidden(DifyError):
    status, code = 403, "forbidden"


class NotFound(DifyError):
    status, code = 404, "not_found"


class MethodNotAllowed(DifyError):
    status, code = 405, "method_not_allowed"


class UnsupportedMediaType(DifyError):
    status, code = 415, "unsupported_media_type"


class TooManyRequests(DifyError):
    status, code = 429, "too_many_requests"


def default_error(status: int) -> DifyError:
    """The error Dify would send for a bare status: used by fault injection when only a status is given."""
    known: dict[int, DifyError] = {
        400: InvalidParam("Invalid parameter."),
        401: Unauthorized("Access token is invalid"),
        403: Forbidden("The app's API service has been disabled."),
        404: NotFound(NO_SUCH_URL),
        429: TooManyRequests("Too many requests. Please try again later."),
    }
    return known.get(status) or DifyError(INTERNAL if status == 500 else "Error", status=status)
