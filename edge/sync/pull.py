"""Pull, central → edge: knowledge segments, annotations and app parameters (spec §8(b)).

Dify offers no change cursor, so each pull lists everything, compares it with the local fingerprints
(`updated_at`, `index_node_hash`, `enabled`) and writes only the difference: changed segments are
re-embedded locally with the bundle's embedder (the API never returns vectors), and each dataset's
changes land in one transaction, so a question never sees half an update.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge.store.db import transaction
from edge.store.knowledge import ANNOTATIONS_DATASET, ANNOTATIONS_NAME, SEED_DATASET, KnowledgeStore, Segment
from edge.store.parameters import CentralParameters
from edge.sync.client import DifyClient, Listing, Unreachable

log = logging.getLogger(__name__)
MAX_RESCANS = 3  # a listing whose total moved while it was read is read again, at most this often


class TextEmbedder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class PullReport:
    datasets: int = 0
    listed: int = 0
    embedded: int = 0
    deleted: int = 0
    skipped_documents: int = 0
    details: dict[str, Any] = field(default_factory=dict)


VOLATILE_FIELDS = frozenset({"hit_count"})  # moves with every central answer; not a change of content


def _signature(listing: Listing) -> dict[str, str]:
    return {
        str(item["id"]): json.dumps({k: v for k, v in item.items() if k not in VOLATILE_FIELDS}, sort_keys=True)
        for item in listing.items
    }


def _stable(listing: Callable[[], Listing]) -> Listing:
    """A listing read twice in a row with the same result.

    Dify pages by offset, so a row deleted or inserted while the pages are read shifts the later
    pages: one row is skipped and another seen twice, and `total` need not move (one deleted, one
    added). Only two identical consecutive reads show that nothing moved in between.
    """
    previous = listing()
    for _ in range(MAX_RESCANS):
        current = listing()
        if not current.drifted and _signature(current) == _signature(previous):
            return current
        previous = current
    raise Unreachable("central kept changing while it was listed; trying again next run")


def _segment(dataset: dict[str, Any], document: dict[str, Any], item: dict[str, Any]) -> Segment:
    return Segment(
        id=str(item["id"]),
        dataset_id=str(dataset["id"]),
        dataset_name=str(dataset.get("name") or ""),
        document_id=str(document["id"]),
        document_name=str(document.get("name") or ""),
        position=int(item.get("position") or 0),
        content=str(item.get("content") or ""),
        answer=item.get("answer") or None,
        keywords=tuple(str(k) for k in item.get("keywords") or ()),
        enabled=bool(item.get("enabled", True)) and item.get("status", "completed") == "completed",
        index_node_hash=str(item.get("index_node_hash") or ""),
        updated_at=int(item.get("updated_at") or 0),
    )


def apply_diff(
    store: KnowledgeStore,
    dataset_id: str,
    remote: list[Segment],
    embedder: TextEmbedder,
    embedder_id: str,
    keep: set[str] | None = None,
) -> tuple[int, int]:
    """Write what differs between `remote` and the local copy of one dataset; returns (embedded, deleted).

    `keep`: local ids to leave alone although central did not list them (documents still indexing).
    Disabled segments are stored disabled (not searched) without spending an embedding on them.
    """
    local = store.fingerprints(dataset_id)
    remote_ids = {segment.id for segment in remote}
    changed = [s for s in remote if local.get(s.id) != s.fingerprint()]
    gone = [i for i in local if i not in remote_ids and i not in (keep or set())]
    to_embed = [s for s in changed if s.enabled]
    vectors = embedder.embed([s.content for s in to_embed]) if to_embed else None
    # Disabled rows first (no vector), then the embedded ones -- both in one transaction with the deletes.
    with transaction(store.db):
        store.apply([s for s in changed if not s.enabled], None, None)
        store.apply(to_embed, vectors, embedder_id, deletes=gone)
    return len(to_embed), len(gone)


def pull_knowledge(
    client: DifyClient,
    dataset_key: str,
    dataset_ids: list[str],
    store: KnowledgeStore,
    embedder: TextEmbedder,
    embedder_id: str,
    exclude: frozenset[str] = frozenset(),
) -> PullReport:
    """Mirror the configured datasets (all the key sees when none are configured), less `exclude`
    (the transcripts dataset the box itself writes to)."""
    report = PullReport()
    datasets = _stable(lambda: client.datasets(dataset_key)).items
    if dataset_ids:
        datasets = [d for d in datasets if str(d["id"]) in set(dataset_ids)]
    datasets = [d for d in datasets if str(d["id"]) not in exclude]
    for dataset in datasets:
        dataset_id = str(dataset["id"])
        remote: list[Segment] = []
        keep: set[str] = set()
        local_by_document = store.ids_by_document(dataset_id)
        for document in _stable(lambda d=dataset_id: client.documents(dataset_key, d)).items:
            if document.get("indexing_status", "completed") != "completed":
                keep |= local_by_document.get(str(document["id"]), set())  # pick it up once indexed
                report.skipped_documents += 1
                continue
            if not document.get("enabled", True) or document.get("archived", False):
                continue  # its segments are removed locally
            items = _stable(lambda d=dataset_id, doc=str(document["id"]): client.segments(dataset_key, d, doc)).items
            remote.extend(_segment(dataset, document, item) for item in items)
        embedded, deleted = apply_diff(store, dataset_id, remote, embedder, embedder_id, keep)
        report.datasets += 1
        report.listed += len(remote)
        report.embedded += embedded
        report.deleted += deleted
    synced = {str(d["id"]) for d in datasets}
    for dataset_id in store.dataset_ids() - synced - {ANNOTATIONS_DATASET}:
        # central no longer has (or no longer shares) it; the seed gives way once central has knowledge
        if dataset_id != str(SEED_DATASET) or synced:
            report.deleted += store.delete_dataset(dataset_id)
    return report


def annotation_segment(item: dict[str, Any]) -> Segment:
    """An annotation as a Q&A segment of the box's annotations dataset; Dify exposes no `updated_at`,
    so a hash of (question, answer) is its fingerprint (spec §4)."""
    question, answer = str(item.get("question") or ""), str(item.get("answer") or "")
    digest = hashlib.sha256(json.dumps([question, answer], ensure_ascii=False).encode()).hexdigest()
    return Segment(
        id=str(item["id"]),
        dataset_id=ANNOTATIONS_DATASET,
        dataset_name=ANNOTATIONS_NAME,
        document_id=ANNOTATIONS_DATASET,
        document_name=ANNOTATIONS_NAME,
        content=question,
        answer=answer,
        index_node_hash=digest,
        updated_at=0,
    )


def pull_annotations(
    client: DifyClient, app_key: str, store: KnowledgeStore, embedder: TextEmbedder, embedder_id: str
) -> PullReport:
    """The app's annotations become answers the box serves without the LLM (see edge.assistant.policy)."""
    items = _stable(lambda: client.annotations(app_key)).items
    remote = [annotation_segment(item) for item in items if item.get("question") and item.get("answer")]
    embedded, deleted = apply_diff(store, ANNOTATIONS_DATASET, remote, embedder, embedder_id)
    return PullReport(datasets=1, listed=len(remote), embedded=embedded, deleted=deleted)


def pull_parameters(client: DifyClient, app_key: str, parameters: CentralParameters) -> PullReport:
    body = client.parameters(app_key)
    changed = parameters.save(body)
    return PullReport(listed=1, embedded=0, details={"changed": changed})
