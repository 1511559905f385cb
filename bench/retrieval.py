"""Local knowledge retrieval: quality of vector, full-text and hybrid search, the relevance gate, and speed.

Run: `make bench` or `.venv/bin/python bench/retrieval.py --bundle models/default`.
Knowledge: the shipped seed (`models/data/knowledge/*.csv`) in a fresh SQLite file, embedded by the
bundle's INT8 embedder. Questions: held-out retail questions (`models/data/bitext_retail/dev.csv`),
scored by whether the top segment's intent label (the `label` column of retail_faq.csv) matches the
question's; out-of-scope questions from CLINC150 (`--oos`, CC BY 3.0, `../shared/data/clinc150/dev.csv`)
show how often the cosine gate would wrongly let an unrelated question ground the LLM.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.assistant.retrieval import RetrievalConfig, Retriever
from edge.bundle import load_bundle
from edge.inference.embedder import Embedder, embedder_id
from edge.store.db import open_database
from edge.store.knowledge import KnowledgeStore

ROOT = Path(__file__).resolve().parent.parent
KNOWLEDGE = ROOT / "models" / "data" / "knowledge"


def read(path: Path, text: str, label: str) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [(row[text], row.get(label, "")) for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--questions", type=Path, default=ROOT / "models" / "data" / "bitext_retail" / "dev.csv")
    parser.add_argument("--oos", type=Path, default=ROOT.parent / "shared" / "data" / "clinc150" / "dev.csv")
    parser.add_argument("--limit", type=int, default=400, help="held-out retail questions scored")
    args = parser.parse_args()

    bundle = load_bundle(args.bundle)
    component = bundle.component("embedder")
    embedder = Embedder.from_component(component)
    with tempfile.TemporaryDirectory() as tmp:
        store = KnowledgeStore(open_database(Path(tmp) / "bench.sqlite3"))
        for path in sorted(KNOWLEDGE.glob("*.csv")):
            store.seed_from_csv(path)
        weights = (0.0, 0.25, 0.5, 1.0)
        retrievers = {
            w: Retriever(
                store, embedder, embedder_id(component), RetrievalConfig(top_k=1, min_score=-1.0, text_weight=w)
            )
            for w in weights
        }
        started = time.perf_counter()
        indexed = retrievers[0.0].index_missing()
        index_s = time.perf_counter() - started
        label_of = {q: label for q, label in read(KNOWLEDGE / "retail_faq.csv", "question", "label")}
        questions = read(args.questions, "text", "label")[: args.limit]

        index = retrievers[0.0]._current()
        by_text, matched, scores, latencies = 0, dict.fromkeys(weights, 0), [], []
        for text, label in questions:
            text_ids = store.search_text(text, 1)
            by_text += bool(text_ids) and label_of.get(store.get_many(text_ids)[text_ids[0]]["content"]) == label
            for weight, retriever in retrievers.items():
                started = time.perf_counter()
                hits = retriever.search(text)
                latencies.append((time.perf_counter() - started) * 1000.0)
                matched[weight] += bool(hits) and label_of.get(hits[0].segment["content"]) == label
            scores.append(float((index.matrix @ embedder.embed([text])[0]).max()))
        n = len(questions)
        print(f"\nKnowledge: {indexed} segments indexed in {index_s:.2f} s ({indexed / index_s:.0f}/s, batch 1)")
        print(f"Top-1 segment of the question's intent, {n} held-out retail questions")
        print(f"{'search':<34} {'top-1 label match':>18}")
        print(f"{'full text only (FTS5 BM25)':<34} {by_text / n:18.2%}")
        for weight in weights:
            name = "vector only (cosine)" if weight == 0 else f"hybrid RRF, text weight {weight}"
            print(f"{name:<34} {matched[weight] / n:18.2%}")
        lat = np.asarray(latencies)
        p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
        print(f"search latency (embed + both searches): p50 {p50:.2f} ms, p99 {p99:.2f} ms")

        populations = {"retail (in scope)": np.asarray(scores)}
        if args.oos.is_file():
            clinc = read(args.oos, "text", "label")
            for name, texts in (
                ("CLINC150 oos", [t for t, label in clinc if label == "oos"]),
                ("CLINC150 other domains", [t for t, label in clinc if label != "oos"][::10]),
            ):
                populations[name] = (embedder.embed(texts) @ index.matrix.T).max(axis=1)
        thresholds = (0.85, 0.88, 0.9, 0.92, 0.94)  # E5 cosines are high; the bundle calibrates its own
        print("\nShare of questions whose best segment reaches the cosine gate (retrieval_min_score)")
        print(f"{'questions':<24} {'n':>5} {'median':>7} " + " ".join(f"{'≥' + str(t):>6}" for t in thresholds))
        for name, values in populations.items():
            shares = " ".join(f"{(values >= t).mean():6.1%}" for t in thresholds)
            print(f"{name:<24} {len(values):5d} {np.median(values):7.3f} {shares}")


if __name__ == "__main__":
    main()
