"""App-key endpoints other than chat: app settings, annotations, and the ingest workflow's run and logs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_dify import render
from tests.fake_dify.errors import NO_SUCH_URL, InvalidParam, NotFound
from tests.fake_dify.faults import RequestInfo, Rule
from tests.fake_dify.inputs import validate_inputs
from tests.fake_dify.sse import Event, sse_body, sse_response
from tests.fake_dify.state import WorkflowRun
from tests.fake_dify.wire import (
    app_auth,
    ctx,
    int_arg,
    json_body,
    note_fault,
    page_limit,
    quirky_page,
    route,
    text,
    user,
)

RUN_STATUSES = ("succeeded", "failed", "stopped")
KEYWORD_CHARS = 30  # Dify's workflow log search looks at the first 30 characters of the keyword


async def index(request: Request) -> Response:
    """The unauthenticated probe: `GET /v1/`."""
    version = ctx(request).state.server_version
    return JSONResponse({"welcome": "Dify OpenAPI", "api_version": "v1", "server_version": version})


async def parameters(request: Request) -> Response:
    return JSONResponse(render.parameters(app_auth(request)))


async def info(request: Request) -> Response:
    return JSONResponse(render.info(ctx(request).state, app_auth(request)))


async def meta(request: Request) -> Response:
    app_auth(request)
    return JSONResponse({"tool_icons": {}})


async def site(request: Request) -> Response:
    return JSONResponse(render.site(app_auth(request)))


# --- annotations ----------------------------------------------------------------------------------


async def list_annotations(request: Request) -> Response:
    app = app_auth(request)
    page, limit = page_limit(request)
    state = ctx(request).state
    with state.lock:
        rows = state.list_annotations(app.id, request.query_params.get("keyword", ""))
        chunk, meta_ = quirky_page(rows, page, limit)
        return JSONResponse({"data": [render.annotation(a) for a in chunk], **meta_})


async def _question_answer(request: Request) -> tuple[str, str]:
    body = await json_body(request)
    return text(body, "question"), text(body, "answer")


async def create_annotation(request: Request) -> Response:
    app = app_auth(request)
    question, answer = await _question_answer(request)
    return JSONResponse(render.annotation(ctx(request).state.add_annotation(app.id, question, answer)), status_code=201)


async def update_annotation(request: Request) -> Response:
    app = app_auth(request)
    state = ctx(request).state
    row = state.annotation(request.path_params["annotation_id"], app.id)
    question, answer = await _question_answer(request)
    return JSONResponse(render.annotation(state.update_annotation(row.id, question, answer)))


async def delete_annotation(request: Request) -> Response:
    app = app_auth(request)
    state = ctx(request).state
    state.delete_annotation(state.annotation(request.path_params["annotation_id"], app.id).id)
    return Response(status_code=204)


async def annotation_reply(request: Request) -> Response:
    """Enable/disable is a job; all three settings are required even to disable (spec §9.9)."""
    app = app_auth(request)
    action = request.path_params["action"]
    if action not in ("enable", "disable"):
        raise NotFound(NO_SUCH_URL)
    body = await json_body(request)
    if not isinstance(body.get("score_threshold"), int | float) or isinstance(body.get("score_threshold"), bool):
        raise InvalidParam("score_threshold is required", params="score_threshold")
    text(body, "embedding_provider_name")
    text(body, "embedding_model_name")
    state = ctx(request).state
    with state.lock:
        job_id = state.ids.uuid()
        state.annotation_jobs[job_id] = {"app_id": app.id, "action": action, "polls": 0}
    return JSONResponse({"job_id": job_id, "job_status": "waiting"})


async def annotation_reply_status(request: Request) -> Response:
    """Each poll moves the job on: waiting → processing → completed (and then the setting applies)."""
    app = app_auth(request)
    state = ctx(request).state
    with state.lock:
        job = state.annotation_jobs.get(request.path_params["job_id"])
        if job is None or job["app_id"] != app.id or job["action"] != request.path_params["action"]:
            raise InvalidParam("The job does not exist.")
        job["polls"] += 1
        status = ("waiting", "processing", "completed")[min(job["polls"] - 1, 2)]
        if status == "completed":
            app.annotation_reply_enabled = job["action"] == "enable"
    return JSONResponse({"job_id": request.path_params["job_id"], "job_status": status, "error_msg": ""})


# --- workflows ------------------------------------------------------------------------------------


async def run_workflow(request: Request) -> Response:
    app = app_auth(request, "workflow")
    body = await json_body(request)
    inputs = body.get("inputs")
    if not isinstance(inputs, dict):
        raise InvalidParam("inputs is required" if inputs is None else "inputs must be an object", params="inputs")
    session = user(body)
    mode = body.get("response_mode") or "blocking"
    if mode not in ("blocking", "streaming"):
        raise InvalidParam("response_mode must be blocking or streaming", params="response_mode")
    c = ctx(request)
    state = c.state
    with state.lock:
        clean = validate_inputs(app.user_input_form, inputs)
        run = state.record_workflow_run(
            app,
            state.end_user(app.id, session),
            clean,
            running_s=c.config.run_seconds,
            list_delay_s=c.config.run_list_delay,
        )
        task_id = state.ids.uuid()
    if mode == "blocking":  # Dify answers a blocking run when it has finished
        await anyio.sleep(c.config.run_seconds)
        with state.lock:
            state.finish_runs()
            data = render.workflow_finished_data(run)
        return JSONResponse({"task_id": task_id, "workflow_run_id": run.id, "data": data})
    fault = c.faults.take("stream", RequestInfo.from_scope(request.scope))

    def on_error(sent: list[Event], rule: Rule) -> None:
        note_fault(request, rule, "stream_error")
        with state.lock:
            run.status, run.error = "failed", rule.message

    body_ = sse_body(
        _workflow_events(run, task_id, state, c.config.run_seconds),
        ping_interval=c.config.ping_interval,
        fault=fault,
        error_base=lambda: {"workflow_run_id": run.id},  # like the chat stream's, no task_id
        on_error=on_error,
    )
    return sse_response(body_)


async def _workflow_events(run: WorkflowRun, task_id: str, state: Any, run_seconds: float) -> AsyncIterator[Event]:
    common = {"task_id": task_id, "workflow_run_id": run.id}
    started = {"id": run.id, "workflow_id": run.workflow_id, "inputs": run.inputs, "created_at": run.created_at}
    yield {"event": "workflow_started", **common, "data": {**started, "reason": "initial"}}
    await anyio.sleep(run_seconds)
    state.finish_runs()
    finished = {**render.workflow_finished_data(run), "created_by": {}, "exceptions_count": 0, "files": []}
    yield {"event": "workflow_finished", **common, "data": finished}


def _iso_arg(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise InvalidParam(f"{name} must be an ISO 8601 date-time", params=name) from exc


def _keyword_matches(state: Any, run: WorkflowRun, keyword: str) -> bool:
    """Dify's log search: inputs or outputs (as stored JSON), the end user's session id, or the run id."""
    needle = json.dumps(keyword[:KEYWORD_CHARS])[1:-1].lower()  # stored JSON escapes non-ASCII the same way
    haystacks = (json.dumps(run.inputs), json.dumps(run.outputs), state.session_of(run) or "")
    return any(needle in h.lower() for h in haystacks) or keyword.lower() == run.id


async def workflow_logs(request: Request) -> Response:
    app = app_auth(request, "workflow")
    page = int_arg(request, "page", 1, maximum=99999)
    limit = int_arg(request, "limit", 20, maximum=100)
    status = request.query_params.get("status") or None
    if status is not None and status not in RUN_STATUSES:
        raise InvalidParam(f"status must be one of {', '.join(RUN_STATUSES)}", params="status")
    before, after = _iso_arg(request, "created_at__before"), _iso_arg(request, "created_at__after")
    keyword = request.query_params.get("keyword", "")
    c = ctx(request)
    session, account = None, None
    if c.config.logs_user_filter:  # a Dify older than these two filters ignores them, silently
        session = request.query_params.get("created_by_end_user_session_id")
        account = request.query_params.get("created_by_account")
    state = c.state
    with state.lock:
        if account and account != state.owner_email:
            raise InvalidParam(f"Account not found: {account}")
        rows = [
            r
            for r in state.runs_of(app.id)
            if r.listed()
            and (status is None or r.status == status)
            and (before is None or r.created_at < before)
            and (after is None or r.created_at > after)
            and (not keyword or _keyword_matches(state, r, keyword))
            and (session is None or (r.end_user_id is not None and state.session_of(r) == session))
            and (not account or r.account_id is not None)
        ]
        data = [render.workflow_log(state, r) for r in rows[(page - 1) * limit : page * limit]]
        body = {"page": page, "limit": limit, "total": len(rows), "has_more": page * limit < len(rows), "data": data}
        return JSONResponse(body)


async def workflow_run(request: Request) -> Response:
    app = app_auth(request, "workflow")
    state = ctx(request).state
    state.finish_runs()
    run = state.workflow_runs.get(request.path_params["workflow_run_id"])
    if run is None or run.app_id != app.id:
        raise NotFound("Workflow run not found.")
    return JSONResponse(render.workflow_run_detail(run))


def routes() -> list[Route]:
    return [
        route("/v1/", index, "GET"),
        route("/v1/parameters", parameters, "GET"),
        route("/v1/info", info, "GET"),
        route("/v1/meta", meta, "GET"),
        route("/v1/site", site, "GET"),
        route("/v1/apps/annotations", list_annotations, "GET"),
        route("/v1/apps/annotations", create_annotation, "POST"),
        route("/v1/apps/annotations/{annotation_id:uuid}", update_annotation, "PUT"),
        route("/v1/apps/annotations/{annotation_id:uuid}", delete_annotation, "DELETE"),
        route("/v1/apps/annotation-reply/{action}", annotation_reply, "POST"),
        route("/v1/apps/annotation-reply/{action}/status/{job_id:uuid}", annotation_reply_status, "GET"),
        route("/v1/workflows/run", run_workflow, "POST"),
        route("/v1/workflows/logs", workflow_logs, "GET"),
        route("/v1/workflows/run/{workflow_run_id:uuid}", workflow_run, "GET"),
    ]
