"""Rows → Dify's wire shapes. Storage fields never leak; every documented field is present.

Where Dify's OpenAPI document and Dify's code differ, the code wins (spec §9), e.g. blocking
`id == message_id`, no `updated_at` on document list items, `inputs` as a JSON string on run detail.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tests.fake_dify.knowledge import STAGES, Dataset, Document, KnowledgeStore, Segment
from tests.fake_dify.state import (
    Annotation,
    App,
    Conversation,
    EndUser,
    FakeDifyState,
    Message,
    WorkflowRun,
)


def iso(ts: int | float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def page(data: list[Any], *, page_no: int, limit: int, total: int, has_more: bool) -> dict[str, Any]:
    return {"data": data, "has_more": has_more, "limit": limit, "total": total, "page": page_no}


# --- knowledge ------------------------------------------------------------------------------------


def dataset(state: FakeDifyState, row: Dataset) -> dict[str, Any]:
    ks = state.knowledge
    docs = [d for d in ks.documents.values() if d.dataset_id == row.id]
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "provider": "vendor",
        "permission": "only_me",
        "data_source_type": "upload_file",
        "indexing_technique": row.indexing_technique,
        "app_count": sum(row.id in app.dataset_ids for app in state.apps.values()),
        "document_count": len(docs),
        "word_count": sum(s.word_count for s in ks.segments.values() if s.dataset_id == row.id),
        "created_by": state.owner_id,
        "author_name": state.owner_name,
        "created_at": row.created_at,
        "updated_by": state.owner_id,
        "updated_at": row.updated_at,
        "embedding_model": row.embedding_model,
        "embedding_model_provider": row.embedding_model_provider,
        "embedding_available": True,
        "retrieval_model_dict": {
            "search_method": "semantic_search",
            "reranking_enable": False,
            "reranking_mode": None,
            "reranking_model": {"reranking_provider_name": "", "reranking_model_name": ""},
            "weights": None,
            "top_k": 3,
            "score_threshold_enabled": False,
            "score_threshold": 0.0,
        },
        "summary_index_setting": None,
        "tags": [],
        "doc_form": row.doc_form,
        "external_knowledge_info": None,
        "external_retrieval_model": None,
        "doc_metadata": [],
        "built_in_field_enabled": False,
        "pipeline_id": None,
        "runtime_mode": "general",
        "chunk_structure": None,
        "icon_info": None,
        "is_published": False,
        "total_documents": len(docs),
        "total_available_documents": sum(ks.display_status(d) == "available" for d in docs),
        "enable_api": row.enable_api,
        "is_multimodal": False,
        "maintainer": state.owner_name,
        "partial_member_list": [],
    }


def _upload_file(state: FakeDifyState, row: Document) -> dict[str, Any]:
    size = sum(len(s.content.encode()) for s in state.knowledge.segments_of(row.id))
    return {
        "id": row.upload_file_id,
        "name": row.name,
        "size": size,
        "extension": "txt",
        "mime_type": "text/plain",
        "created_by": state.owner_id,
        "created_at": row.created_at,
    }


def _document_common(state: FakeDifyState, row: Document) -> dict[str, Any]:
    ks: KnowledgeStore = state.knowledge
    segments = ks.segments_of(row.id)
    return {
        "id": row.id,
        "position": row.position,
        "data_source_type": "upload_file",
        "dataset_process_rule_id": row.process_rule_id,
        "name": row.name,
        "created_from": "api",
        "created_by": state.owner_id,
        "created_at": row.created_at,
        "tokens": sum(s.tokens for s in segments),
        "indexing_status": ks.indexing_status(row),
        "error": row.error,
        "enabled": row.enabled,
        "disabled_at": row.disabled_at,
        "disabled_by": None if row.enabled else state.owner_id,
        "archived": row.archived,
        "display_status": ks.display_status(row),
        "word_count": sum(s.word_count for s in segments),
        "hit_count": 0,
        "doc_form": row.doc_form,
        "doc_metadata": [],
        "summary_index_status": None,
        "need_summary": False,
    }


def document(state: FakeDifyState, row: Document) -> dict[str, Any]:
    """A list item (also the `document` of create/update-by-text): no `updated_at`, as in Dify."""
    body = _document_common(state, row)
    body["data_source_info"] = {"upload_file_id": row.upload_file_id}
    body["data_source_detail_dict"] = {"upload_file": _upload_file(state, row)}
    return body


def document_detail(state: FakeDifyState, row: Document, metadata: str = "all") -> dict[str, Any]:
    if metadata == "only":
        return {"id": row.id, "doc_type": None, "doc_metadata": []}
    ks = state.knowledge
    segments = ks.segments_of(row.id)
    completed_at = ks.completed_at(row)
    body = _document_common(state, row)
    rule = {"mode": "automatic", "rules": {"pre_processing_rules": [], "segmentation": {"separator": "\n\n"}}}
    body |= {
        "data_source_info": {"upload_file": _upload_file(state, row)},
        "dataset_process_rule": {"id": row.process_rule_id, "mode": "automatic"},
        "document_process_rule": rule,
        "doc_language": row.doc_language,
        "doc_type": None,
        "completed_at": completed_at,
        "updated_at": row.updated_at,
        "indexing_latency": None if completed_at is None else float(completed_at - int(row.indexing_started)),
        "segment_count": len(segments),
        "average_segment_length": (sum(len(s.content) for s in segments) / len(segments)) if segments else 0.0,
    }
    if metadata == "without":
        del body["doc_metadata"]
    return body


def segment(state: FakeDifyState, row: Segment) -> dict[str, Any]:
    status = state.knowledge.segment_status(row)
    done = status == "completed"
    return {
        "id": row.id,
        "position": row.position,
        "document_id": row.document_id,
        "content": row.content,
        "sign_content": row.content,
        "answer": row.answer,
        "word_count": row.word_count,
        "tokens": row.tokens,
        "keywords": list(row.keywords),
        "index_node_id": row.index_node_id,
        "index_node_hash": row.index_node_hash,
        "hit_count": row.hit_count,
        "enabled": row.enabled,
        "disabled_at": row.disabled_at,
        "disabled_by": None if row.enabled else state.owner_id,
        "status": status,
        "created_by": state.owner_id,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "updated_by": state.owner_id,
        "indexing_at": row.updated_at,
        "completed_at": row.updated_at if done else None,
        "error": None,
        "stopped_at": None,
        "child_chunks": [],
        "attachments": [],
        "summary": None,
    }


def indexing_status(state: FakeDifyState, row: Document) -> dict[str, Any]:
    ks = state.knowledge
    status = ks.indexing_status(row)
    reached = STAGES.index(status) if status in STAGES else 0
    started, step = int(row.indexing_started), ks.index_step_seconds

    def at(stage: int) -> int | None:
        return started + int(step * stage) if reached >= stage else None

    total = len(ks.segments_of(row.id))
    return {
        "id": row.id,
        "indexing_status": status,
        "processing_started_at": at(1),
        "parsing_completed_at": at(2),
        "cleaning_completed_at": at(3),
        "splitting_completed_at": at(4),
        "completed_at": ks.completed_at(row),
        "paused_at": None,
        "error": row.error,
        "stopped_at": None,
        "completed_segments": total if status == "completed" else 0,
        "total_segments": total,
    }


# --- apps -----------------------------------------------------------------------------------------


def annotation(row: Annotation) -> dict[str, Any]:
    return {
        "id": row.id,
        "question": row.question,
        "answer": row.answer,
        "hit_count": row.hit_count,
        "created_at": row.created_at,
    }


def parameters(app: App) -> dict[str, Any]:
    return {
        "opening_statement": app.opening_statement,
        "suggested_questions": list(app.suggested_questions),
        "suggested_questions_after_answer": {"enabled": False},
        "speech_to_text": {"enabled": False},
        "text_to_speech": {"enabled": False, "voice": "", "language": "", "autoPlay": "disabled"},
        "retriever_resource": {"enabled": app.retriever_resource_enabled},
        "annotation_reply": {"enabled": app.annotation_reply_enabled},
        "more_like_this": {"enabled": False},
        "sensitive_word_avoidance": {"enabled": False},
        "user_input_form": [_form_item(item) for item in app.user_input_form],
        "file_upload": {
            "image": {"enabled": False, "number_limits": 3, "detail": "high", "transfer_methods": ["remote_url"]}
        },
        "system_parameters": {
            "file_size_limit": 15,
            "image_file_size_limit": 10,
            "audio_file_size_limit": 50,
            "video_file_size_limit": 100,
            "workflow_file_upload_limit": 10,
        },
    }


def _form_item(item: dict[str, Any]) -> dict[str, Any]:
    """Dify's form items always carry `required` and `default` (and `options` for a select)."""
    ((kind, config),) = item.items()
    extra = {"options": []} if kind == "select" else {}
    return {kind: {"required": False, "default": "", **extra, **config}}


def info(state: FakeDifyState, app: App) -> dict[str, Any]:
    return {
        "name": app.name,
        "description": app.description,
        "tags": [],
        "mode": app.mode,
        "author_name": state.owner_name,
    }


def site(app: App) -> dict[str, Any]:
    return {
        "title": app.name,
        "chat_color_theme": "#1C64F2",
        "chat_color_theme_inverted": False,
        "icon_type": "emoji",
        "icon": "🤖",
        "icon_background": "#FFEAD5",
        "icon_url": None,
        "description": app.description,
        "copyright": "",
        "privacy_policy": "",
        "input_placeholder": None,
        "custom_disclaimer": "",
        "default_language": "en-US",
        "show_workflow_steps": False,
        "use_icon_as_answer_icon": False,
    }


def conversation(row: Conversation) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "inputs": row.inputs,
        "status": row.status,
        "introduction": row.introduction,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def usage(query: str, answer: str) -> dict[str, Any]:
    prompt, completion = max(1, len(query) // 4), max(1, len(answer) // 4)
    return {
        "prompt_tokens": prompt,
        "prompt_unit_price": "0.001",
        "prompt_price_unit": "0.001",
        "prompt_price": f"{prompt * 0.000001:.7f}",
        "completion_tokens": completion,
        "completion_unit_price": "0.002",
        "completion_price_unit": "0.001",
        "completion_price": f"{completion * 0.000002:.7f}",
        "total_tokens": prompt + completion,
        "total_price": f"{prompt * 0.000001 + completion * 0.000002:.7f}",
        "currency": "USD",
        "latency": 0.05,
    }


def metadata(state: FakeDifyState, row: Message) -> dict[str, Any]:
    body: dict[str, Any] = {"usage": usage(row.query, row.answer), "retriever_resources": row.retriever_resources}
    if row.annotation_id:
        body["annotation_reply"] = {
            "id": row.annotation_id,
            "account": {"id": state.owner_id, "name": state.owner_name},
        }
    return body


def message(row: Message) -> dict[str, Any]:
    tokens = usage(row.query, row.answer)
    return {
        "id": row.id,
        "conversation_id": row.conversation_id,
        "parent_message_id": row.parent_message_id,
        "inputs": row.inputs,
        "query": row.query,
        "answer": row.answer,
        "status": row.status,
        "error": row.error,
        "message_files": [],
        "feedback": {"rating": row.feedback["rating"]} if row.feedback else None,
        "retriever_resources": row.retriever_resources,
        "agent_thoughts": [],
        "created_at": row.created_at,
        "extra_contents": [],
        "message_tokens": tokens["prompt_tokens"],
        "answer_tokens": tokens["completion_tokens"],
        "total_tokens": tokens["total_tokens"],
        "provider_response_latency": tokens["latency"],
        "total_price": tokens["total_price"],
        "currency": "USD",
    }


def end_user_summary(user: EndUser) -> dict[str, Any]:
    return {"id": user.id, "type": "service-api", "is_anonymous": user.is_anonymous, "session_id": user.session_id}


def workflow_finished_data(run: WorkflowRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "workflow_id": run.workflow_id,
        "status": run.status,
        "outputs": run.outputs,
        "error": run.error,
        "elapsed_time": run.elapsed_time,
        "total_tokens": run.total_tokens,
        "total_steps": run.total_steps,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
    }


def workflow_log(state: FakeDifyState, run: WorkflowRun) -> dict[str, Any]:
    return {
        "id": run.log_id,
        "workflow_run": {
            "id": run.id,
            "version": "2026-01-01 00:00:00.000000",
            "status": run.status,
            "error": run.error,
            "elapsed_time": run.elapsed_time,
            "total_tokens": run.total_tokens,
            "total_steps": run.total_steps,
            "created_at": run.created_at,
            "finished_at": run.finished_at,
            "exceptions_count": 0,
            "triggered_from": "app-run",
        },
        "created_from": "service-api" if run.end_user_id else "installed-app",
        "created_by_role": "end_user" if run.end_user_id else "account",
        "created_by_account": (
            None if run.end_user_id else {"id": run.account_id, "name": state.owner_name, "email": state.owner_email}
        ),
        # Dify sends null for a run an account started: a client must not read it as anyone's
        "created_by_end_user": end_user_summary(state.end_users[run.end_user_id]) if run.end_user_id else None,
        "created_at": run.created_at,
        "details": None,
    }


def workflow_run_detail(run: WorkflowRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "workflow_id": run.workflow_id,
        "status": run.status,
        "inputs": json.dumps(run.inputs),
        "outputs": run.outputs,
        "error": run.error,
        "total_steps": run.total_steps,
        "total_tokens": run.total_tokens,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "elapsed_time": run.elapsed_time,
    }
