"""Operations endpoints: liveness and readiness, no key needed (probes and load balancers use them)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from edge.store.disk import database_bytes, volume_usage

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    checks: dict[str, Any] = {"loaded": getattr(state, "ready", False)}
    llm = getattr(state, "llm", None)
    if llm is not None:
        depth = llm.queue_depth()
        checks["llm_queue_depth"] = depth
        checks["llm_queue_full"] = depth >= state.settings.llm_max_queue
    # A low volume is a warning, not unreadiness: the box still answers (turns fail 503 only once it is full),
    # and taking it out of service would turn clear answers into refused connections.
    settings = state.settings
    free = volume_usage(settings.data_dir).free
    checks["disk_free_bytes"] = free
    if free < settings.disk_warn_free_mb * 2**20:
        checks["warnings"] = [
            f"data volume low: {free / 2**20:.0f} MB free (KIOSK_DISK_WARN_FREE_MB={settings.disk_warn_free_mb}); "
            "old conversations are deleted only once pushed (KIOSK_RETENTION_DAYS)"
        ]
    ready = checks["loaded"] and not checks.get("llm_queue_full", False)
    return JSONResponse({"status": "ready" if ready else "not ready", **checks}, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = request.app.state
    assistant = getattr(state, "assistant", None)
    if assistant is not None:
        state.metrics.refresh(state.cache, getattr(state, "llm", None))
    sync = getattr(state, "sync_figures", None)
    if sync is not None:
        state.metrics.refresh_sync(*await run_in_threadpool(sync))
    handoffs = getattr(state, "handoffs", None)
    if handoffs is not None:
        state.metrics.refresh_handoffs(await run_in_threadpool(handoffs.counts))
    state.metrics.refresh_disk(volume_usage(state.settings.data_dir), database_bytes(state.settings.database_path))
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
