"""What durable commits cost: curated-route turns, synchronous NORMAL vs FULL, measured in the same run.

Run: `.venv/bin/python bench/durability.py [--turns N] [--rounds R] [--dir DIR] [--app [--bundle DIR]]`
(about half a minute; `--app` adds one to two minutes).

The box runs `synchronous=FULL` so an acknowledged turn survives a power cut (NORMAL may roll it back:
tests/edge/store/test_power_loss.py). FULL adds one fsync of the WAL per COMMIT; the group-commit writer
shares it between the turns queued meanwhile. Two tables:

1. The writer path alone: `open_database`, the `Writer` and `ConversationStore.record_turn` with a curated
   answer's row and outbox payload, and nothing else, so the write's cost is not diluted. Concurrency 32 is
   bench/serve.py's curated load; concurrency 1 is one kiosk at a time, where no turns share an fsync (the
   worst case for FULL).
2. `--app`: the whole app in this process (`create_app` with the bundle, its lifespan, httpx over ASGI, no
   sockets), Dify blocking `chat-messages` with bench/serve.py's curated-route query mix at concurrency 32;
   the mode is switched with a PRAGMA on the app's own connection between runs. The load generator shares
   the process (and the GIL) with the app: absolute req/s are lower than bench/serve.py's, the ratio is the
   figure. (A separate `edge serve` per mode would need a production setting for NORMAL, which the box must
   not have.)

Each row is NORMAL and FULL interleaved over `--rounds` rounds on files in the same directory, so both see
the same disk and the same noise; quote the ratios. The directory must be on the box's kind of storage: on
tmpfs an fsync costs nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.store.conversations import ConversationStore  # noqa: E402
from edge.store.db import connection_lock, open_database  # noqa: E402
from edge.store.writer import Writer  # noqa: E402

ANSWER = "You can track your refund under My orders > Refunds; it reaches your card within 5 to 10 working days."
SOURCES = [{"position": 1, "dataset_name": "curated", "segment_id": "refund.status", "score": 0.93}]
TURNS_PER_CONVERSATION = 3  # a kiosk conversation: the first turn opens it, in the same transaction


@dataclass
class Figures:
    turns: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    writes: int = 0
    batches: int = 0

    def add(self, other: Figures) -> None:
        self.turns += other.turns
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.writes += other.writes
        self.batches += other.batches

    @property
    def rate(self) -> float:
        return self.turns / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def record(store: ConversationStore, conversation: str, turn: int) -> dict:
    return store.record_turn(
        conversation, "kiosk-7", f"where is my refund? ({turn})", ANSWER,
        new_conversation={"inputs": {"store": "0042"}} if turn == 0 else None, route="curated",
        intent="refund.status", confidence=0.93, latency_ms=3.2, prompt_tokens=0, completion_tokens=0,
        sources=SOURCES, language="en", reason="intent",
    )  # fmt: skip


async def load(writer: Writer, store: ConversationStore, turns: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    left = [turns]

    async def kiosk() -> None:
        while left[0] > 0:
            conversation = str(uuid.uuid4())
            for turn in range(TURNS_PER_CONVERSATION):
                if left[0] <= 0:
                    return
                left[0] -= 1
                started = time.perf_counter()
                await writer.run(record, store, conversation, turn)
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(kiosk() for _ in range(concurrency)))
    return latencies


def measure(path: Path, synchronous: str, turns: int, concurrency: int) -> Figures:
    db = open_database(path, synchronous=synchronous)
    store = ConversationStore(db)
    writer = Writer(db)
    writer.start()
    try:
        started = time.perf_counter()
        latencies = asyncio.run(load(writer, store, turns, concurrency))
        seconds = time.perf_counter() - started
    finally:
        writer.close()
        db.close()
    return Figures(len(latencies), seconds, latencies, writer.writes, writer.batches)


async def drive(client: object, queries: list[str], concurrency: int) -> Figures:
    """Send `queries` as Dify blocking chat messages, `concurrency` at a time; every answer must be a 200."""
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    latencies: list[float] = []
    todo = iter(enumerate(queries))

    async def kiosk() -> None:
        for index, query in todo:
            body = {"query": query, "inputs": {}, "response_mode": "blocking", "user": f"kiosk-{index % 64}"}
            started = time.perf_counter()
            response = await client.post("/v1/chat-messages", json=body)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise SystemExit(f"{response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(kiosk() for _ in range(concurrency)))
    return Figures(len(latencies), time.perf_counter() - started, latencies)


def app_figures(bundle: Path, data_dir: Path, requests: int, rounds: int, concurrency: int) -> dict[str, Figures]:
    import httpx

    sys.path.insert(0, str(ROOT / "bench"))
    from serve import ANSWERS_CSV, app_key, build_query_mix

    from edge.app import create_app
    from edge.settings import Settings

    mix = build_query_mix(bundle, requests, warmup=64, seed=11)
    key = app_key()
    settings = Settings(
        bundle_dir=bundle, data_dir=data_dir, app_keys=[key], curated_answers_csv=ANSWERS_CSV,
        rate_limit_per_s=1_000_000.0, rate_limit_burst=1_000_000,
    )  # fmt: skip
    app = create_app(settings)
    figures = {"NORMAL": Figures(), "FULL": Figures()}

    async def run() -> None:
        async with app.router.lifespan_context(app):
            db = app.state.conversations.db  # the connection the writer commits on
            writer = app.state.assistant.recorder.writer
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", headers=headers) as client:
                await drive(client, mix.warmup + mix.sequence, concurrency)  # warm, not measured
                for round_ in range(rounds):
                    for mode in ("NORMAL", "FULL") if round_ % 2 == 0 else ("FULL", "NORMAL"):
                        with connection_lock(db):
                            db.conn.execute(f"PRAGMA synchronous={mode}")
                        app.state.cache.clear()  # each run: the same mix, a third of it answered from the cache
                        before = (writer.writes, writer.batches)
                        result = await drive(client, mix.sequence, concurrency)
                        result.writes, result.batches = writer.writes - before[0], writer.batches - before[1]
                        figures[mode].add(result)

    asyncio.run(run())
    return figures


def print_rows(title: str, rows: list[tuple[int, dict[str, Figures]]]) -> None:
    print(title)
    header = ("concurrency", "synchronous", "turns", "req/s", "p50 ms", "p99 ms", "turns/commit")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for concurrency, figures in rows:
        for mode, f in figures.items():
            cells = (
                concurrency, mode, f.turns, f"{f.rate:.0f}", f"{f.percentile(0.5):.2f}",
                f"{f.percentile(0.99):.2f}", f"{f.writes / f.batches:.1f}" if f.batches else "",
            )  # fmt: skip
            print("| " + " | ".join(str(cell) for cell in cells) + " |")
        normal, full = figures["NORMAL"], figures["FULL"]
        print(
            f"| {concurrency} | FULL / NORMAL | | {full.rate / normal.rate:.2f}x | "
            f"{full.percentile(0.5) / normal.percentile(0.5):.2f}x | "
            f"{full.percentile(0.99) / normal.percentile(0.99):.2f}x | |"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=2000, help="turns per mode, round and concurrency")
    parser.add_argument("--rounds", type=int, default=3, help="NORMAL/FULL alternations per concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 1])
    parser.add_argument("--dir", type=Path, default=None, help="where the database files go (default: a temp dir)")
    parser.add_argument("--app", action="store_true", help="also measure the whole app on the curated route")
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--requests", type=int, default=1500, help="app requests per mode and round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="durability-") as tmp:
        root = Path(tmp)
        rows = []
        for concurrency in args.concurrency:
            turns = args.turns if concurrency > 1 else max(args.turns // 8, 50)  # one at a time is slow
            figures = {"NORMAL": Figures(), "FULL": Figures()}
            for round_ in range(args.rounds):
                for mode in ("NORMAL", "FULL") if round_ % 2 == 0 else ("FULL", "NORMAL"):
                    path = root / f"{mode}-{concurrency}-{round_}.db"
                    figures[mode].add(measure(path, mode, turns, concurrency))
            rows.append((concurrency, figures))
        print_rows(f"1. writer path, {args.rounds} interleaved rounds, storage: {root}", rows)
        if args.app:
            figures = app_figures(args.bundle, root / "app", args.requests, args.rounds, 32)
            print_rows(f"2. whole app in-process, curated-route mix, {args.rounds} interleaved rounds", [(32, figures)])


if __name__ == "__main__":
    main()
