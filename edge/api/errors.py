"""One exception hierarchy with HTTP status and code, rendered in each API family's own envelope.

Dify clients expect `{code, message, status}`; OpenAI clients expect `{"error": {message, type,
param, code}}`. The family is chosen by the route, so a kiosk never sees the other API's shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge.errors import Busy, EdgeError
from edge.store.db import is_busy
from edge.store.disk import StorageFull, is_disk_full
from edge.store.errors import StoreError

OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")


class ApiError(EdgeError):
    """An error of the API layer itself; the core's own errors (`EdgeError`) render the same way."""


class InvalidParam(ApiError):
    status, code, openai_type = 400, "invalid_param", "invalid_request_error"


class Unauthorized(ApiError):
    status, code, openai_type = 401, "unauthorized", "invalid_request_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="api"'})


class Forbidden(ApiError):
    status, code, openai_type = 403, "forbidden", "invalid_request_error"


class NotFound(ApiError):
    status, code, openai_type = 404, "not_found", "invalid_request_error"


class PayloadTooLarge(ApiError):
    # werkzeug's RequestEntityTooLarge, snake-cased as Dify's envelope does for framework errors (spec §1.3)
    status, code, openai_type = 413, "request_entity_too_large", "invalid_request_error"


class UnsupportedMediaType(ApiError):
    status, code, openai_type = 415, "unsupported_media_type", "invalid_request_error"


class TooManyRequests(ApiError):
    status, code, openai_type = 429, "too_many_requests", "rate_limit_error"


class Overloaded(ApiError):
    status, code, openai_type = 503, "service_unavailable", "server_error"


def is_openai(request: Request) -> bool:
    return request.url.path.startswith(OPENAI_PATHS)  # exact routes: /v1/chat-messages is Dify


def _printable(text: str | None) -> str | None:
    """Lone surrogates (from `\\ud800` in a client's JSON) cannot be encoded: they would turn any error into a 500."""
    return None if text is None else text.encode("utf-8", "replace").decode("utf-8")


def envelope(error: EdgeError, openai: bool) -> dict[str, Any]:
    message, param = _printable(error.message), _printable(error.param)
    if openai:
        return {"error": {"message": message, "type": error.openai_type, "param": param, "code": error.code}}
    body: dict[str, Any] = {"code": error.code, "message": message, "status": error.status}
    if param:
        body["params"] = param
    return body


def error_response(request: Request, error: EdgeError) -> JSONResponse:
    return JSONResponse(envelope(error, is_openai(request)), status_code=error.status, headers=error.headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ())][1:]  # drop "body"/"query"/"path", keep a field `query`
    param = ".".join(location) or None
    if first.get("type") == "json_invalid" or (first.get("type") == "missing" and param is None):
        return "Invalid JSON payload received or JSON payload is empty.", None
    if first.get("type") == "missing":
        return f"{param} is required", param
    return f"{param}: {first.get('msg', 'invalid value')}" if param else str(first.get("msg")), param


def _declares_non_json_body(request: Request) -> bool:
    if request.method not in ("POST", "PUT", "PATCH"):
        return False
    declared = request.headers.get("content-type")
    if not declared:
        return False
    media = declared.split(";", 1)[0].strip().lower()
    return media != "application/json" and not media.endswith("+json")


def dify_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI with the errors it really sends: FastAPI documents 422 for bad input, the app
    answers 400 (`invalid_param`, Dify's envelope) -- clients and schemathesis should see that."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components["Error"] = {
        "type": "object",
        "required": ["code", "message", "status"],
        "properties": {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "status": {"type": "integer"},
            "params": {"type": "string"},
        },
    }
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses["400"] = {
                    "description": "Invalid parameter (`invalid_param`)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
    app.openapi_schema = schema
    return schema


def from_store_error(exc: StoreError) -> ApiError:
    """Storage errors already carry Dify's status, code and wording; keep them as they are."""
    error = ApiError(exc.message)
    error.status, error.code = exc.status, exc.code
    error.openai_type = "invalid_request_error" if exc.status < 500 else "server_error"
    return error


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, leaves in its family's envelope; never a bare 500 page."""

    @app.exception_handler(EdgeError)
    async def _api_error(request: Request, exc: EdgeError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return error_response(request, from_store_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if _declares_non_json_body(request):  # as Dify (werkzeug): a JSON endpoint refuses other bodies with 415
            return error_response(request, UnsupportedMediaType("Content-Type must be application/json."))
        message, param = _validation_message(exc)
        return error_response(request, InvalidParam(message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        by_status: dict[int, type[ApiError]] = {
            400: InvalidParam,  # FastAPI's "There was an error parsing the body": bad UTF-8, too deep, too long an int
            404: NotFound,
            405: InvalidParam,
            413: PayloadTooLarge,
            415: UnsupportedMediaType,
        }
        error_type = by_status.get(exc.status_code, ApiError)
        error = error_type(str(exc.detail))
        if exc.status_code == 405:
            error.status, error.code = 405, "method_not_allowed"
        return error_response(request, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_disk_full(exc):  # SQLITE_FULL or ENOSPC from any write outside the turn writer: 503, not 500
            request.app.state.log.error("data volume full on %s: %s", request.url.path, exc)
            return error_response(request, StorageFull())
        if is_busy(exc):  # another process (the sync agent) held the write lock past the wait: retry soon
            request.app.state.log.warning("database busy on %s: %s", request.url.path, exc)
            return error_response(request, Busy("The box is busy saving; please try again in a moment.", 1))
        request.app.state.log.exception("unhandled error on %s", request.url.path)
        return error_response(request, ApiError("Internal Server Error, please contact support."))
