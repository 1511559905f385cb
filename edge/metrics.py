"""Prometheus metrics of one app instance (its own registry: two apps in a process never mix)."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.logs import REQUEST_ID

if TYPE_CHECKING:
    from edge.store.disk import VolumeUsage

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A shopper waits seconds to minutes for a colleague; half an hour is a hand-off nobody saw.
HANDOFF_BUCKETS = (5, 10, 20, 30, 60, 120, 300, 600, 1800)
# A label value is a time series: a method outside this set (any client can send `FOO1`, `FOO2`, …) is
# counted as "other", so the series stay bounded.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "kiosk_http_request_seconds",
            "HTTP request latency by route template.",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.answers = Counter(
            "kiosk_answers_total",
            "Answers by route taken, intent and the shopper's language.",
            ["route", "intent", "language"],
            registry=self.registry,
        )
        self.generation_checks = Counter(
            "kiosk_generation_checks_total",
            "Generated answers checked against their grounding: passed, or rejected (a number, time, price or "
            "name not in the grounding) and replaced by a verbatim answer or a hand-off.",
            ["result"],
            registry=self.registry,
        )
        self.answer_seconds = Histogram(
            "kiosk_answer_seconds",
            "Time to a full answer by route.",
            ["route"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.cache_hits = Gauge("kiosk_cache_hits", "Hot-answer cache hits since start.", registry=self.registry)
        self.cache_misses = Gauge("kiosk_cache_misses", "Hot-answer cache misses since start.", registry=self.registry)
        self.cache_hit_ratio = Gauge("kiosk_cache_hit_ratio", "Hot-answer cache hit ratio.", registry=self.registry)
        self.llm_queue_depth = Gauge("kiosk_llm_queue_depth", "LLM requests waiting.", registry=self.registry)
        self.llm_queue_wait = Histogram(
            "kiosk_llm_queue_wait_seconds",
            "Time an LLM request waited in the queue.",
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.llm_tokens_per_second = Histogram(
            "kiosk_llm_tokens_per_second",
            "Generation speed per LLM answer.",
            registry=self.registry,
            buckets=(5, 10, 20, 40, 60, 80, 100, 120, 150, 200, 300),
        )
        self.outbox_pending = Gauge(
            "kiosk_outbox_pending", "Turns not yet confirmed by central.", registry=self.registry
        )
        self.outbox_parked = Gauge(
            "kiosk_outbox_parked", "Turns the sync agent gave up on (see `edge sync status`).", registry=self.registry
        )
        self.sync_up = Gauge(
            "kiosk_sync_up",
            "1 when the stream's last attempt succeeded (central: reachable).",
            ["stream"],
            registry=self.registry,
        )
        self.sync_last_success = Gauge(
            "kiosk_sync_last_success_timestamp_seconds",
            "When the stream last succeeded.",
            ["stream"],
            registry=self.registry,
        )
        self.volume_bytes = Gauge(
            "kiosk_data_volume_bytes",
            "The data volume (SQLite and bundles): total, used and free (available to the box) bytes.",
            ["state"],
            registry=self.registry,
        )
        self.database_bytes = Gauge(
            "kiosk_database_bytes", "The SQLite file with its WAL, in bytes.", registry=self.registry
        )
        self.llm_first_token = Histogram(
            "kiosk_llm_first_token_seconds",
            "Time to the first generated token.",
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )

        self.central_escalations = Counter(
            "kiosk_central_escalations_total",
            "Questions forwarded to central live, by outcome: answered by central, or fallback to the local answer.",
            ["outcome"],
            registry=self.registry,
        )
        self.central_fallbacks = Counter(
            "kiosk_central_fallbacks_total",
            "Escalations answered locally instead, by cause (timeout, status_429, status_4xx, status_5xx, "
            "error_event, dropped, malformed, unreachable).",
            ["cause"],
            registry=self.registry,
        )
        self.central_skipped = Counter(
            "kiosk_central_skipped_total",
            "Questions that would escalate but were answered locally without asking central: `unreachable` (no "
            "recent success) or `circuit_open` (repeated failures).",
            ["why"],
            registry=self.registry,
        )
        self.central_first_byte = Histogram(
            "kiosk_central_first_byte_seconds",
            "Time from forwarding a question to central's first answer text.",
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.handoffs_active = Gauge(
            "kiosk_handoffs_active",
            "Hand-offs waiting for staff (open) and on their way (claimed), read from the database at scrape.",
            ["state"],
            registry=self.registry,
        )
        self.handoff_claim_seconds = Histogram(
            "kiosk_handoff_claim_seconds",
            "Time from a hand-off opening to a colleague claiming it on the staff page.",
            registry=self.registry,
            buckets=HANDOFF_BUCKETS,
        )
        self.handoff_transitions = Counter(
            "kiosk_handoff_transitions_total",
            "Hand-offs claimed and closed on the staff page.",
            ["event"],
            registry=self.registry,
        )

    def observe_handoff_claim(self, seconds: float | None) -> None:
        self.handoff_transitions.labels(event="claimed").inc()
        if seconds is not None:
            self.handoff_claim_seconds.observe(seconds)

    def observe_handoff_closed(self) -> None:
        self.handoff_transitions.labels(event="closed").inc()

    def refresh_handoffs(self, counts: dict[str, int]) -> None:
        for state in ("open", "claimed"):
            self.handoffs_active.labels(state=state).set(counts.get(state, 0))

    def observe_answer(
        self, route: str, intent: str | None, seconds: float, generation: Any | None, language: str = "en"
    ) -> None:
        self.answers.labels(route=route, intent=intent or "none", language=language).inc()
        self.answer_seconds.labels(route=route).observe(seconds)
        if generation is not None:
            if generation.queue_wait_s is not None:
                self.llm_queue_wait.observe(generation.queue_wait_s)
            if generation.tokens_per_s:
                self.llm_tokens_per_second.observe(generation.tokens_per_s)
            if generation.first_token_s is not None:
                self.llm_first_token.observe(generation.first_token_s)

    def refresh_sync(self, streams: list[dict[str, Any]], pending: int, parked: int) -> None:
        """The sync agent's figures (it is another process; they are read from the shared database)."""
        self.outbox_pending.set(pending)
        self.outbox_parked.set(parked)
        for row in streams:
            self.sync_up.labels(stream=row["stream"]).set(1.0 if row["state"] in ("online", "ok") else 0.0)
            if row.get("last_success_at"):
                self.sync_last_success.labels(stream=row["stream"]).set(row["last_success_at"])

    def refresh_disk(self, volume: VolumeUsage, database: int) -> None:
        for state in ("total", "used", "free"):
            self.volume_bytes.labels(state=state).set(getattr(volume, state))
        self.database_bytes.set(database)

    def refresh(self, cache: Any, llm: Any | None) -> None:
        """Gauges read at scrape time."""
        self.cache_hits.set(cache.hits)
        self.cache_misses.set(cache.misses)
        total = cache.hits + cache.misses
        self.cache_hit_ratio.set(cache.hits / total if total else 0.0)
        if llm is not None:
            self.llm_queue_depth.set(llm.queue_depth())

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """Times each request by its route template and tags it with a request id (also sent back as a header)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = request_id or uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
            self.metrics.requests.labels(method=method, route=template, status=str(status)).observe(
                time.perf_counter() - started
            )
            REQUEST_ID.reset(token)
