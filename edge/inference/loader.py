"""Load a bundle's encoders once: the embedder serves retrieval and, with a linear head, the intent."""

from __future__ import annotations

from dataclasses import dataclass

from edge.bundle import Bundle, BundleError
from edge.inference.embedder import Embedder, embedder_id
from edge.inference.head import HeadClassifier, is_head_component
from edge.inference.intent import IntentClassifier


@dataclass
class Models:
    classifier: HeadClassifier | IntentClassifier
    embedder: Embedder | None
    embedder_id: str | None

    def close(self) -> None:
        self.classifier.close()


def load_models(
    bundle: Bundle,
    *,
    intent_threads: int = 1,
    workers: int = 1,
    embedder_threads: int = 1,
    threshold: float | None = None,
) -> Models:
    """The intent classifier and the embedder; with an intent head they share one encoder session."""
    embedder: Embedder | None = None
    identity: str | None = None
    if "embedder" in bundle.components:
        component = bundle.component("embedder")
        embedder = Embedder.from_component(component, threads=max(intent_threads, embedder_threads))
        identity = embedder_id(component)
    intent = bundle.component("intent")
    classifier: HeadClassifier | IntentClassifier
    if is_head_component(intent):
        if embedder is None or identity is None:
            raise BundleError(f"bundle {bundle.path}: its intent head needs the bundle's embedder, which is missing")
        classifier = HeadClassifier.from_component(intent, embedder, identity, workers=workers, threshold=threshold)
    else:
        classifier = IntentClassifier.from_component(
            intent, threads=intent_threads, workers=workers, threshold=threshold
        )
    return Models(classifier, embedder, identity)
