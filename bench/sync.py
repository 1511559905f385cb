"""Sync agent throughput against the fake Dify: push 10,000 conversations, pull 10,000 segments twice.

Run: `make bench` or `.venv/bin/python bench/sync.py [--conversations N] [--segments N] [--bundle DIR]`.
1. Push: N finished conversations (2 turns each) in a fresh SQLite file, pushed as one ingest-workflow run
   each (look-up then run: 2 HTTP calls per conversation); checked: exactly N runs on central.
2. Pull from scratch: N segments in 100-segment documents, listed twice per listing (the page-drift
   check), embedded with the bundle's INT8 embedder at batch 1, written per dataset in one transaction.
3. Pull again with 1% of the segments edited: must embed exactly those. Baseline: pull 2 / pull 1.
The fake Dify runs on uvicorn in a thread of this process (it shares the GIL with the agent: a real
central answers faster, so these are upper bounds on the agent's own cost).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the fake Dify lives in tests/

from edge.settings import Settings  # noqa: E402
from edge.store.conversations import ConversationStore  # noqa: E402
from edge.store.db import open_database, transaction  # noqa: E402
from edge.store.outbox import Outbox  # noqa: E402
from edge.sync.agent import SyncAgent, load_embedder  # noqa: E402
from edge.sync.client import DifyClient  # noqa: E402
from tests.fake_dify.demo import seed_demo  # noqa: E402
from tests.fake_dify.live import LiveFakeDify  # noqa: E402
from tests.fake_dify.state import FakeDifyState  # noqa: E402


class CountingEmbedder:
    def __init__(self, inner) -> None:
        self.inner, self.count = inner, 0
        self.config = inner.config

    def embed(self, texts):
        self.count += len(texts)
        return self.inner.embed(texts)


def fill_conversations(db, n: int) -> None:
    store = ConversationStore(db, clock=lambda: 1_700_000_000.0)
    with transaction(db):
        for i in range(n):
            conversation = store.create("kiosk", {})["id"]
            for query, route in ((f"where is my order {i}?", "curated"), ("thanks, bye", "cache")):
                store.record_turn(
                    conversation,
                    "kiosk",
                    query,
                    "Your order is on its way.",
                    route=route,
                    intent="delivery.delivery_period",
                    confidence=0.97,
                    latency_ms=3.0,
                    prompt_tokens=0,
                    completion_tokens=0,
                    sources=[],
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--segments", type=int, default=10_000)
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "default")
    args = parser.parse_args()

    state = FakeDifyState(seed=1)
    central = seed_demo(state)
    rng = random.Random(1)
    big = state.knowledge.add_dataset("Product catalogue")
    for start in range(0, args.segments, 100):
        texts = [f"Item {i}: aisle {rng.randint(1, 40)}, shelf {rng.randint(1, 9)}." for i in range(start, start + 100)]
        state.knowledge.add_document(
            big.id, f"catalogue part {start // 100 + 1}", segments=texts[: args.segments - start]
        )
    with tempfile.TemporaryDirectory() as tmp, LiveFakeDify(state) as fake:
        settings = Settings(
            bundle_dir=args.bundle,
            data_dir=Path(tmp),
            central_url=fake.api_url,
            central_dataset_key=central.dataset_key,
            central_dataset_ids=[big.id],
            central_ingest_key=central.workflow_key,
            sync_idle_s=0,
        )
        db = open_database(settings.database_path)
        embedder, space = load_embedder(settings)
        counting = CountingEmbedder(embedder)
        agent = SyncAgent(
            settings, db, DifyClient(fake.api_url, timeout_s=30), embedder_factory=lambda: (counting, space)
        )

        fill_conversations(db, args.conversations)
        started = time.perf_counter()
        while Outbox(db).depth():
            agent.pusher.run(limit=1000)
        push_s = time.perf_counter() - started
        runs = len(state.runs_of(central.workflow_app_id))

        started = time.perf_counter()
        first = agent.run_stream("knowledge")
        pull1_s, embedded1 = time.perf_counter() - started, counting.count
        segments = [s for d in state.knowledge.list_documents(big.id) for s in state.knowledge.list_segments(d.id)]
        changed = rng.sample(segments, max(1, len(segments) // 100))
        for segment in changed:
            state.knowledge.update_segment(segment.id, content=segment.content + " Now on special offer.")
        counting.count = 0
        started = time.perf_counter()
        second = agent.run_stream("knowledge")
        pull2_s, embedded2 = time.perf_counter() - started, counting.count
        local = db.execute("SELECT count(*) FROM knowledge_segments WHERE dataset_id = ?", [big.id]).fetchone()[0]
        agent.client.close()
        db.close()

    print(f"\nSync agent vs the fake Dify ({args.conversations} conversations, {len(segments)} segments)")
    print(f"| {'figure':<46} | {'seconds':>8} | {'per second':>10} | {'check':<40} |")
    print(f"|{'-' * 48}|{'-' * 10}|{'-' * 12}|{'-' * 42}|")
    rows = [
        (
            f"push {args.conversations} conversations",
            push_s,
            args.conversations / push_s,
            f"{runs} runs on central (want {args.conversations})",
        ),
        (
            f"pull + index {len(segments)} segments from scratch",
            pull1_s,
            embedded1 / pull1_s,
            f"{first}: {embedded1} embedded, {local} stored",
        ),
        (
            f"pull again, {len(changed)} segments (1%) edited",
            pull2_s,
            len(segments) / pull2_s,
            f"{second}: {embedded2} embedded (want {len(changed)})",
        ),
    ]
    for name, seconds, rate, check in rows:
        print(f"| {name:<46} | {seconds:8.1f} | {rate:10.0f} | {check:<40} |")
    print(f"\nsecond pull / first pull: {pull2_s / pull1_s:.2f}x the time (listing is the same; embedding is not)")


if __name__ == "__main__":
    main()
