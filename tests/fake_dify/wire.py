"""Request parsing as Dify does it: Bearer auth, JSON bodies, UUID path ids, page/limit arguments."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fake_dify.errors import (
    EMPTY_JSON,
    NO_SUCH_URL,
    NOT_JSON,
    WRONG_MODE,
    BadRequest,
    Forbidden,
    InvalidParam,
    NotFound,
    Unauthorized,
    UnsupportedMediaType,
)

if TYPE_CHECKING:
    from tests.fake_dify.app import FakeDifyConfig
    from tests.fake_dify.faults import Faults
    from tests.fake_dify.knowledge import Dataset
    from tests.fake_dify.state import ApiKey, App, FakeDifyState

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MISSING_HEADER = "Authorization header must be provided and start with 'Bearer'"
BAD_SCHEME = "Authorization scheme must be 'Bearer'"
INVALID_TOKEN = "Access token is invalid"
MAX_PER_PAGE = 100
ENTRY_KEY = "fake_dify.entry"  # the request's journal entry travels in the ASGI scope


@dataclass
class Ctx:
    """What every handler needs, hung on the Starlette app (no module-level state)."""

    state: FakeDifyState
    faults: Faults
    config: FakeDifyConfig
    tasks: dict[str, tuple[str, str, Any]] = field(default_factory=dict)  # streaming task → (app, user, stop)


def ctx(request: Request) -> Ctx:
    return request.app.state.ctx


def note_fault(request: Request, rule: Any, outcome: str) -> None:
    """Record in the journal that a stream fault fired on this request."""
    entry = request.scope.get(ENTRY_KEY)
    if entry is not None:
        entry.fault, entry.outcome = rule.id, outcome


def route(path: str, handler: Callable[[Request], Awaitable[Response]], method: str) -> Route:
    """`{name:uuid}` ids must look like UUIDs or the URL does not exist (werkzeug's converter: 404)."""
    uuid_names = re.findall(r"\{(\w+):uuid\}", path)

    async def endpoint(request: Request) -> Response:
        for name in uuid_names:
            value = request.path_params[name]
            if not UUID_RE.fullmatch(value):
                raise NotFound(NO_SUCH_URL)
            request.path_params[name] = value.lower()
        return await handler(request)

    return Route(path.replace(":uuid}", "}"), endpoint, methods=[method], name=f"{method} {path}")


# --- auth -----------------------------------------------------------------------------------------


def bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if header is None or " " not in header or len(header.split(None, 1)) < 2:
        raise Unauthorized(MISSING_HEADER)
    scheme, token = header.split(None, 1)
    if scheme.lower() != "bearer":
        raise Unauthorized(BAD_SCHEME)
    return token


def _key(request: Request, kind: str) -> ApiKey:
    key = ctx(request).state.keys.get(bearer(request))
    if key is None or key.revoked or key.kind != kind:  # the wrong key type is simply not found
        raise Unauthorized(INVALID_TOKEN)
    return key


def app_auth(request: Request, *modes: str) -> App:
    """The app behind an app key; 403 when it is gone, abnormal or its API is off; mode checked if given."""
    state = ctx(request).state
    key = _key(request, "app")
    app = state.apps.get(key.app_id or "")
    if app is None:
        raise Forbidden("The app no longer exists.")
    if app.status != "normal":
        raise Forbidden("The app's status is abnormal.")
    if not app.api_enabled:
        raise Forbidden("The app's API service has been disabled.")
    if modes and app.mode not in modes:
        code = "not_workflow_app" if modes == ("workflow",) else "not_chat_app"
        raise BadRequest(WRONG_MODE, code=code)
    return app


def dataset_auth(request: Request, dataset_id: str | None = None) -> tuple[ApiKey, Dataset | None]:
    key = _key(request, "dataset")
    if dataset_id is None:
        return key, None
    dataset = ctx(request).state.knowledge.dataset(dataset_id)
    if key.dataset_ids is not None and dataset_id not in key.dataset_ids:
        raise Forbidden("The API key is not bound to this dataset.")
    if not dataset.enable_api:
        raise Forbidden("Dataset api access is not enabled.")
    return key, dataset


# --- bodies and arguments -------------------------------------------------------------------------


async def json_body(request: Request) -> dict[str, Any]:
    """Werkzeug's rules: not `application/json` is 415; empty or broken JSON is 400."""
    mimetype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        raise UnsupportedMediaType(NOT_JSON)
    raw = await request.body()
    if not raw.strip():
        raise BadRequest(EMPTY_JSON)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"Failed to decode JSON object: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidParam("Input should be a valid dictionary")
    return data


def text(data: dict[str, Any], name: str, *, required: bool = True, default: str = "") -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidParam(f"{name} is required", params=name)
        return default
    if not isinstance(value, str):
        raise InvalidParam(f"{name} must be a string", params=name)
    return value


def user(data: dict[str, Any] | Any, *, required: bool = True) -> str:
    """The end-user string; Dify's own message when a required one is missing or blank."""
    value = data.get("user")
    if value is not None and not isinstance(value, str):
        raise InvalidParam("user must be a string", params="user")
    if required and not value:
        raise InvalidParam("Arg user must be provided.")
    return value or ""


def int_arg(request: Request, name: str, default: int, *, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidParam(f"{name} must be an integer", params=name) from exc
    if value < 1 or (maximum is not None and value > maximum):
        bound = f" and at most {maximum}" if maximum is not None else ""
        raise InvalidParam(f"{name} must be at least 1{bound}", params=name)
    return value


def uuid_arg(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    if not UUID_RE.fullmatch(raw):
        raise InvalidParam(f"{name} is not a valid uuid", params=name)
    return raw.lower()


def page_limit(request: Request) -> tuple[int, int]:
    return int_arg(request, "page", 1), int_arg(request, "limit", 20)


def quirky_page(items: list[Any], page: int, limit: int) -> tuple[list[Any], dict[str, Any]]:
    """Dify's page/limit lists: at most 100 a page, `limit` echoed as asked, `has_more = len(data) == limit`.

    So a full last page says has_more=true (the next page is empty), and a limit above 100 never does.
    """
    size = min(limit, MAX_PER_PAGE)
    chunk = items[(page - 1) * size : page * size]
    return chunk, {"has_more": len(chunk) == limit, "limit": limit, "total": len(items), "page": page}
