"""`create_app(settings)`: the whole runtime built from one settings object, resources owned by the lifespan."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.api import dify, kiosk, openai, ops, staff
from edge.api.auth import KeyRing, RateLimiter
from edge.api.errors import OPENAI_PATHS, PayloadTooLarge, dify_openapi, envelope, install_error_handlers
from edge.api.hosts import HostCheck
from edge.assistant.bank import BankView, missing_variables
from edge.assistant.cache import AnswerCache
from edge.assistant.escalation import Escalator
from edge.assistant.pipeline import Assistant
from edge.assistant.policy import Decision, GroundingLimits
from edge.assistant.recorder import HandoffPolicy, TurnRecorder
from edge.assistant.retrieval import RetrievalConfig, Retriever
from edge.assistant.routing import Router, RoutingConfig, thresholds_from
from edge.bundle import Bundle, load_bundle
from edge.central.breaker import Breaker
from edge.central.chat import CentralChat
from edge.central.reachability import Reachability
from edge.inference.llm import LlmEngine
from edge.inference.loader import Models, load_models
from edge.metrics import Metrics, RequestMetrics
from edge.settings import Settings
from edge.store.answers import CuratedAnswers
from edge.store.conversations import ConversationStore
from edge.store.db import open_database
from edge.store.knowledge import KnowledgeStore
from edge.store.outbox import Outbox
from edge.store.parameters import CentralParameters
from edge.store.sync_state import SyncState
from edge.store.writer import Writer

log = logging.getLogger(__name__)
DRAIN_DEADLINE_S = 15.0  # inside `edge serve`'s 20 s graceful shutdown, leaving time to send the error events


class BodyLimit:
    """Refuse bodies over the limit before they are read into memory (413 in the family's shape)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise PayloadTooLarge(f"request body larger than {self.limit} bytes")
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        openai_family = str(scope.get("path", "")).startswith(OPENAI_PATHS)
        error = PayloadTooLarge(f"request body larger than {self.limit} bytes")
        body = json.dumps(envelope(error, openai_family)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _load(
    app: FastAPI, settings: Settings, bundle: Bundle | None, closing: ExitStack, central: httpx.AsyncClient | None
) -> None:
    """Open everything the assistant needs; each resource is registered on `closing` as soon as it is
    open, so a failure half-way (or the shutdown) closes exactly what was opened, in reverse order."""
    if bundle is None:
        bundle = load_bundle(settings.bundle_dir, verify=settings.verify_bundle)
    models = load_models(
        bundle,
        intent_threads=settings.intent_threads,
        workers=settings.intent_workers,
        embedder_threads=settings.embedder_threads,
        threshold=settings.intent_min_confidence,
    )
    closing.callback(models.close)
    llm: LlmEngine | None = None
    if "llm" in bundle.components:
        component = bundle.component("llm")
        llm = LlmEngine(
            component.file("model.gguf"),
            n_ctx=settings.llm_context,
            n_threads=settings.llm_threads,
            max_queue=settings.llm_max_queue,
            time_budget_s=settings.llm_time_budget_s,
            kv_cache=settings.llm_kv_cache,
            gpu_layers=settings.llm_gpu_layers,
        )
        llm.start()
        closing.callback(llm.close)
    db = open_database(settings.database_path)
    closing.callback(db.close)
    app.state.kiosk = kiosk.open_kiosk(settings, db)
    conversations = ConversationStore(db)
    curated = CuratedAnswers(db)
    if settings.curated_answers_csv.is_file():
        curated.seed_from_csv(settings.curated_answers_csv)
    knowledge = KnowledgeStore(db)
    routing = _routing_config(settings, models)
    retriever = _retriever(settings, models, knowledge, routing)
    cache: AnswerCache[Decision] = AnswerCache(settings.cache_size, settings.cache_ttl_s)
    app.state.llm = llm
    app.state.cache = cache
    app.state.knowledge, app.state.retriever = knowledge, retriever

    def begin_drain() -> None:
        app.state.ready = False  # /readyz → 503: k3s stops routing here while in-flight answers finish
        if llm is not None:  # queued answers may still finish within uvicorn's 20 s; the rest are told why
            llm.drain(deadline_s=DRAIN_DEADLINE_S)

    app.state.begin_drain = begin_drain
    outbox, sync_state = Outbox(db), SyncState(db)
    app.state.sync_figures = lambda: (sync_state.all(), outbox.depth(), len(outbox.parked()))
    app.state.central_parameters = CentralParameters(db)
    app.state.conversations = conversations
    writer = Writer(db)
    writer.start()
    closing.callback(writer.close)  # registered after the database: drains before it closes
    bank = BankView(curated, knowledge, cache, settings.knowledge_refresh_s)
    missing = missing_variables(bank.answers, settings.store_variables)
    if missing:
        log.warning(
            "answers use store variables the settings lack; those answers hand off instead",
            extra={"missing_variables": missing},
        )
    router = Router(models.classifier, retriever, bank, cache, settings.store_variables, routing)
    app.state.handoffs = conversations.handoffs
    app.state.staff = staff.open_staff(settings)
    recorder = TurnRecorder(
        conversations, writer, app.state.metrics, HandoffPolicy(settings.kiosk_id, alert=settings.staff_alerts)
    )
    escalator = _escalator(settings, central, sync_state, conversations, app.state.metrics)
    app.state.escalator = escalator
    app.state.assistant = Assistant(settings, router, llm, conversations, recorder, escalator)
    if retriever is not None:
        # Seeds (and segments left by an older embedder) are embedded after start-up, so the box is ready
        # at once; until a segment has its vector it is simply not found.
        stop = threading.Event()
        indexer = threading.Thread(target=retriever.index_missing, kwargs={"stop": stop}, daemon=True)
        indexer.start()
        closing.callback(indexer.join, 10.0)  # never free the embedder under a running inference
        closing.callback(stop.set)


def _escalator(
    settings: Settings,
    central: httpx.AsyncClient | None,
    sync_state: SyncState,
    conversations: ConversationStore,
    metrics: Metrics,
) -> Escalator | None:
    """Live escalation to central, when the setting is on (then the client exists and the key is set)."""
    if central is None or settings.central_chat_key is None:
        return None
    chat = CentralChat(
        central,
        settings.central_chat_key.get_secret_value(),
        first_byte_s=settings.escalate_first_byte_s,
        idle_s=settings.escalate_idle_s,
    )
    breaker = Breaker(settings.escalate_breaker_failures, settings.escalate_breaker_cooldown_s)
    reachability = Reachability(sync_state, settings.escalate_reachable_s, settings.escalate_breaker_cooldown_s)
    return Escalator(settings, chat, breaker, reachability, conversations, metrics)


def _central_client(settings: Settings, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient | None:
    """The one connection pool to central's chat app; only when escalation is on. Deadlines are the chat
    client's (first byte, idle); here only connecting is bounded."""
    if not settings.escalate:
        return None
    return httpx.AsyncClient(
        base_url=settings.central_url,
        transport=transport,
        timeout=httpx.Timeout(None, connect=settings.escalate_first_byte_s),
        follow_redirects=False,
    )


def _routing_config(settings: Settings, models: Models) -> RoutingConfig:
    thresholds = thresholds_from(
        models.classifier.config,
        intent=settings.intent_min_confidence,
        match=settings.match_min_score,
        passage=settings.retrieval_min_score,
        llm_floor=settings.llm_floor,
    )
    limits = GroundingLimits(settings.grounding_chars_per_source, settings.grounding_chars)
    return RoutingConfig(thresholds, limits, tuple(settings.llm_languages), settings.followup_turns)


def _retriever(
    settings: Settings, models: Models, knowledge: KnowledgeStore, routing: RoutingConfig
) -> Retriever | None:
    """Seed local knowledge on first start; retrieval needs the bundle's embedder."""
    for path in settings.knowledge_seed_csvs:
        if path.is_file():
            knowledge.seed_from_csv(path)
    if models.embedder is None or models.embedder_id is None or settings.retrieval_top_k == 0:
        log.warning("retrieval off: the bundle has no embedder or retrieval_top_k is 0")
        return None
    # Hits are kept down to the lowest threshold any language uses; the policy applies each one.
    floor = min(min(t.match, t.passage) for t in routing.thresholds.values())
    config = RetrievalConfig(
        top_k=settings.retrieval_top_k, min_score=floor, text_weight=settings.retrieval_text_weight
    )
    return Retriever(knowledge, models.embedder, models.embedder_id, config)


def create_app(
    settings: Settings, bundle: Bundle | None = None, central_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """`bundle`: one the caller already loaded and verified (`edge serve` does, to fail with a clear
    message before uvicorn starts), so start-up does not hash every file a second time.
    `central_transport`: how escalated questions reach central (tests hand in the fake's); default: the network."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        central = _central_client(settings, central_transport)
        try:
            with ExitStack() as closing:
                _load(app, settings, bundle, closing, central)
                app.state.ready = True
                app.state.log.info("ready", extra={"seconds_to_ready": round(time.perf_counter() - started, 3)})
                try:
                    yield
                finally:
                    app.state.ready = False
        finally:
            if central is not None:
                await central.aclose()

    # /docs and /redoc load Swagger UI and ReDoc from a CDN: blank on an offline box, so off unless asked for.
    docs = settings.api_docs
    app = FastAPI(
        title="kiosk-edge",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.state.settings = settings
    app.state.log = logging.getLogger("edge.app")
    app.state.ready = False
    app.state.started_at = time.time()
    app.state.keyring = KeyRing(settings.app_keys)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    app.state.metrics = Metrics()
    app.state.kiosk = None  # the kiosk page's sessions and assets, once the lifespan runs
    app.state.staff = None  # the staff page's sessions and sign-in limit, once the lifespan runs (PIN set)
    app.state.escalator = None  # live escalation to central, once the lifespan runs (when on)
    install_error_handlers(app)
    app.openapi = lambda: dify_openapi(app)  # type: ignore[method-assign]
    app.include_router(ops.router)
    app.include_router(openai.router)
    app.include_router(dify.router)
    app.include_router(kiosk.router)
    app.include_router(staff.router)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(HostCheck, allowed_hosts=settings.allowed_hosts, trusted_proxies=settings.trusted_proxies)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    return app
