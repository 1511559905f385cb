"""What grounded an answer, in the shape of Dify's RetrieverResource (minus the per-message fields).

A source is stored with the turn and rendered by both API families, so it is built once here:
curated answers as a one-segment document per label of the box's "Curated answers" dataset, and
knowledge hits as the Dify segment they came from.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

CURATED_DATASET = uuid.uuid5(uuid.NAMESPACE_URL, "kiosk-edge:curated-answers")
Source = dict[str, Any]


def curated_source(label: str, text: str, score: float) -> Source:
    document = uuid.uuid5(CURATED_DATASET, label)
    return {
        "dataset_id": str(CURATED_DATASET),
        "dataset_name": "Curated answers",
        "document_id": str(document),
        "document_name": label,
        "data_source_type": "curated",
        "segment_id": str(uuid.uuid5(document, "segment")),
        "segment_position": 1,
        "score": round(float(score), 4),
        "index_node_hash": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "content": text,
    }


def knowledge_source(segment: dict[str, Any], text: str, score: float) -> Source:
    return {
        "dataset_id": segment["dataset_id"],
        "dataset_name": segment.get("dataset_name") or "",
        "document_id": segment["document_id"],
        "document_name": segment.get("document_name") or "",
        "data_source_type": "knowledge",
        "segment_id": segment["id"],
        "segment_position": int(segment.get("position") or 0),
        "score": round(float(score), 4),
        "index_node_hash": segment.get("index_node_hash") or "",
        "content": text,
    }


def legacy_source(source: Source) -> Source:
    """Turns stored before sources carried their dataset ({label, content}) read as curated sources."""
    if "dataset_id" in source:
        return source
    return curated_source(str(source.get("label", "")), str(source.get("content", "")), source.get("score", 1.0))
