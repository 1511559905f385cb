"""Scripted faults: which requests misbehave, how, and how many times.

A rule matches requests (method, a glob on the path, query values, the effective `page`), lets the
first `skip` matches through, then fires `times` times (None: forever). Its phase says when:

* before — instead of handling the request (nothing is committed): an error, a drop, a stall;
* after  — the request is handled and committed, then the response is replaced: "commit then fail";
* stream — inside an SSE answer: drop the connection, send an `error` event or a malformed one after N events;
* delay  — a chat answer's first byte waits (the model "thinks"); it combines with a stream fault;
* hook   — after the response, run an edit of central's state (page drift, a key revoked mid-run).

A `reshape` rule is an "after" rule that keeps the status: the request is handled, then its JSON body
is bent out of the contract (no `data`, no `total`, a malformed item, an endless listing, a list
where an object belongs) -- central as untrusted input.

Rules are plain data (`Rule.spec`) so the control API can take them as JSON; hooks may also be
Python callables when the fake runs in-process.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

from tests.fake_dify.errors import DifyError, Forbidden, TooManyRequests, Unauthorized, default_error

Phase = Literal["before", "after", "stream", "delay", "hook"]
KINDS: dict[str, tuple[Phase, ...]] = {
    "error": ("before", "after"),
    "drop": ("before", "after"),
    "stall": ("before", "after"),
    "sse_drop": ("stream",),
    "sse_error": ("stream",),
    "sse_malformed": ("stream",),
    "first_byte": ("delay",),
    "mutate": ("hook",),
    "reshape": ("after",),
}
PROXY_STATUSES = (502, 503, 504)
KNOWLEDGE_RATE_LIMIT = "Sorry, you have reached the knowledge base request rate limit of your subscription."
STREAM_ERROR = "Connection error."  # what a provider InvokeError looks like to a Dify client
MALFORMED = ("json", "shape", "unknown")  # see `Faults.sse_malformed`


class ConnectionDropped(Exception):
    """Raised inside the app to close the client's connection without (the rest of) a response."""


@dataclass(frozen=True)
class RequestInfo:
    method: str
    path: str
    query: dict[str, list[str]]

    @classmethod
    def from_scope(cls, scope: dict[str, Any]) -> RequestInfo:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        return cls(scope["method"].upper(), scope["path"], query)

    @property
    def page(self) -> int | None:
        raw = self.query.get("page", ["1"])[0]
        return int(raw) if raw.isdigit() else None


@dataclass
class Rule:
    """One scripted fault; `spec` is its JSON form (what the control API lists)."""

    id: str
    kind: str
    phase: Phase
    path: str
    method: str | None = None
    query: dict[str, str] = field(default_factory=dict)
    page: int | None = None
    skip: int = 0
    times: int | None = 1
    status: int = 500
    code: str | None = None
    message: str | None = None
    seconds: float | None = None  # stall: None means the app's default stall
    after_events: int = 1
    headers_first: bool = False  # first_byte: send 200 and the headers at once, delay only the body
    how: str = "json"  # sse_malformed: one of MALFORMED
    retry_after: float | None = None  # error: add a `Retry-After` header (Dify sends none; a gateway may)
    mutation: dict[str, Any] | None = None
    reshape: dict[str, Any] | None = None  # see `reshaped`
    action: Callable[[Any], Any] | None = None
    template: Any = field(default=None, repr=False)  # reshape "pad": the item copied onto empty pages
    seen: int = 0
    fired: int = 0

    def matches(self, request: RequestInfo) -> bool:
        return (
            (self.method is None or self.method.upper() == request.method)
            and fnmatch.fnmatchcase(request.path, self.path)
            and all(request.query.get(k, [None])[0] == v for k, v in self.query.items())
            and (self.page is None or request.page == self.page)
        )

    def error(self) -> DifyError | None:
        """The Dify error to send, or None for a proxy's HTML page (502/503/504 without a code)."""
        if self.code is None and self.status in PROXY_STATUSES:
            return None
        base = default_error(self.status)
        headers = dict(base.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = f"{self.retry_after:g}"
        return DifyError(self.message or base.message, code=self.code or base.code, status=self.status, headers=headers)

    @property
    def spec(self) -> dict[str, Any]:
        keys = ("id", "kind", "phase", "path", "method", "query", "page", "skip", "times", "seen", "fired")
        body = {k: getattr(self, k) for k in keys}
        extra = {
            "error": ("status", "code", "message", "retry_after"),
            "stall": ("seconds",),
            "sse_drop": ("after_events",),
            "sse_error": ("after_events", "status", "code", "message"),
            "sse_malformed": ("after_events", "how"),
            "first_byte": ("seconds", "headers_first"),
            "mutate": ("mutation",),
            "reshape": ("reshape",),
        }
        body |= {k: getattr(self, k) for k in extra.get(self.kind, ())}
        if self.action is not None:
            body["action"] = getattr(self.action, "__name__", "callable")
        return body

    def reshaped(self, body: Any, page: int | None = None) -> Any:
        """`body` bent as `reshape` says: {"body": any JSON} replaces it whole; {"drop": [keys]} and
        {"set": {key: value}} edit the top level; {"item": i, "item_set": {...}, "item_drop": [...]} edit
        `data[i]`; {"pad": n} fills `data` up to n items with copies under fresh ids (a listing that never ends)."""
        how = self.reshape or {}
        if "body" in how:
            return copy.deepcopy(how["body"])
        if not isinstance(body, dict):
            return body
        body = copy.deepcopy(body)
        data = body.get("data")
        if isinstance(data, list) and data and isinstance(data[-1], dict):
            self.template = copy.deepcopy(data[-1])
        if isinstance(data, list) and self.template is not None and how.get("pad"):
            for index in range(len(data), int(how["pad"])):
                clone = copy.deepcopy(self.template)
                clone["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-dify:{self.id}:{page}:{index}"))
                data.append(clone)
        if isinstance(data, list) and ("item_set" in how or "item_drop" in how):
            index = int(how.get("item", 0))
            if -len(data) <= index < len(data) and isinstance(data[index], dict):
                data[index].update(how.get("item_set") or {})
                for key in how.get("item_drop") or ():
                    data[index].pop(key, None)
        for key in how.get("drop") or ():
            body.pop(key, None)
        body.update(how.get("set") or {})
        return body

    def reshape_messages(self, messages: list[dict[str, Any]], page: int | None = None) -> list[dict[str, Any]]:
        """A captured JSON answer (ASGI messages) with its body reshaped; any other answer as it was."""
        start = next((m for m in messages if m["type"] == "http.response.start"), None)
        raw = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        headers = [(k, v) for k, v in (start or {}).get("headers", []) if k.lower() != b"content-length"]
        if start is None or start["status"] != 200 or not any(v.startswith(b"application/json") for _, v in headers):
            return messages
        body = json.dumps(self.reshaped(json.loads(raw), page)).encode()
        headers.append((b"content-length", str(len(body)).encode()))
        return [{**start, "headers": headers}, {"type": "http.response.body", "body": body, "more_body": False}]


class Faults:
    """The fault schedule of one fake; thread-safe (tests add rules while the server runs)."""

    def __init__(self) -> None:
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    # --- the general form -------------------------------------------------------------------------

    def add(self, spec: dict[str, Any]) -> Rule:
        """Add a rule from its JSON form: {"kind", "path", "after"?, "method"?, "query"?, "page"?, ...}."""
        spec = dict(spec)
        kind = spec.pop("kind", None)
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        if "path" not in spec:
            raise ValueError("a fault needs a path (a glob such as /v1/workflows/run)")
        phase: Phase = "after" if spec.pop("after", False) else KINDS[kind][0]
        if phase not in KINDS[kind]:
            raise ValueError(f"a {kind} fault cannot be applied after the response")
        allowed = set(Rule.__dataclass_fields__) - {"id", "kind", "phase", "seen", "fired"}
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        if kind == "sse_malformed" and spec.get("how", "json") not in MALFORMED:
            raise ValueError(f"an sse_malformed fault's how is one of {', '.join(MALFORMED)}")
        if kind == "first_byte" and not isinstance(spec.get("seconds"), int | float):
            raise ValueError("a first_byte fault needs seconds")
        if kind == "mutate" and spec.get("mutation") is None and spec.get("action") is None:
            raise ValueError("a mutate fault needs a mutation (JSON) or an action (callable)")
        with self._lock:
            rule = Rule(id=f"fault-{next(self._ids)}", kind=kind, phase=phase, **spec)
            self._rules.append(rule)
            return rule

    def take(self, phase: Phase, request: RequestInfo) -> Rule | None:
        """The first rule of this phase that fires for this request (every matching rule counts it)."""
        chosen = None
        with self._lock:
            for rule in self._rules:
                if rule.phase != phase or not rule.matches(request):
                    continue
                rule.seen += 1
                if chosen is None and rule.seen > rule.skip and (rule.times is None or rule.fired < rule.times):
                    rule.fired += 1
                    chosen = rule
        return chosen

    def hooks(self, request: RequestInfo) -> list[Rule]:
        """Every hook that fires after this request."""
        fired = []
        with self._lock:
            for rule in self._rules:
                if rule.phase == "hook" and rule.matches(request):
                    rule.seen += 1
                    if rule.seen > rule.skip and (rule.times is None or rule.fired < rule.times):
                        rule.fired += 1
                        fired.append(rule)
        return fired

    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    def remove(self, rule_id: str) -> None:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            if len(self._rules) == before:
                raise KeyError(rule_id)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    # --- the named faults of issue #6 -------------------------------------------------------------

    def error(self, path: str, status: int = 500, *, after: bool = False, **options: Any) -> Rule:
        """Answer `status` in Dify's envelope (502/503/504 without a code: a proxy's HTML page)."""
        return self.add({"kind": "error", "path": path, "status": status, "after": after, **options})

    def rate_limit(self, path: str, *, retry_after: float | None = None, **options: Any) -> Rule:
        """429 too_many_requests, without `Retry-After` as Dify sends it (`retry_after`: a gateway's header)."""
        message = "Too many requests. Please try again later. The current maximum concurrent requests allowed is 1."
        status, code = TooManyRequests.status, "too_many_requests"
        return self.error(path, status, code=code, message=message, retry_after=retry_after, **options)

    def knowledge_rate_limit(self, path: str = "/v1/datasets*", **options: Any) -> Rule:
        """Cloud's knowledge rate limit arrives as 403, not 429."""
        return self.error(path, 403, code=Forbidden.code, message=KNOWLEDGE_RATE_LIMIT, **options)

    def unauthorized(self, path: str, **options: Any) -> Rule:
        """401 'Access token is invalid' for these requests only (see `FakeDifyState.revoke_key` for good)."""
        return self.error(path, 401, code=Unauthorized.code, message="Access token is invalid", **options)

    def app_disabled(self, path: str, **options: Any) -> Rule:
        """403 as if the app's API were switched off, for these requests only."""
        return self.error(path, 403, code=Forbidden.code, message="The app's API service has been disabled.", **options)

    def drop(self, path: str, *, after: bool = False, **options: Any) -> Rule:
        """Close the TCP connection without a response (after=True: once the request is committed)."""
        return self.add({"kind": "drop", "path": path, "after": after, **options})

    def stall(self, path: str, seconds: float | None = None, *, after: bool = False, **options: Any) -> Rule:
        """Say nothing for `seconds` (or until the client gives up), then answer as usual."""
        return self.add({"kind": "stall", "path": path, "seconds": seconds, "after": after, **options})

    def commit_then(self, path: str, failure: int | str = 502, **options: Any) -> Rule:
        """Handle and commit the request, then fail it: a status (502 by default), "drop" or "stall"."""
        if failure == "drop":
            return self.drop(path, after=True, **options)
        if failure == "stall":
            return self.stall(path, after=True, **options)
        return self.error(path, int(failure), after=True, **options)

    def sse_drop(self, path: str = "/v1/chat-messages", after_events: int = 1, **options: Any) -> Rule:
        """Cut a streamed answer's connection after `after_events` data events."""
        return self.add({"kind": "sse_drop", "path": path, "after_events": after_events, **options})

    def sse_error(
        self,
        path: str = "/v1/chat-messages",
        after_events: int = 1,
        *,
        status: int = 400,
        code: str = "completion_request_error",
        message: str = STREAM_ERROR,
        **options: Any,
    ) -> Rule:
        """End a streamed answer with an `error` event (no task_id) after `after_events` data events."""
        spec = {"kind": "sse_error", "path": path, "after_events": after_events, "status": status, "code": code}
        return self.add({**spec, "message": message, **options})

    def sse_malformed(
        self, path: str = "/v1/chat-messages", after_events: int = 1, *, how: str = "json", **options: Any
    ) -> Rule:
        """After `after_events` data events, one broken event, then the rest of the stream as usual.

        `how`: "json", a `data:` line that is not JSON; "shape", a `message` event whose `answer` is not a
        string and that has no `message_id`; "unknown", an event Dify does not have (clients must skip it)."""
        return self.add({"kind": "sse_malformed", "path": path, "after_events": after_events, "how": how, **options})

    def first_byte(
        self, seconds: float, path: str = "/v1/chat-messages", *, headers_first: bool = False, **options: Any
    ) -> Rule:
        """A chat answer's first byte waits `seconds` (blocking: the whole answer). The message is committed
        first, as in Dify. `headers_first`: a streamed answer's 200 and headers go out at once, only the body
        waits (pings keep coming). Combines with an `sse_*` fault on the same request."""
        spec = {"kind": "first_byte", "path": path, "seconds": seconds, "headers_first": headers_first}
        return self.add({**spec, **options})

    def down(self, path: str = "/v1/*", **options: Any) -> Rule:
        """Central "down" while the server stays up: every matching connection is reset, until removed."""
        options.setdefault("times", None)
        return self.drop(path, **options)

    def hook(self, path: str, action: Callable[[Any], Any] | dict[str, Any], **options: Any) -> Rule:
        """After a matching request is answered, edit central: a callable(state) or a mutation dict."""
        key = "action" if callable(action) else "mutation"
        return self.add({"kind": "mutate", "path": path, key: action, **options})

    def reshape_body(self, path: str, how: dict[str, Any], **options: Any) -> Rule:
        """Answer as usual, but with the JSON body reshaped (see `Rule.reshaped`): a 200 that breaks the contract."""
        return self.add({"kind": "reshape", "path": path, "reshape": how, **options})

    def without(self, path: str, *keys: str, **options: Any) -> Rule:
        """A 200 whose body lacks `keys` (a listing without `data`, or without `total`)."""
        return self.reshape_body(path, {"drop": list(keys)}, **options)

    def malformed_item(
        self,
        path: str,
        item: int = 0,
        *,
        fields: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        **options: Any,
    ) -> Rule:
        """A listing whose `data[item]` has fields of the wrong type (`fields`) or missing (`drop`)."""
        return self.reshape_body(path, {"item": item, "item_set": fields or {}, "item_drop": list(drop)}, **options)

    def endless(self, path: str, limit: int = 100, **options: Any) -> Rule:
        """A listing whose every page is full and says no `total`, for ever (by default)."""
        options.setdefault("times", None)
        return self.reshape_body(path, {"pad": limit, "drop": ["total"]}, **options)

    def between_pages(
        self, path: str, page: int, action: Callable[[Any], Any] | dict[str, Any], **options: Any
    ) -> Rule:
        """Page drift: edit central right after page `page` of a listing is served, before the next."""
        return self.hook(path, action, page=page, **options)
