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

from edge.sync.validate import Invalid, item_id, listing_page

PAGE_LIMIT = 100  # Dify caps page/limit listings at 100
MAX_PAGES = 500  # a listing longer than this (50,000 items) is refused, not truncated: central is not trusted


class SyncError(Exception):
    """A call to central failed; `status` is the HTTP status when there was a response."""

    def __init__(
        self, message: str, status: int | None = None, code: str | None = None, *, maybe_delivered: bool = True
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        # False only when central certainly did not act on the request (never connected, or refused it
        # with a 4xx): after any other failure of a write, what it asked for may exist on central.
        self.maybe_delivered = maybe_delivered


class Unreachable(SyncError):
    """Network down, timeout, 5xx or 429: central may answer later."""


class AuthFailed(SyncError):
    """401 or 403: the key is wrong or revoked, or the app or dataset API is switched off."""


class Rejected(SyncError):
    """Another 4xx: central refuses this request as it is; retrying it unchanged will not help."""


class Malformed(SyncError):
    """Central answered, but the body breaks the contract (see `edge.sync.validate`): believe none of it."""


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
        return AuthFailed(text.strip(), status, code, maybe_delivered=False)
    if status == 429 or status >= 500:
        return Unreachable(text.strip(), status, code, maybe_delivered=status != 429)
    return Rejected(text.strip(), status, code, maybe_delivered=False)


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
            never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            raise Unreachable(f"{method} {path}: {type(exc).__name__}: {exc}", maybe_delivered=not never_sent) from exc
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

    max_pages = MAX_PAGES

    def _pages(self, path: str, key: str, params: dict[str, Any] | None = None) -> Listing:
        """Every item of a page/limit listing, de-duplicated by id (inserts shift later pages).

        Each page is checked first (`Malformed` if it has no `data` list or a `total` that is no count);
        items are passed on unchecked, for the caller to skip one bad item and keep the rest. At most
        `max_pages` pages: a listing that never ends (full pages, no `total`) is refused, never cut short.
        """
        seen: dict[str, Any] = {}
        anonymous: list[Any] = []  # items with no usable id: the caller reports them
        totals: set[int] = set()
        for page in range(1, self.max_pages + 1):
            body = self._call("GET", path, key, params={**(params or {}), "page": page, "limit": PAGE_LIMIT})
            try:
                checked = listing_page(body)
            except Invalid as exc:
                raise Malformed(f"GET {path} page {page} does not follow the spec: {exc}", 200) from exc
            for item in checked.items:
                if (identity := item_id(item)) is None:
                    anonymous.append(item)
                else:
                    seen.setdefault(identity, item)
            if checked.total is not None:
                totals.add(checked.total)
            total = checked.total
            if len(checked.items) < PAGE_LIMIT or (total is not None and page * PAGE_LIMIT >= total):
                return Listing([*seen.values(), *anonymous], drifted=len(totals) > 1)
        raise Malformed(f"GET {path} does not follow the spec: more than {self.max_pages} pages, no end in sight", 200)

    def datasets(self, dataset_key: str) -> Listing:
        return self._pages("/datasets", dataset_key)

    def documents(self, dataset_key: str, dataset_id: str) -> Listing:
        return self._pages(f"/datasets/{dataset_id}/documents", dataset_key)

    def dataset(self, dataset_key: str, dataset_id: str) -> Any:
        """`GET /datasets/{id}`: asked before a dataset missing from the listing is deleted locally."""
        return self._call("GET", f"/datasets/{dataset_id}", dataset_key)

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
        """Workflow-log entries filtered on end user `user` (the idempotency check before a run). Dify
        releases before the `created_by_end_user_session_id` filter ignore it and answer every user's latest
        runs: the caller must check whose entries came back."""
        body = self._call(
            "GET",
            "/workflows/logs",
            ingest_key,
            params={"created_by_end_user_session_id": user, "page": 1, "limit": PAGE_LIMIT},
        )
        return list(body.get("data") or [])

    def workflow_runs_by_keyword(self, ingest_key: str, keyword: str) -> list[dict[str, Any]]:
        """Every workflow-log entry whose run matches `keyword` (inputs, outputs...), paged to the end: the
        look-up that works on every Dify release."""
        return self._pages("/workflows/logs", ingest_key, {"keyword": keyword}).items

    def run_workflow(self, ingest_key: str, user: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return self._call(
            "POST", "/workflows/run", ingest_key, json={"inputs": inputs, "response_mode": "blocking", "user": user}
        )
