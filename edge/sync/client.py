"""A small client for the parts of central Dify's service API the sync agent uses (spec §1-4, §8).

Every failure is sorted into what the agent can do about it: `Unreachable` (network, timeouts,
5xx, 429 -- back off and retry), `AuthFailed` (401/403 -- stop the stream and say so: retrying a
revoked key or a disabled app changes nothing) and `Rejected` (other 4xx -- park the work with
the reason). Page/limit listings stop on a short page or `page * limit >= total`, because Dify's
`has_more` there only means `len(data) == limit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

PAGE_LIMIT = 100  # Dify caps page/limit listings at 100


class SyncError(Exception):
    """A call to central failed; `status` is the HTTP status when there was a response."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Unreachable(SyncError):
    """Network down, timeout, 5xx or 429: central may answer later."""


class AuthFailed(SyncError):
    """401 or 403: the key is wrong or revoked, or the app or dataset API is switched off."""


class Rejected(SyncError):
    """Another 4xx: central refuses this request as it is; retrying it unchanged will not help."""


@dataclass(frozen=True)
class Listing:
    """The items of a paged listing, and whether `total` moved while it was read (pages may have shifted)."""

    items: list[dict[str, Any]]
    drifted: bool


def _error(response: httpx.Response) -> SyncError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    text = f"{response.request.method} {response.request.url.path}: {response.status_code} {code or ''} {message or ''}"
    status = response.status_code
    if status in (401, 403):
        return AuthFailed(text.strip(), status, code)
    if status == 429 or status >= 500:
        return Unreachable(text.strip(), status, code)
    return Rejected(text.strip(), status, code)


class DifyClient:
    """Synchronous calls to one central Dify, with one key per key space (app, dataset, ingest app)."""

    def __init__(self, base_url: str, *, timeout_s: float, transport: httpx.BaseTransport | None = None) -> None:
        root = base_url.rstrip("/")
        if not root.endswith("/v1"):
            root += "/v1"
        self._http = httpx.Client(base_url=root, timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def _call(
        self,
        method: str,
        path: str,
        key: str | None,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        timeout_s: float | None = None,
    ) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            response = self._http.request(
                method,
                path,
                params=params,
                json=json,
                headers=headers,
                timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:  # refused, reset, timed out, DNS...
            raise Unreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise Unreachable(f"{method} {path}: the response is not JSON") from exc

    # --- probe and app ------------------------------------------------------------------------

    def probe(self, timeout_s: float) -> dict[str, Any]:
        """`GET /v1/`: needs no key, answers `{welcome, api_version, server_version}`."""
        body = self._call("GET", "/", None, timeout_s=timeout_s)
        if not isinstance(body, dict) or "api_version" not in body:
            raise Unreachable("GET /v1/: not a Dify service API")
        return body

    def parameters(self, app_key: str) -> dict[str, Any]:
        return self._call("GET", "/parameters", app_key)

    # --- paged listings -----------------------------------------------------------------------

    def _pages(self, path: str, key: str, params: dict[str, Any] | None = None) -> Listing:
        """Every item of a page/limit listing, de-duplicated by id (inserts shift later pages)."""
        seen: dict[str, dict[str, Any]] = {}
        totals: set[int] = set()
        page = 1
        while True:
            body = self._call("GET", path, key, params={**(params or {}), "page": page, "limit": PAGE_LIMIT})
            data = body.get("data") or []
            for item in data:
                seen.setdefault(str(item["id"]), item)
            if isinstance(body.get("total"), int):
                totals.add(body["total"])
            total = body.get("total")
            if len(data) < PAGE_LIMIT or (isinstance(total, int) and page * PAGE_LIMIT >= total):
                return Listing(list(seen.values()), drifted=len(totals) > 1)
            page += 1

    def datasets(self, dataset_key: str) -> Listing:
        return self._pages("/datasets", dataset_key)

    def documents(self, dataset_key: str, dataset_id: str) -> Listing:
        return self._pages(f"/datasets/{dataset_id}/documents", dataset_key)

    def document(self, dataset_key: str, dataset_id: str, document_id: str) -> dict[str, Any]:
        return self._call(
            "GET", f"/datasets/{dataset_id}/documents/{document_id}", dataset_key, params={"metadata": "without"}
        )

    def segments(self, dataset_key: str, dataset_id: str, document_id: str) -> Listing:
        return self._pages(
            f"/datasets/{dataset_id}/documents/{document_id}/segments", dataset_key, {"status": "completed"}
        )

    def annotations(self, app_key: str) -> Listing:
        return self._pages("/apps/annotations", app_key)

    def documents_named(self, dataset_key: str, dataset_id: str, name: str) -> list[dict[str, Any]]:
        """Documents whose name contains `name` (Dify's `keyword` filter), for a look-up before creating one."""
        body = self._call(
            "GET", f"/datasets/{dataset_id}/documents", dataset_key, params={"keyword": name, "page": 1, "limit": 20}
        )
        return [item for item in body.get("data") or [] if item.get("name") == name]

    def create_document(self, dataset_key: str, dataset_id: str, name: str, text: str) -> dict[str, Any]:
        return self._call(
            "POST",
            f"/datasets/{dataset_id}/document/create-by-text",
            dataset_key,
            json={
                "name": name,
                "text": text,
                "indexing_technique": "economy",  # no embedding cost on central for a transcript
                "process_rule": {"mode": "automatic"},
            },
        )

    # --- push -----------------------------------------------------------------------------------

    def workflow_runs_by_user(self, ingest_key: str, user: str) -> list[dict[str, Any]]:
        """Workflow-log entries whose end user is `user` (the idempotency check before a run)."""
        body = self._call(
            "GET",
            "/workflows/logs",
            ingest_key,
            params={"created_by_end_user_session_id": user, "page": 1, "limit": PAGE_LIMIT},
        )
        return list(body.get("data") or [])

    def run_workflow(self, ingest_key: str, user: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return self._call(
            "POST", "/workflows/run", ingest_key, json={"inputs": inputs, "response_mode": "blocking", "user": user}
        )
