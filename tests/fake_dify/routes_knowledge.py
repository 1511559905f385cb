"""The knowledge (dataset key) endpoints: what the sync agent pulls, and what tests use to edit central."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_dify import render
from tests.fake_dify.errors import InvalidParam, NotFound
from tests.fake_dify.knowledge import DOCUMENT_ACTIONS, Document
from tests.fake_dify.wire import ctx, dataset_auth, json_body, page_limit, quirky_page, route, text

DISPLAY_STATUSES = ("queuing", "indexing", "paused", "error", "available", "disabled", "archived")
DATASET = "/v1/datasets/{dataset_id:uuid}"
DOCUMENT = DATASET + "/documents/{document_id:uuid}"
SEGMENT = DOCUMENT + "/segments/{segment_id:uuid}"


def _document(request: Request) -> Document:
    _, dataset = dataset_auth(request, request.path_params["dataset_id"])
    assert dataset is not None
    return ctx(request).state.knowledge.document(dataset.id, request.path_params["document_id"])


async def list_datasets(request: Request) -> Response:
    key, _ = dataset_auth(request)
    page, limit = page_limit(request)
    state = ctx(request).state
    with state.lock:
        rows = state.knowledge.list_datasets(request.query_params.get("keyword", ""), key.dataset_ids)
        if request.query_params.getlist("tag_ids"):
            rows = []  # the fake's datasets carry no tags
        chunk, meta = quirky_page(rows, page, limit)
        return JSONResponse({"data": [render.dataset(state, d) for d in chunk], **meta})


async def get_dataset(request: Request) -> Response:
    _, dataset = dataset_auth(request, request.path_params["dataset_id"])
    state = ctx(request).state
    with state.lock:
        return JSONResponse(render.dataset(state, dataset))  # type: ignore[arg-type]


async def list_documents(request: Request) -> Response:
    _, dataset = dataset_auth(request, request.path_params["dataset_id"])
    assert dataset is not None
    page, limit = page_limit(request)
    status = request.query_params.get("status") or None
    if status is not None and status not in DISPLAY_STATUSES:
        raise InvalidParam(f"Invalid status argument: {status}", params="status")
    state = ctx(request).state
    with state.lock:
        rows = state.knowledge.list_documents(dataset.id, request.query_params.get("keyword", ""), status)
        chunk, meta = quirky_page(rows, page, limit)
        return JSONResponse({"data": [render.document(state, d) for d in chunk], **meta})


async def get_document(request: Request) -> Response:
    metadata = request.query_params.get("metadata", "all")
    doc = _document(request)
    if metadata not in ("all", "only", "without"):
        raise InvalidParam(f"Invalid metadata value: {metadata}", params="metadata")
    state = ctx(request).state
    with state.lock:
        return JSONResponse(render.document_detail(state, doc, metadata))


async def delete_document(request: Request) -> Response:
    doc = _document(request)
    ctx(request).state.knowledge.delete_document(doc.id)
    return Response(status_code=204)


def _separator(body: dict[str, Any]) -> str:
    rule = body.get("process_rule")
    if isinstance(rule, dict) and rule.get("mode") == "custom":
        segmentation = (rule.get("rules") or {}).get("segmentation") or {}
        separator = segmentation.get("separator")
        if isinstance(separator, str) and separator:
            return separator.replace("\\n", "\n")  # as Dify does: a typed "\\n" means a newline
    return "\n\n"


async def create_by_text(request: Request) -> Response:
    _, dataset = dataset_auth(request, request.path_params["dataset_id"])
    assert dataset is not None
    body = await json_body(request)
    name, content = text(body, "name"), text(body, "text")
    technique = body.get("indexing_technique")
    if technique not in (None, "high_quality", "economy"):
        raise InvalidParam("Invalid indexing technique.", params="indexing_technique")
    if dataset.indexing_technique is None and technique is None:
        raise InvalidParam("indexing_technique is required.", params="indexing_technique")
    state = ctx(request).state
    with state.lock:
        if technique is not None:
            dataset.indexing_technique = technique
        doc = state.knowledge.add_document(dataset.id, name, content, separator=_separator(body))
        return JSONResponse({"document": render.document(state, doc), "batch": doc.batch})


async def update_by_text(request: Request) -> Response:
    doc = _document(request)
    body = await json_body(request)
    name, content = text(body, "name", required=False) or None, text(body, "text", required=False) or None
    if body.get("text") is not None and name is None:
        raise InvalidParam("name is required when text is provided", params="name")
    state = ctx(request).state
    with state.lock:
        doc = state.knowledge.update_document_text(doc.id, name=name, text=content)
        return JSONResponse({"document": render.document(state, doc), "batch": doc.batch})


async def indexing_status(request: Request) -> Response:
    _, dataset = dataset_auth(request, request.path_params["dataset_id"])
    assert dataset is not None
    state = ctx(request).state
    with state.lock:
        docs = state.knowledge.documents_in_batch(dataset.id, request.path_params["batch"])
        if not docs:
            raise NotFound("Documents not found.")
        return JSONResponse({"data": [render.indexing_status(state, d) for d in docs]})


async def document_status(request: Request) -> Response:
    _, dataset = dataset_auth(request, request.path_params["dataset_id"])
    assert dataset is not None
    action = request.path_params["action"]
    body = await json_body(request)
    ids = body.get("document_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidParam("document_ids must be a list of ids", params="document_ids")
    if action not in DOCUMENT_ACTIONS:
        raise InvalidParam("Invalid action.", code="invalid_action")
    ctx(request).state.knowledge.set_document_status(dataset.id, ids, action)
    return JSONResponse({"result": "success"})


async def list_segments(request: Request) -> Response:
    doc = _document(request)
    page, limit = page_limit(request)
    state = ctx(request).state
    with state.lock:
        rows = state.knowledge.list_segments(
            doc.id, request.query_params.getlist("status"), request.query_params.get("keyword", "")
        )
        chunk, meta = quirky_page(rows, page, limit)
        return JSONResponse({"data": [render.segment(state, s) for s in chunk], "doc_form": doc.doc_form, **meta})


def _segment_item(item: Any, doc_form: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidParam("Each segment must be an object", params="segments")
    content = text(item, "content", required=False)
    if not content.strip():
        raise InvalidParam("Content is empty")
    answer = text(item, "answer", required=False)
    if doc_form == "qa_model" and not answer.strip():
        raise InvalidParam("Answer is required")
    keywords = item.get("keywords")
    if keywords is not None and not (isinstance(keywords, list) and all(isinstance(k, str) for k in keywords)):
        raise InvalidParam("keywords must be a list of strings", params="keywords")
    return {"content": content, "answer": answer, "keywords": keywords}


async def create_segments(request: Request) -> Response:
    doc = _document(request)
    state = ctx(request).state
    if state.knowledge.indexing_status(doc) != "completed":
        raise NotFound("Document is not completed.")
    if not doc.enabled:
        raise NotFound("Document is disabled.")
    body = await json_body(request)
    items = body.get("segments")
    if not isinstance(items, list) or not items:
        raise InvalidParam("segments is required", params="segments")
    parsed = [_segment_item(item, doc.doc_form) for item in items]
    with state.lock:
        rows = state.knowledge.add_segments(doc.id, parsed)
        return JSONResponse({"data": [render.segment(state, s) for s in rows], "doc_form": doc.doc_form})


async def get_segment(request: Request) -> Response:
    doc = _document(request)
    state = ctx(request).state
    with state.lock:
        row = state.knowledge.segment(doc.id, request.path_params["segment_id"])
        return JSONResponse({"data": render.segment(state, row), "doc_form": doc.doc_form})


async def update_segment(request: Request) -> Response:
    doc = _document(request)
    state = ctx(request).state
    row = state.knowledge.segment(doc.id, request.path_params["segment_id"])
    body = await json_body(request)
    changes = body.get("segment")
    if not isinstance(changes, dict):
        raise InvalidParam("segment is required", params="segment")
    enabled = changes.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise InvalidParam("enabled must be a boolean", params="enabled")
    if not row.enabled and not enabled:
        raise InvalidParam("Can't update disabled segment")
    if "content" in changes:
        _segment_item({**changes, "answer": changes.get("answer") or "-"}, doc.doc_form)  # same rules as create
    allowed = {k: changes.get(k) for k in ("content", "answer", "keywords", "enabled")}
    with state.lock:
        row = state.knowledge.update_segment(row.id, **allowed)
        return JSONResponse({"data": render.segment(state, row), "doc_form": doc.doc_form})


async def delete_segment(request: Request) -> Response:
    doc = _document(request)
    state = ctx(request).state
    row = state.knowledge.segment(doc.id, request.path_params["segment_id"])
    state.knowledge.delete_segment(row.id)
    return Response(status_code=204)


def routes() -> list[Route]:
    return [
        route("/v1/datasets", list_datasets, "GET"),
        route(DATASET, get_dataset, "GET"),
        route(DATASET + "/document/create-by-text", create_by_text, "POST"),
        route(DATASET + "/document/create_by_text", create_by_text, "POST"),  # Dify's older alias
        route(DATASET + "/documents", list_documents, "GET"),
        route(DATASET + "/documents/status/{action}", document_status, "PATCH"),
        route(DATASET + "/documents/{batch}/indexing-status", indexing_status, "GET"),
        route(DOCUMENT, get_document, "GET"),
        route(DOCUMENT, delete_document, "DELETE"),
        route(DOCUMENT + "/update-by-text", update_by_text, "POST"),
        route(DOCUMENT + "/update_by_text", update_by_text, "POST"),
        route(DOCUMENT + "/segments", list_segments, "GET"),
        route(DOCUMENT + "/segments", create_segments, "POST"),
        route(SEGMENT, get_segment, "GET"),
        route(SEGMENT, update_segment, "POST"),
        route(SEGMENT, delete_segment, "DELETE"),
    ]
