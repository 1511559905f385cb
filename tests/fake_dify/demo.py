"""A small retail central: a kiosk chat app, an ingest workflow app, store-policy knowledge, annotations.

Used by `python -m tests.fake_dify --seed-demo` and handy as a test fixture (`Central` names the ids).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tests.fake_dify.state import FakeDifyState

FACTS_DOCUMENT = "Store facts"

POLICIES = {
    "Returns and refunds": [
        "You can return most items within 30 days of delivery for a full refund, with the receipt.",
        "Refunds go back to the original payment method within 5 to 10 business days after we receive the item.",
        "Sale items can be exchanged but not refunded unless they are faulty.",
    ],
    "Delivery": [
        "Standard delivery takes 3 to 5 business days; express delivery arrives the next business day.",
        "You can change your delivery address until the order is dispatched, from your account or at a kiosk.",
        "Orders over 50 euros ship for free within the country.",
    ],
    "Payments": [
        "We accept Visa, Mastercard, American Express, PayPal and gift cards.",
        "Payment is taken when the order is dispatched, not when it is placed.",
    ],
}
ANNOTATIONS = [
    ("Where is my refund?", "Refunds reach your original payment method within 5 to 10 business days."),
    ("Can I cancel my order?", "Yes, until it is dispatched: open the order and choose Cancel, or ask a colleague."),
    ("Do you ship abroad?", "Not yet: we deliver within the country only."),
]
TRANSCRIPT_FORM = [
    {"text-input": {"label": "Store", "variable": "store_id", "required": True, "max_length": 48, "default": ""}},
    {"text-input": {"label": "Kiosk", "variable": "kiosk_id", "required": True, "max_length": 48, "default": ""}},
    {"text-input": {"label": "Session", "variable": "edge_session_id", "required": True, "max_length": 64}},
    {"text-input": {"label": "Started", "variable": "started_at", "required": False, "max_length": 48}},
    {"text-input": {"label": "Ended", "variable": "ended_at", "required": False, "max_length": 48}},
    {"paragraph": {"label": "Transcript", "variable": "transcript", "required": True, "default": ""}},
]


@dataclass
class Central:
    """The ids and keys of a seeded central, for tests and for the demo's banner."""

    chat_app_id: str
    chat_key: str
    workflow_app_id: str
    workflow_key: str
    dataset_id: str
    dataset_key: str


@dataclass
class ChatCentral:
    """A chat app answering from one dataset: what the box escalates to (issue #13)."""

    app_id: str
    key: str
    dataset_id: str


def seed_chat(
    state: FakeDifyState, facts: Iterable[str | Mapping[str, str]], *, name: str = "Central assistant"
) -> ChatCentral:
    """A chat app over a dataset holding `facts`, one segment each: strings, or {"title", "content"} dicts
    (the title names the document, so it shows in `retriever_resources[].document_name`)."""
    documents: dict[str, list[str]] = {}
    for fact in facts:
        title, content = (
            (FACTS_DOCUMENT, fact) if isinstance(fact, str) else (fact.get("title") or FACTS_DOCUMENT, fact["content"])
        )
        documents.setdefault(title, []).append(content)
    with state.lock:
        dataset = state.knowledge.add_dataset(f"{name} knowledge", description="What central may tell customers")
        for title, segments in documents.items():
            state.knowledge.add_document(dataset.id, title, segments=segments)
        app, key = state.add_app(name, "chat", dataset_ids=[dataset.id], retriever_resource_enabled=True)
        return ChatCentral(app.id, key, dataset.id)


def seed_demo(state: FakeDifyState) -> Central:
    with state.lock:
        knowledge = state.knowledge
        dataset = knowledge.add_dataset("Store policies", description="What the kiosks may tell customers")
        for name, segments in POLICIES.items():
            knowledge.add_document(dataset.id, name, segments=segments)
        chat, chat_key = state.add_app(
            "Kiosk assistant",
            "chat",
            description="The store kiosk's customer-service assistant",
            opening_statement="Hello! I can help with orders, delivery, returns and payments.",
            suggested_questions=["Where is my refund?", "Can I change my delivery address?"],
            annotation_reply_enabled=True,
            dataset_ids=[dataset.id],
        )
        for question, answer in ANNOTATIONS:
            state.add_annotation(chat.id, question, answer)
        ingest, ingest_key = state.add_app(
            "Kiosk transcripts",
            "workflow",
            description="Ingests finished offline kiosk conversations, one run per session",
            user_input_form=TRANSCRIPT_FORM,
            workflow_outputs={"stored": "yes"},
        )
        return Central(chat.id, chat_key, ingest.id, ingest_key, dataset.id, state.add_dataset_key())
