"""Pull, central → edge: knowledge segments, annotations and app parameters (spec §8(b)).

Dify offers no change cursor, so each pull lists everything, compares it with the local fingerprints
(`updated_at`, `index_node_hash`, `enabled`) and writes only the difference: changed segments are
re-embedded locally with the bundle's embedder (the API never returns vectors) and written
`CHUNK_ROWS` at a time, each chunk its own short transaction, so the server's turns get the write
lock in between; a pass that dies between two chunks is completed by the next diff.

Central is untrusted input (`edge.sync.validate`). A page that breaks the contract fails the stream
and changes nothing; one malformed item is skipped, reported and its local copy kept, the rest of its
listing applied. A dataset or document missing from a listing is deleted only once central confirms
it is gone (`GET` it: 404, or a 403 other than the rate limit, i.e. no longer shared, spec §8(b)1).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np

from edge.store.db import transaction
from edge.store.knowledge import (
    ANNOTATIONS_DATASET,
    ANNOTATIONS_NAME,
    CHUNK_ROWS,
    SEED_DATASET,
    KnowledgeStore,
    Segment,
)
from edge.store.parameters import CentralParameters
from edge.sync import validate
from edge.sync.client import AuthFailed, DifyClient, Listing, Malformed, Rejected, Unreachable

log = logging.getLogger(__name__)
MAX_RESCANS = 3  # a listing whose total moved while it was read is read again, at most this often
MAX_ERRORS = 20  # skipped items named in a report (all are counted and logged)
# Between two chunks the write lock is left free this long: SQLite's busy handler polls at most every
# 100 ms, so a server turn waiting for the lock is sure to get it before the next chunk.
CHUNK_PAUSE_S = 0.1
RATE_LIMITED = "rate limit"  # in the message of Cloud's knowledge rate limit, a 403 that says nothing is gone
__all__ = ["CHUNK_ROWS", "apply_diff", "pull_annotations", "pull_knowledge", "pull_parameters"]


class TextEmbedder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class PullReport:
    datasets: int = 0
    listed: int = 0
    embedded: int = 0
    deleted: int = 0
    skipped_documents: int = 0  # still indexing on central: picked up once indexed
    skipped: int = 0  # malformed items left out; each is logged, the first few are named in `errors`
    kept_unlisted: int = 0  # datasets or documents missing from a listing that central says still exist
    errors: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def skip(self, problem: str) -> None:
        self.skipped += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"skipped {problem}")
        log.warning("sync pull skipped a malformed item from central: %s", problem, extra={"problem": problem})


VOLATILE_FIELDS = frozenset({"hit_count"})  # moves with every central answer; not a change of content


def _signature(listing: Listing) -> list[str]:
    return sorted(
        json.dumps(
            {k: v for k, v in item.items() if k not in VOLATILE_FIELDS} if isinstance(item, dict) else item,
            sort_keys=True,
            default=str,
        )
        for item in listing.items
    )


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


@dataclass
class Checked:
    """A stable listing's well-formed items, and what is known of the malformed ones."""

    items: list[dict[str, Any]]
    skipped_ids: set[str]  # malformed items with an id: their local copies are kept
    anonymous: int  # malformed items without one: they could be any unlisted local row


def _read(listing: Callable[[], Listing], fields: dict[str, validate.Field], what: str, report: PullReport) -> Checked:
    checked = Checked([], set(), 0)
    for item in _stable(listing).items:
        problems = validate.problems(item, fields)
        if not problems:
            checked.items.append(item)
            continue
        identity = validate.item_id(item)
        report.skip(f"{what} {identity or '(no id)'}: {'; '.join(problems)}")
        if identity is None:
            checked.anonymous += 1
        else:
            checked.skipped_ids.add(identity)
    return checked


def _gone(fetch: Callable[[], Any], what: str, report: PullReport) -> bool:
    """Whether central confirms `what` is gone (a listing's silence is not enough): Dify's 404 `not_found`,
    or a 403 other than the rate limit (not shared with this key any more). Anything else keeps it."""
    try:
        fetch()
    except Rejected as exc:
        if exc.status == 404 and exc.code == "not_found":
            return True
        reason = str(exc)
    except AuthFailed as exc:
        if exc.status == 403 and RATE_LIMITED not in str(exc):
            return True
        if exc.status != 403:
            raise  # the key itself is refused: the stream stops
        reason = str(exc)
    else:
        reason = "central still has it"
    report.kept_unlisted += 1
    log.warning("sync pull kept %s: missing from central's listing, but %s", what, reason)
    return False


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
    chunk: int = CHUNK_ROWS,
    pause_s: float = CHUNK_PAUSE_S,
) -> tuple[int, int]:
    """Write what differs between `remote` and the local copy of one dataset; returns (embedded, deleted).

    `keep`: local ids to leave alone although central did not list them (documents still indexing,
    items central sent malformed). Disabled segments are stored disabled (not searched) without spending
    an embedding on them. `chunk` rows are embedded and written at a time, each chunk in its own
    transaction, `pause_s` apart; the deletes come last, so a pass cut short leaves stale rows, never
    missing ones.
    """
    local = store.fingerprints(dataset_id)
    remote_ids = {segment.id for segment in remote}
    changed = [s for s in remote if local.get(s.id) != s.fingerprint()]
    gone = [i for i in local if i not in remote_ids and i not in (keep or set())]
    embedded = 0
    released: float | None = None  # when the last chunk's transaction let go of the write lock

    def wait_turn() -> None:
        if released is not None:  # embedding the next chunk may already have been pause enough
            time.sleep(max(0.0, pause_s - (time.monotonic() - released)))

    for start in range(0, len(changed), chunk):
        part = changed[start : start + chunk]
        to_embed = [s for s in part if s.enabled]
        vectors = embedder.embed([s.content for s in to_embed]) if to_embed else None
        wait_turn()
        with transaction(store.db):  # a row's text, vector and full-text entry change together
            store.apply([s for s in part if not s.enabled], None, None)
            store.apply(to_embed, vectors, embedder_id)
        released = time.monotonic()
        embedded += len(to_embed)
    for start in range(0, len(gone), chunk):
        wait_turn()
        store.apply([], None, None, deletes=gone[start : start + chunk])
        released = time.monotonic()
    return embedded, len(gone)


def _pull_dataset(
    client: DifyClient,
    dataset_key: str,
    dataset: dict[str, Any],
    store: KnowledgeStore,
    embedder: TextEmbedder,
    embedder_id: str,
    report: PullReport,
) -> None:
    dataset_id = dataset["id"]
    local_by_document = store.ids_by_document(dataset_id)
    documents = _read(
        lambda: client.documents(dataset_key, dataset_id), validate.DOCUMENT, f"dataset {dataset_id}: document", report
    )
    remote: list[Segment] = []
    keep: set[str] = set()
    for document_id in documents.skipped_ids:
        keep |= local_by_document.get(document_id, set())
    for document in documents.items:
        document_id = document["id"]
        if document.get("indexing_status", "completed") != "completed":
            keep |= local_by_document.get(document_id, set())  # pick it up once indexed
            report.skipped_documents += 1
            continue
        if not document.get("enabled", True) or document.get("archived", False):
            continue  # its segments are removed locally
        segments = _read(
            lambda doc=document_id: client.segments(dataset_key, dataset_id, doc),
            validate.SEGMENT,
            f"document {document_id}: segment",
            report,
        )
        keep |= segments.skipped_ids
        if segments.anonymous:  # a malformed item could be any unlisted segment: delete none of them now
            keep |= local_by_document.get(document_id, set())
        remote.extend(_segment(dataset, document, item) for item in segments.items)
    listed = {document["id"] for document in documents.items} | documents.skipped_ids
    for document_id in sorted(set(local_by_document) - listed):
        fetch = partial(client.document, dataset_key, dataset_id, document_id)
        if not _gone(fetch, f"document {document_id}", report):
            keep |= local_by_document[document_id]
    embedded, deleted = apply_diff(store, dataset_id, remote, embedder, embedder_id, keep)
    report.datasets += 1
    report.listed += len(remote)
    report.embedded += embedded
    report.deleted += deleted


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
    listed = _read(lambda: client.datasets(dataset_key), validate.DATASET, "dataset", report)

    def configured(dataset_id: str) -> bool:
        return (not dataset_ids or dataset_id in dataset_ids) and dataset_id not in exclude

    datasets = [d for d in listed.items if configured(d["id"])]
    for dataset in datasets:
        _pull_dataset(client, dataset_key, dataset, store, embedder, embedder_id, report)
    synced = {d["id"] for d in datasets}
    for dataset_id in sorted(store.dataset_ids() - synced - listed.skipped_ids - {ANNOTATIONS_DATASET}):
        if dataset_id == str(SEED_DATASET):
            if synced:  # the seed gives way once central has knowledge
                report.deleted += store.delete_dataset(dataset_id, pause_s=CHUNK_PAUSE_S)
        elif not configured(dataset_id) or _gone(
            partial(client.dataset, dataset_key, dataset_id), f"dataset {dataset_id}", report
        ):
            report.deleted += store.delete_dataset(dataset_id, pause_s=CHUNK_PAUSE_S)
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
    report = PullReport(datasets=1)
    listed = _read(lambda: client.annotations(app_key), validate.ANNOTATION, "annotation", report)
    remote = [annotation_segment(item) for item in listed.items if item.get("question") and item.get("answer")]
    keep = set(listed.skipped_ids)
    if listed.anonymous:  # Dify has no GET of one annotation to ask: delete none this time
        keep |= set(store.fingerprints(ANNOTATIONS_DATASET))
    report.embedded, report.deleted = apply_diff(store, ANNOTATIONS_DATASET, remote, embedder, embedder_id, keep)
    report.listed = len(remote)
    return report


def pull_parameters(client: DifyClient, app_key: str, parameters: CentralParameters) -> PullReport:
    """Central's `/parameters`, stored only when it is the object the spec describes (§2.11)."""
    body = client.parameters(app_key)
    try:
        validate.check(body, validate.PARAMETERS, "the body")
    except validate.Invalid as exc:
        raise Malformed(f"GET /parameters does not follow the spec: {exc}", 200) from exc
    changed = parameters.save(body)
    return PullReport(listed=1, embedded=0, details={"changed": changed})
