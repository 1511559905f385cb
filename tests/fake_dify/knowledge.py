"""Central knowledge: datasets, documents and segments, with the fields a sync agent fingerprints.

A segment's `index_node_hash` is Dify's `generate_text_hash` of its content and its `updated_at`
moves on every edit; document list items carry no `updated_at` (only the detail does); re-indexing a
document replaces its segments with new ids. Indexing is instant unless `index_step_seconds` is set,
in which case a document walks waiting→parsing→cleaning→splitting→indexing→completed on the clock.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fake_dify.errors import InvalidParam, NotFound
from tests.fake_dify.state import locked

if TYPE_CHECKING:
    from tests.fake_dify.state import FakeDifyState

STAGES = ("waiting", "parsing", "cleaning", "splitting", "indexing", "completed")
DOCUMENT_ACTIONS = ("enable", "disable", "archive", "un_archive")


def text_hash(text: str) -> str:
    """Dify's `helper.generate_text_hash`: sha256 of the text with "None" appended."""
    return hashlib.sha256((text + "None").encode()).hexdigest()


def estimate_tokens(text: str) -> int:
    return max(1, round(len(text) / 4)) if text else 0


@dataclass
class Dataset:
    id: str
    name: str
    created_at: int
    updated_at: int
    seq: int
    description: str = ""
    indexing_technique: str | None = "high_quality"
    doc_form: str = "text_model"
    enable_api: bool = True
    embedding_model: str = "text-embedding-3-small"
    embedding_model_provider: str = "langgenius/openai/openai"


@dataclass
class Document:
    id: str
    dataset_id: str
    name: str
    position: int
    batch: str
    doc_form: str
    created_at: int
    updated_at: int
    indexing_started: float
    seq: int
    upload_file_id: str
    process_rule_id: str
    enabled: bool = True
    archived: bool = False
    disabled_at: int | None = None
    error: str | None = None
    doc_language: str = "English"


@dataclass
class Segment:
    id: str
    document_id: str
    dataset_id: str
    position: int
    content: str
    created_at: int
    updated_at: int
    index_node_id: str
    answer: str = ""
    keywords: list[str] = field(default_factory=list)
    enabled: bool = True
    disabled_at: int | None = None
    hit_count: int = 0

    @property
    def index_node_hash(self) -> str:
        return text_hash(self.content)

    @property
    def word_count(self) -> int:
        return len(self.content) + len(self.answer)

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.content + self.answer)


class KnowledgeStore:
    """The knowledge side of the fake; shares ids, clock and lock with its `FakeDifyState`."""

    def __init__(self, state: FakeDifyState) -> None:
        self.state = state
        self.lock = state.lock
        self.index_step_seconds = 0.0
        self.datasets: dict[str, Dataset] = {}
        self.documents: dict[str, Document] = {}
        self.segments: dict[str, Segment] = {}

    # --- datasets ---------------------------------------------------------------------------------

    @locked
    def add_dataset(self, name: str, **settings: Any) -> Dataset:
        now = self.state.clock.ts()
        row = Dataset(self.state.ids.uuid(), name, now, now, self.state.next_seq(), **settings)
        self.datasets[row.id] = row
        return row

    @locked
    def set_dataset_api(self, dataset_id: str, enabled: bool) -> None:
        self.dataset(dataset_id).enable_api = enabled

    def dataset(self, dataset_id: str) -> Dataset:
        if dataset_id not in self.datasets:
            raise NotFound("Dataset not found.")
        return self.datasets[dataset_id]

    @locked
    def list_datasets(self, keyword: str = "", allowed: frozenset[str] | None = None) -> list[Dataset]:
        rows = [
            d
            for d in self.datasets.values()
            if keyword.lower() in d.name.lower() and (allowed is None or d.id in allowed)
        ]
        return sorted(rows, key=lambda d: (d.created_at, d.seq), reverse=True)

    # --- documents --------------------------------------------------------------------------------

    def indexing_status(self, doc: Document) -> str:
        if doc.error:
            return "error"
        if self.index_step_seconds <= 0:
            return "completed"
        stage = int((self.state.clock.now() - doc.indexing_started) / self.index_step_seconds)
        return STAGES[max(0, min(stage, len(STAGES) - 1))]

    def completed_at(self, doc: Document) -> int | None:
        if self.indexing_status(doc) != "completed":
            return None
        return int(doc.indexing_started + self.index_step_seconds * (len(STAGES) - 1))

    def display_status(self, doc: Document) -> str:
        status = self.indexing_status(doc)
        if status == "waiting":
            return "queuing"
        if status in ("parsing", "cleaning", "splitting", "indexing"):
            return "indexing"
        if status in ("paused", "error"):
            return status
        if doc.archived:
            return "archived"
        return "available" if doc.enabled else "disabled"

    @locked
    def add_document(
        self, dataset_id: str, name: str, text: str = "", *, separator: str = "\n\n", segments: list[str] | None = None
    ) -> Document:
        """A document from text, cut into segments at `separator` (Dify's rules are richer; ours are enough)."""
        dataset = self.dataset(dataset_id)
        now = self.state.clock.ts()
        positions = [d.position for d in self.documents.values() if d.dataset_id == dataset_id]
        doc = Document(
            id=self.state.ids.uuid(),
            dataset_id=dataset_id,
            name=name,
            position=max(positions, default=0) + 1,
            batch=self._batch(),
            doc_form=dataset.doc_form,
            created_at=now,
            updated_at=now,
            indexing_started=self.state.clock.now(),
            seq=self.state.next_seq(),
            upload_file_id=self.state.ids.uuid(),
            process_rule_id=self.state.ids.uuid(),
        )
        self.documents[doc.id] = doc
        self._write_segments(doc, segments if segments is not None else split_text(text, separator))
        return doc

    @locked
    def update_document_text(self, document_id: str, *, name: str | None = None, text: str | None = None) -> Document:
        """`update-by-text`: a new batch; new text means re-indexing, which replaces every segment id."""
        doc = self.documents[document_id]
        doc.name = name if name is not None else doc.name
        doc.batch, doc.updated_at = self._batch(), self.state.clock.ts()
        if text is not None:
            for segment_id in [s.id for s in self.segments.values() if s.document_id == doc.id]:
                del self.segments[segment_id]
            doc.indexing_started = self.state.clock.now()
            self._write_segments(doc, split_text(text, "\n\n"))
        return doc

    @locked
    def reindex_document(self, document_id: str) -> Document:
        """Re-index with the same content: same texts, all-new segment ids (what a console re-index does)."""
        texts = [s.content for s in self.list_segments(document_id)]
        return self.update_document_text(document_id, text="\n\n".join(texts))

    @locked
    def set_document_status(self, dataset_id: str, document_ids: list[str], action: str) -> None:
        if action not in DOCUMENT_ACTIONS:
            raise InvalidParam("Invalid action.", code="invalid_action")
        now = self.state.clock.ts()
        for document_id in document_ids:
            doc = self.document(dataset_id, document_id)
            if action in ("enable", "disable"):
                doc.enabled = action == "enable"
                doc.disabled_at = None if doc.enabled else now
            else:
                doc.archived = action == "archive"
            doc.updated_at = now

    @locked
    def delete_document(self, document_id: str) -> None:
        self.documents.pop(document_id)
        for segment_id in [s.id for s in self.segments.values() if s.document_id == document_id]:
            del self.segments[segment_id]

    def document(self, dataset_id: str, document_id: str) -> Document:
        doc = self.documents.get(document_id)
        if doc is None or doc.dataset_id != dataset_id:
            raise NotFound("Document not found.")
        return doc

    @locked
    def list_documents(self, dataset_id: str, keyword: str = "", status: str | None = None) -> list[Document]:
        """Newest first (created_at desc, position desc), as Dify orders them."""
        rows = [
            d
            for d in self.documents.values()
            if d.dataset_id == dataset_id
            and keyword.lower() in d.name.lower()
            and (status is None or self.display_status(d) == status)
        ]
        return sorted(rows, key=lambda d: (d.created_at, d.position), reverse=True)

    @locked
    def documents_in_batch(self, dataset_id: str, batch: str) -> list[Document]:
        return [d for d in self.documents.values() if d.dataset_id == dataset_id and d.batch == batch]

    # --- segments ---------------------------------------------------------------------------------

    @locked
    def add_segments(self, document_id: str, items: list[dict[str, Any]]) -> list[Segment]:
        doc = self.documents[document_id]
        return [
            self._new_segment(doc, item["content"], item.get("answer") or "", item.get("keywords")) for item in items
        ]

    @locked
    def update_segment(self, segment_id: str, **changes: Any) -> Segment:
        """Apply content/answer/keywords/enabled; any change moves `updated_at` (content also the hash)."""
        row = self.segments[segment_id]
        now = self.state.clock.ts()
        for name in ("content", "answer", "keywords"):
            if changes.get(name) is not None:
                setattr(row, name, changes[name])
        if changes.get("enabled") is not None and changes["enabled"] != row.enabled:
            row.enabled = bool(changes["enabled"])
            row.disabled_at = None if row.enabled else now
        row.updated_at = now
        return row

    @locked
    def delete_segment(self, segment_id: str) -> None:
        del self.segments[segment_id]

    def segment(self, document_id: str, segment_id: str) -> Segment:
        row = self.segments.get(segment_id)
        if row is None or row.document_id != document_id:
            raise NotFound("Segment not found.")
        return row

    def segment_status(self, row: Segment) -> str:
        doc = self.documents[row.document_id]
        return "completed" if self.indexing_status(doc) == "completed" else "indexing"

    @locked
    def list_segments(self, document_id: str, statuses: list[str] | None = None, keyword: str = "") -> list[Segment]:
        """In position order; `status` and `keyword` filter as Dify's do."""
        rows = [
            s
            for s in self.segments.values()
            if s.document_id == document_id
            and (not statuses or self.segment_status(s) in statuses)
            and keyword.lower() in s.content.lower()
        ]
        return sorted(rows, key=lambda s: s.position)

    @locked
    def search(self, dataset_ids: list[str], query: str, top_k: int = 3) -> list[tuple[Segment, float]]:
        """A trivial, deterministic scorer: the share of the query's words found in the segment."""
        words = _words(query)
        if not words:
            return []
        scored = []
        for row in self.segments.values():
            doc = self.documents[row.document_id]
            if row.dataset_id in dataset_ids and row.enabled and doc.enabled and not doc.archived:
                score = len(words & _words(row.content + " " + row.answer)) / len(words)
                if score > 0:
                    scored.append((row, round(score, 4)))
        scored.sort(key=lambda pair: (-pair[1], pair[0].dataset_id, pair[0].position))
        return scored[:top_k]

    # --- helpers ----------------------------------------------------------------------------------

    def segments_of(self, document_id: str) -> list[Segment]:
        return [s for s in self.segments.values() if s.document_id == document_id]

    def _write_segments(self, doc: Document, texts: list[str]) -> None:
        for text in texts:
            self._new_segment(doc, text, "", None)

    def _new_segment(self, doc: Document, content: str, answer: str, keywords: list[str] | None) -> Segment:
        now = self.state.clock.ts()
        position = max((s.position for s in self.segments_of(doc.id)), default=0) + 1
        row = Segment(
            id=self.state.ids.uuid(),
            document_id=doc.id,
            dataset_id=doc.dataset_id,
            position=position,
            content=content,
            answer=answer,
            keywords=list(keywords) if keywords is not None else sorted(_words(content))[:5],
            created_at=now,
            updated_at=now,
            index_node_id=self.state.ids.uuid(),
        )
        self.segments[row.id] = row
        return row

    def _batch(self) -> str:
        """Dify's batch ids are a timestamp plus six random digits, e.g. 20250306150245647595."""
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(self.state.clock.now()))
        return stamp + self.state.ids.digits(6)

    @locked
    def summary(self) -> list[dict[str, Any]]:
        return [
            {
                "id": d.id,
                "name": d.name,
                "enable_api": d.enable_api,
                "documents": [
                    {"id": doc.id, "name": doc.name, "segments": len(self.segments_of(doc.id))}
                    for doc in self.list_documents(d.id)
                ],
            }
            for d in self.list_datasets()
        ]


def split_text(text: str, separator: str) -> list[str]:
    return [part.strip() for part in text.split(separator or "\n\n") if part.strip()]


_STOPWORD_TEXT = (
    "the and you your for can are with what which how does did our from this that have has was will when where who why"
    " not but all any its into there their they them then than too very just about"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# Chinese function characters (particles, pronouns, question words): a run of text is cut at them, so
# "你们可以安装吗" searches by "安装", not by "们可" or "以安".
ZH_FUNCTION_CHARS = re.compile(
    "[的了吗呢吧啊呀么是我你他她它们这那个有没在能会就都也还和与或给把被让请怎什哪几要想可以]+"
)


def _words(text: str) -> set[str]:
    """Search terms: English words (no stopwords), and the character bigrams of Chinese runs."""
    words = {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2 and w not in STOPWORDS}
    for run in re.findall(r"[\u3400-\u9fff\uf900-\ufaff]+", text):
        for part in ZH_FUNCTION_CHARS.split(run):
            words.update(part[i : i + 2] for i in range(len(part) - 1))
    return words
