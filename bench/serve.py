"""The assistant server under load, started as a separate process exactly as a box runs it (`edge serve`).

Run: `.venv/bin/python bench/serve.py [--requests N] [--bundle DIR]` (one to two minutes on 2 cores).

Prints one table per figure family, each with its target and a baseline measured in the same run:

1. Curated answers over HTTP (Dify blocking API, concurrency 32): req/s, p50/p99, errors, route mix;
   baselines: `GET /healthz` through the same load generator (the HTTP floor) and the same mix re-sent
   once every answer is cached. The mix comes from `dev.csv` texts the bundle's own intent model
   routes to a curated answer (checked here at batch 1, as the server does); greetings are prefixed
   to make enough distinct questions, and every third request repeats an earlier one, so the
   hot-answer cache can answer about a third.
2. LLM route (OpenAI API, plain model id, stream=true): TTFT p50 and generation tok/s against raw
   llama-cpp-python on the same GGUF, threads and prompts, in this process while the server idles.
3. Four concurrent streams: aggregate tok/s and interrupted streams (no final finish_reason, or text
   not equal to the same prompt run alone at temperature 0); baseline: the four run one by one.
4. TTFT at turn 5 of a conversation vs turn 1 (Dify streaming API, questions routed to the LLM).
5. Server RSS after warm-up and after the load, and process start to `/readyz` 200; baseline: a
   fresh process loading only the GGUF with raw llama-cpp-python.

The load generator for (1) is a minimal keep-alive HTTP/1.1 client on asyncio streams, not httpx:
it shares the 2 cores with the server, and httpx does much more work per request (models, hooks, h11). Its CPU
and the server's are both reported per request. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np

from edge.assistant.policy import Question, Route, decide
from edge.assistant.routing import thresholds_from
from edge.bundle import load_bundle
from edge.inference.loader import load_models
from edge.settings import PLACEHOLDER_MARKERS, Settings
from edge.store.answers import bank_of, read_answers_csv

ROOT = Path(__file__).resolve().parent.parent
RETAIL = ROOT / "models" / "data" / "bitext_retail"
ANSWERS_CSV = ROOT / "models" / "data" / "answers" / "answers.csv"
ASSISTANT_MODEL = "kiosk-assistant"
N_CTX = 2048  # the server's default KIOSK_LLM_CONTEXT; the raw baseline uses the same
N_BATCH = 512  # LlmEngine's default
ANSWER_TOKENS = 160  # the server's default KIOSK_LLM_MAX_TOKENS (assistant route)
# Distinct questions beyond dev.csv's 809: the same texts with a greeting in front (still checked to
# route to a curated answer before use).
PREFIXES = ("", "Hi, ", "Hello, ", "Excuse me, ", "Good morning, ", "Hey there, ", "Sorry, ", "Quick question: ")
SHORT_PROMPTS = (
    "What are your opening hours?",
    "Can I return a jacket without the receipt?",
    "Do you sell gift cards?",
    "Is there parking near the store?",
    "How long does home delivery take?",
    "Can I pay with a credit card?",
    "Where can I find the fitting rooms?",
    "Do you price match other shops?",
    "How do I track my order?",
    "Can I change my delivery address?",
    "What is your refund policy?",
    "Do you have this shoe in size 42?",
    "Can I cancel an order I placed today?",
    "Is the store open on Sundays?",
    "How do I sign up for the newsletter?",
    "Can someone help me carry a sofa?",
    "Do you offer student discounts?",
    "Where is the customer service desk?",
    "Can I reserve an item online and pick it up here?",
    "How do I reset my account password?",
)
LLAMA_SERVER_ROW = "llama_cpp.server (optional comparison)"


# --- output ---------------------------------------------------------------------------------------


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}"
    return str(value)


def print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], notes: Sequence[str] = ()
) -> None:
    """A markdown table, so the output can be pasted into an issue as is."""
    cells = [[fmt(cell) for cell in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    if notes:
        print()
    for note in notes:
        print(f"- {note}")
    sys.stdout.flush()


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def ratio(ours: float | None, base: float | None) -> float | None:
    return ours / base if ours is not None and base else None


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else "yes" if ok else "NO"


# --- the server process ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def app_key() -> str:
    """A random 24-character key that the settings' placeholder check accepts."""
    while True:
        key = secrets.token_urlsafe(18)
        if not any(marker in key.lower() for marker in PLACEHOLDER_MARKERS):
            return key


def proc_status_mb(pid: int, field_name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def proc_cpu_s(pid: int, thread: int | None = None) -> float:
    """User + system CPU seconds of a process (all threads), or of one of its threads."""
    path = Path(f"/proc/{pid}/task/{thread}/stat") if thread is not None else Path(f"/proc/{pid}/stat")
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    key: str
    log_path: Path
    seconds_to_ready: float = float("nan")

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def rss_mb(self) -> float:
        return proc_status_mb(self.pid, "VmRSS")

    def rss_split(self) -> str:
        """Where the resident memory is: anonymous (heap, KV cache) vs file-backed (the mmapped GGUF, libraries)."""
        return f"anon {proc_status_mb(self.pid, 'RssAnon'):.0f} + file {proc_status_mb(self.pid, 'RssFile'):.0f}"

    def peak_rss_mb(self) -> float:
        return proc_status_mb(self.pid, "VmHWM")

    def threads(self) -> int:
        return len(list(Path(f"/proc/{self.pid}/task").iterdir()))

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def loop_cpu_s(self) -> float:
        """CPU of the main thread, which runs uvicorn's event loop (intent and SQLite run in worker threads)."""
        return proc_cpu_s(self.pid, self.pid)

    def logged_ready_s(self) -> float | None:
        """The lifespan's own `seconds_to_ready` (bundle load to ready, without Python start-up)."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("message") == "ready":
                    return float(entry["seconds_to_ready"])
        return None

    def log_problems(self) -> list[str]:
        """Warning, error and traceback lines the server wrote."""
        problems = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            lowered = line.lower()
            if '"level": "warning"' in lowered or '"level": "error"' in lowered or "traceback" in lowered:
                problems.append(line[:300])
        return problems


@contextlib.contextmanager
def running_server(bundle: Path, data_dir: Path, llm_threads: int, start_timeout_s: float) -> Iterator[Server]:
    """`python -m edge serve` in its own session; always terminated (then killed) on the way out."""
    port, key = free_port(), app_key()
    env = {
        **os.environ,
        "KIOSK_APP_KEYS": json.dumps([key]),
        "KIOSK_BUNDLE_DIR": str(bundle),
        "KIOSK_DATA_DIR": str(data_dir),
        "KIOSK_HOST": "127.0.0.1",
        "KIOSK_PORT": str(port),
        "KIOSK_CURATED_ANSWERS_CSV": str(ANSWERS_CSV),
        "KIOSK_LLM_THREADS": str(llm_threads),
        "KIOSK_RATE_LIMIT_PER_S": "1000000",
        "KIOSK_RATE_LIMIT_BURST": "1000000",
    }
    log_path = data_dir.parent / "server.log"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "edge", "serve"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches only us; we stop the server
        )
    server = Server(process, port, key, log_path)
    try:
        server.seconds_to_ready = wait_ready(server, started, start_timeout_s)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def wait_ready(server: Server, started: float, timeout_s: float) -> float:
    """Poll /readyz every 10 ms until 200; seconds since the process was spawned."""
    deadline = started + timeout_s
    with httpx.Client(base_url=server.url, timeout=2.0) as client:
        while time.perf_counter() < deadline:
            if server.process.poll() is not None:
                tail = server.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the server exited with {server.process.returncode}:\n{tail}")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/readyz").status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.01)
    raise RuntimeError(f"the server was not ready after {timeout_s} s")


# --- figure 1: the query mix and the load generator -----------------------------------------------


@dataclass
class QueryMix:
    sequence: list[str]  # the requests' queries in order, repeats included
    warmup: list[str]  # curated-route queries not in the sequence
    llm_questions: list[str]  # dev texts the bundle routes to the LLM (for figure 4)
    dev_curated: int  # dev texts routed to a curated answer as they are
    dev_total: int
    intent_ms: float  # mean offline batch-1 intent latency on one thread, for reference


def build_query_mix(bundle: Path, n: int, warmup: int, seed: int) -> QueryMix:
    """Distinct curated-route questions for 2/3 of the requests; every third request repeats one."""
    curated = bank_of(read_answers_csv(ANSWERS_CSV))
    with (RETAIL / "dev.csv").open(newline="", encoding="utf-8") as handle:
        dev = [row["text"] for row in csv.DictReader(handle) if row["label"] in curated]
    classifier = load_models(load_bundle(bundle)).classifier
    variables = Settings().store_variables
    thresholds = thresholds_from(classifier.config, llm_floor=0.3)

    def route(text: str) -> Route:
        understanding = classifier.understand(text)
        question = Question(understanding.language, understanding.prediction)
        return decide(question, curated, variables, thresholds[understanding.language]).route

    unique_needed = n - n // 3 + warmup
    started, checked = time.perf_counter(), 0
    base_routes = {text: route(text) for text in dev}
    checked += len(dev)
    kept = [text for text in dev if base_routes[text] is Route.CURATED]
    uniques = list(kept)
    for prefix in PREFIXES[1:]:
        for text in kept:
            if len(uniques) >= unique_needed:
                break
            variant = prefix + text[:1].lower() + text[1:]
            checked += 1
            if route(variant) is Route.CURATED:
                uniques.append(variant)
    intent_ms = (time.perf_counter() - started) / checked * 1000.0
    classifier.close()
    if len(uniques) < unique_needed:
        raise SystemExit(f"only {len(uniques)} distinct curated-route questions; lower --requests")
    rng = random.Random(seed)
    rng.shuffle(uniques)
    warm, pool = uniques[:warmup], uniques[warmup:unique_needed]
    return QueryMix(
        sequence=with_repeats(pool, n, rng),
        warmup=warm,
        llm_questions=[text for text in dev if base_routes[text] is Route.LLM],
        dev_curated=len(kept),
        dev_total=len(dev),
        intent_ms=intent_ms,
    )


def with_repeats(uniques: Sequence[str], n: int, rng: random.Random, min_gap: int = 64) -> list[str]:
    """n queries: every third repeats one sent at least `min_gap` requests earlier (when there is one),
    so it is answered, and cached, before the repeat arrives at concurrency 32."""
    sequence: list[str] = []
    fresh = 0
    for position in range(n):
        if position % 3 == 2 and fresh:
            sequence.append(uniques[rng.randrange(max(1, fresh - min_gap))])
        else:
            sequence.append(uniques[fresh])
            fresh += 1
    return sequence


class HttpProtocolError(Exception):
    """A response this minimal client does not handle (no Content-Length)."""


class KeepAliveConnection:
    """Just enough HTTP/1.1 for fixed-length JSON answers over one keep-alive connection.

    Far less work per request than httpx: the load generator shares the 2 cores with the server.
    """

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self._head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{self._head}"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + body)
        await self._writer.drain()
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" not in headers:
            raise HttpProtocolError(f"no content-length in a {status} response")
        payload = await self._reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, payload

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


Request = tuple[str, str, bytes]  # method, path, body


@dataclass
class LoadRun:
    label: str
    planned: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    loop_cpu_s: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def route_mix(self) -> str:
        total = sum(self.routes.values())
        if not total:
            return "-"
        return " ".join(f"{name} {count / total:.0%}" for name, count in self.routes.most_common())

    def error_text(self) -> str:
        return str(sum(self.errors.values())) + (f" ({dict(self.errors)})" if self.errors else "")


async def drive(
    server: Server,
    run: LoadRun,
    requests: Sequence[Request],
    concurrency: int,
    time_limit_s: float,
    timeout_s: float,
    route_of: Callable[[bytes], str] | None,
) -> None:
    """`concurrency` connections take the requests in order until they run out or time is up."""
    indices = iter(range(len(requests)))  # shared: each request is taken by exactly one worker
    deadline = time.monotonic() + time_limit_s

    async def worker() -> None:
        connection = KeepAliveConnection(server.port, server.headers)
        try:
            for index in indices:
                if time.monotonic() > deadline:
                    run.errors["not sent: time limit"] += 1
                    continue
                method, path, body = requests[index]
                sent = time.perf_counter()
                try:
                    async with asyncio.timeout(timeout_s):
                        status, payload = await connection.request(method, path, body)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, HttpProtocolError, ValueError) as exc:
                    run.errors[type(exc).__name__] += 1
                    await connection.close()
                    continue
                if status != 200:
                    run.errors[f"HTTP {status}"] += 1
                    continue
                run.latencies_ms.append((time.perf_counter() - sent) * 1000.0)
                if route_of is not None:
                    run.routes[route_of(payload)] += 1
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def load_run(
    server: Server,
    label: str,
    requests: Sequence[Request],
    concurrency: int,
    time_limit_s: float,
    route_of: Callable[[bytes], str] | None = None,
) -> LoadRun:
    run = LoadRun(label, len(requests))
    client_cpu, server_cpu, loop_cpu = self_cpu_s(), server.cpu_s(), server.loop_cpu_s()
    started = time.perf_counter()
    asyncio.run(drive(server, run, requests, concurrency, time_limit_s, 10.0, route_of))
    run.seconds = time.perf_counter() - started
    run.client_cpu_s, run.server_cpu_s = self_cpu_s() - client_cpu, server.cpu_s() - server_cpu
    run.loop_cpu_s = server.loop_cpu_s() - loop_cpu
    return run


def chat_request(query: str, user: str, mode: str = "blocking") -> Request:
    body = {"query": query, "inputs": {}, "response_mode": mode, "user": user}
    return "POST", "/v1/chat-messages", json.dumps(body).encode()


def dify_route(payload: bytes) -> str:
    return str(json.loads(payload).get("metadata", {}).get("route", "?"))


def figure_curated(server: Server, mix: QueryMix, concurrency: int, time_limit_s: float) -> None:
    n = len(mix.sequence)
    users = [f"bench-load-{i % concurrency}" for i in range(n)]
    mixed = [chat_request(query, user) for query, user in zip(mix.sequence, users, strict=True)]
    floor = load_run(server, "GET /healthz (HTTP floor)", [("GET", "/healthz", b"")] * n, concurrency, time_limit_s)
    run = load_run(server, "chat-messages, mix (target row)", mixed, concurrency, time_limit_s, dify_route)
    cached = load_run(server, "chat-messages, same mix all cached", mixed, concurrency, time_limit_s, dify_route)
    rows = []
    for item in (floor, run, cached):
        rows.append(
            (
                item.label,
                item.ok,
                item.rate,
                ratio(item.rate, floor.rate),
                percentile(item.latencies_ms, 50),
                percentile(item.latencies_ms, 99),
                item.error_text(),
                item.route_mix(),
                item.server_cpu_s / max(1, item.ok) * 1000.0,
                f"{item.loop_cpu_s / item.seconds:.0%}" if item.seconds else "-",
                item.client_cpu_s / max(1, item.ok) * 1000.0,
            )
        )
    p99 = percentile(run.latencies_ms, 99)
    repeats = n - len(set(mix.sequence))
    print_table(
        f"1. Curated answers, Dify blocking API, concurrency {concurrency}, {n} requests"
        f" (target >= 1,000 req/s and p99 <= 50 ms on 2 cores)",
        (
            "run",
            "ok",
            "req/s",
            "÷ floor",
            "p50 ms",
            "p99 ms",
            "errors",
            "routes (metadata.route)",
            "server CPU ms/req",
            "event loop busy",
            "client CPU ms/req",
        ),
        rows,
        (
            f"target met: req/s {verdict(run.rate >= 1000)}, p99 {verdict(p99 <= 50)}, no errors "
            f"{verdict(not run.errors)}",
            f"query mix: {len(set(mix.sequence))} distinct, {repeats} repeats ({repeats / n:.0%}); built from "
            f"{mix.dev_curated} of {mix.dev_total} dev.csv texts that route to a curated answer "
            f"({len(mix.llm_questions)} route to the LLM and were left out) plus greeting-prefixed variants",
            f"offline reference: the INT8 intent model alone, batch 1, 1 thread in this process: "
            f"{mix.intent_ms:.2f} ms/query = {1000 / mix.intent_ms:,.0f} queries/s per core",
            f"load generator: one asyncio process with {concurrency} keep-alive connections, on the same 2 cores",
            "event loop busy: CPU time of the server's main thread (uvicorn's loop) / wall time; near 100% means "
            "the single loop, not the cores, sets the rate",
        ),
    )


# --- figures 2 and 3: LLM streams -----------------------------------------------------------------


@dataclass
class StreamResult:
    ttft_s: float | None = None
    tokens: int = 0  # text chunks: one per token on both sides (no stop strings are used)
    decode_s: float = 0.0  # first to last text chunk
    finish_reason: str | None = None
    text: str = ""
    prompt_tokens: int | None = None
    route: str | None = None
    error: str | None = None
    conversation_id: str | None = None
    _first: float | None = None
    _last: float | None = None

    def chunk(self, started: float, content: str) -> None:
        now = time.perf_counter()
        if self._first is None:
            self._first, self.ttft_s = now, now - started
        self._last = now
        self.tokens += 1
        self.text += content
        self.decode_s = self._last - self._first

    @property
    def tok_s(self) -> float | None:
        return (self.tokens - 1) / self.decode_s if self.tokens > 1 and self.decode_s > 0 else None


def user_messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


async def openai_stream(
    client: httpx.AsyncClient, model: str, messages: list[dict[str, str]], max_tokens: int
) -> StreamResult:
    body = {"model": model, "messages": messages, "stream": True, "max_tokens": max_tokens, "temperature": 0}
    result, started = StreamResult(), time.perf_counter()
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                result.error = f"HTTP {response.status_code}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    result.error = str(chunk["error"].get("code"))
                    continue
                choice = chunk["choices"][0]
                if choice["delta"].get("content"):
                    result.chunk(started, choice["delta"]["content"])
                if choice.get("finish_reason"):
                    result.finish_reason = choice["finish_reason"]
                    result.prompt_tokens = (chunk.get("usage") or {}).get("prompt_tokens")
    except httpx.HTTPError as exc:
        result.error = type(exc).__name__
    return result


def raw_stream(llm: Any, messages: list[dict[str, str]], max_tokens: int) -> StreamResult:
    result, started = StreamResult(), time.perf_counter()
    for chunk in llm.create_chat_completion(messages=messages, stream=True, max_tokens=max_tokens, temperature=0.0):
        choice = chunk["choices"][0]
        if choice["delta"].get("content"):
            result.chunk(started, choice["delta"]["content"])
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]
    return result


def plain_model_id(server: Server) -> str | None:
    ids = [item["id"] for item in httpx.get(f"{server.url}/v1/models", headers=server.headers).json()["data"]]
    return next((i for i in ids if i != ASSISTANT_MODEL), None)


def async_client(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=httpx.Timeout(60.0))


async def sequential_streams(server: Server, model: str, prompts: Sequence[str], max_tokens: int) -> list[StreamResult]:
    async with async_client(server) as client:
        return [await openai_stream(client, model, user_messages(p), max_tokens) for p in prompts]


async def concurrent_streams(
    server: Server, model: str, prompts: Sequence[str], max_tokens: int
) -> tuple[list[StreamResult], float]:
    async with async_client(server) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(openai_stream(client, model, user_messages(p), max_tokens) for p in prompts))
        return list(results), time.perf_counter() - started


def summary(results: Sequence[StreamResult]) -> tuple[float, float, int]:
    ttft = [r.ttft_s * 1000.0 for r in results if r.ttft_s is not None]
    speeds = [r.tok_s for r in results if r.tok_s is not None]
    return percentile(ttft, 50), float(np.median(speeds)) if speeds else float("nan"), sum(r.tokens for r in results)


def figure_llm(server: Server, model: str, gguf: Path, threads: int, prompts: Sequence[str], max_tokens: int) -> None:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=N_CTX, n_batch=N_BATCH, n_threads=threads, verbose=False)
    try:
        raw_stream(llm, user_messages("Hello!"), 8)  # warm-up
        raw = [raw_stream(llm, user_messages(prompt), max_tokens) for prompt in prompts]
    finally:
        llm.close()
    asyncio.run(sequential_streams(server, model, ["Hello!"], 8))  # warm-up
    ours = asyncio.run(sequential_streams(server, model, prompts, max_tokens))
    (raw_ttft, raw_speed, raw_tokens), (our_ttft, our_speed, our_tokens) = summary(raw), summary(ours)
    same = sum(a.text == b.text for a, b in zip(ours, raw, strict=True))
    errors = [r.error for r in ours if r.error]
    prompt_tokens = sorted({r.prompt_tokens for r in ours if r.prompt_tokens})
    print_table(
        f"2. LLM route, OpenAI API `{model}` stream=true, {len(prompts)} short prompts, max_tokens {max_tokens}, "
        f"{threads} thread(s) (target TTFT p50 <= 150 ms, tok/s >= 0.95x raw)",
        ("engine", "TTFT p50 ms", "TTFT p90 ms", "gen tok/s (median)", "tokens", "errors"),
        [
            (
                "raw llama-cpp-python (in process)",
                raw_ttft,
                percentile([r.ttft_s * 1000 for r in raw if r.ttft_s], 90),
                raw_speed,
                raw_tokens,
                0,
            ),
            (
                "ours over HTTP",
                our_ttft,
                percentile([r.ttft_s * 1000 for r in ours if r.ttft_s], 90),
                our_speed,
                our_tokens,
                len(errors),
            ),
            ("ours / raw", ratio(our_ttft, raw_ttft), None, ratio(our_speed, raw_speed), None, None),
        ],
        (
            f"target met: TTFT p50 {verdict(our_ttft <= 150)}, tok/s {verdict(our_speed >= 0.95 * raw_speed)}",
            f"same text as raw llama-cpp-python at temperature 0: {same}/{len(prompts)}; "
            f"prompt tokens {prompt_tokens[0] if prompt_tokens else '-'}-{prompt_tokens[-1] if prompt_tokens else '-'}",
            "TTFT: request sent to first text chunk (ours includes HTTP, auth, templating and the queue)",
        ),
    )


def llama_server_status() -> str:
    try:
        import llama_cpp.server.app  # noqa: F401
    except Exception as exc:  # an optional comparison: any import failure just skips the row
        return f"skipped: `import llama_cpp.server.app` fails ({type(exc).__name__}: {exc})"
    return "skipped: importable, but this bench does not start it (optional comparison)"


def figure_concurrent(server: Server, model: str, prompts: Sequence[str], max_tokens: int) -> None:
    alone = asyncio.run(sequential_streams(server, model, prompts, max_tokens))
    together, wall = asyncio.run(concurrent_streams(server, model, prompts, max_tokens))
    alone_wall = sum((r.ttft_s or 0.0) + r.decode_s for r in alone)
    interrupted: list[str] = []
    for prompt, solo, result in zip(prompts, alone, together, strict=True):
        if result.error or result.finish_reason is None:
            interrupted.append(f"{prompt!r}: ended without finish_reason ({result.error or 'no final chunk'})")
        elif result.text != solo.text:
            interrupted.append(f"{prompt!r}: text differs from the same prompt alone")
    tokens_alone, tokens_together = sum(r.tokens for r in alone), sum(r.tokens for r in together)
    ttft_max = max((r.ttft_s or 0.0) for r in together) * 1000.0
    print_table(
        f"3. {len(prompts)} concurrent streams, OpenAI API `{model}`, max_tokens {max_tokens} (target 0 interrupted)",
        ("run", "tokens", "wall s", "aggregate tok/s", "÷ one by one", "slowest TTFT ms", "interrupted"),
        [
            (
                f"{len(prompts)} streams one by one (baseline)",
                tokens_alone,
                alone_wall,
                tokens_alone / alone_wall,
                1.0,
                max((r.ttft_s or 0.0) for r in alone) * 1000.0,
                "-",
            ),
            (
                f"{len(prompts)} streams at once",
                tokens_together,
                wall,
                tokens_together / wall,
                ratio(tokens_together / wall, tokens_alone / alone_wall),
                ttft_max,
                len(interrupted),
            ),
            (LLAMA_SERVER_ROW, None, None, None, None, None, None),
        ],
        (
            f"target met: {verdict(not interrupted)}",
            *interrupted,
            f"{LLAMA_SERVER_ROW}: {llama_server_status()}",
            "one llama.cpp context serves a FIFO: streams run one after another, so the slowest TTFT is a queue wait",
        ),
    )


# --- figure 4: a conversation ---------------------------------------------------------------------


async def dify_stream(client: httpx.AsyncClient, query: str, user: str, conversation_id: str | None) -> StreamResult:
    body = {"query": query, "inputs": {}, "response_mode": "streaming", "user": user}
    if conversation_id:
        body["conversation_id"] = conversation_id
    result, started = StreamResult(), time.perf_counter()
    try:
        async with client.stream("POST", "/v1/chat-messages", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                result.error = f"HTTP {response.status_code}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                result.conversation_id = event.get("conversation_id") or result.conversation_id
                if event["event"] == "message" and event.get("answer"):
                    result.chunk(started, event["answer"])
                elif event["event"] == "message_end":
                    result.finish_reason = "stop"
                    result.route = event["metadata"]["route"]
                    result.prompt_tokens = event["metadata"]["usage"]["prompt_tokens"]
                elif event["event"] == "error":
                    result.error = event.get("code")
    except httpx.HTTPError as exc:
        result.error = type(exc).__name__
    return result


async def dify_conversations(server: Server, questions: Sequence[Sequence[str]]) -> list[list[StreamResult]]:
    out = []
    async with async_client(server) as client:
        for number, turns in enumerate(questions):
            conversation: str | None = None
            results = []
            for question in turns:
                result = await dify_stream(client, question, f"bench-conversation-{number}", conversation)
                conversation = result.conversation_id
                results.append(result)
            out.append(results)
    return out


async def openai_conversations(
    server: Server, model: str, questions: Sequence[Sequence[str]]
) -> list[list[StreamResult]]:
    """The fallback when no question goes to the LLM: plain generation with a growing messages list."""
    out = []
    async with async_client(server) as client:
        for turns in questions:
            messages: list[dict[str, str]] = []
            results = []
            for question in turns:
                messages.append({"role": "user", "content": question})
                result = await openai_stream(client, model, messages, ANSWER_TOKENS)
                messages.append({"role": "assistant", "content": result.text})
                results.append(result)
            out.append(results)
    return out


def figure_turns(server: Server, model: str, llm_questions: Sequence[str], conversations: int, turns: int) -> None:
    needed = conversations * turns
    if len(llm_questions) >= needed:
        how = "Dify streaming API, one conversation_id per conversation, dev.csv questions routed to the LLM"
        questions = [list(llm_questions[c * turns : (c + 1) * turns]) for c in range(conversations)]
        runs = asyncio.run(dify_conversations(server, questions))
    else:
        how = (
            f"only {len(llm_questions)} dev.csv questions go to the LLM route (need {needed}): OpenAI plain model "
            "with a growing messages list instead"
        )
        prompts = list(SHORT_PROMPTS) * (needed // len(SHORT_PROMPTS) + 1)
        questions = [prompts[c * turns : (c + 1) * turns] for c in range(conversations)]
        runs = asyncio.run(openai_conversations(server, model, questions))
    rows = []
    ttft_by_turn = []
    for turn in range(turns):
        at_turn = [conversation[turn] for conversation in runs]
        ttft = [r.ttft_s * 1000.0 for r in at_turn if r.ttft_s is not None]
        ttft_by_turn.append(percentile(ttft, 50))
        routes = Counter(r.route or "-" for r in at_turn)
        rows.append(
            (
                turn + 1,
                ttft_by_turn[-1],
                min(ttft, default=None),
                max(ttft, default=None),
                int(np.median([r.prompt_tokens or 0 for r in at_turn])),
                int(np.median([r.tokens for r in at_turn])),
                " ".join(f"{k} {v}" for k, v in routes.items()),
                sum(1 for r in at_turn if r.tokens >= ANSWER_TOKENS),
                sum(1 for r in at_turn if r.error or r.finish_reason is None),
            )
        )
    growth = ratio(ttft_by_turn[-1], ttft_by_turn[0])
    print_table(
        f"4. TTFT by turn, {conversations} conversations of {turns} turns (target turn {turns} <= 1.3x turn 1)",
        (
            "turn",
            "TTFT median ms",
            "min",
            "max",
            "prompt tokens",
            "answer chunks",
            "routes",
            f"answers cut at {ANSWER_TOKENS} tokens",
            "errors",
        ),
        rows,
        (
            f"turn {turns} / turn 1: {fmt(growth)}x — target met: {verdict(growth is not None and growth <= 1.3)}",
            how,
        ),
    )


# --- figure 5: memory and start-up -----------------------------------------------------------------

RAW_LOAD = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=int(sys.argv[2]), n_batch=int(sys.argv[3]), n_threads=1, verbose=False)
print("loaded", flush=True)
llm.create_completion("Hello", max_tokens=8)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(int(status["VmRSS"].split()[0]) / 1024, flush=True)
"""


def raw_llm_process(gguf: Path) -> tuple[float, float]:
    """Seconds from spawn to a loaded raw llama-cpp-python model, and its RSS (MB) after a short generation."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", RAW_LOAD, str(gguf), str(N_CTX), str(N_BATCH)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()
        loaded = time.perf_counter() - started
        rss = float(process.stdout.readline())
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return loaded, rss


def warm_up(server: Server, mix: QueryMix, model: str | None) -> None:
    requests = [chat_request(query, "bench-warmup") for query in mix.warmup]
    load_run(server, "warm-up", requests, 4, 60.0, dify_route)
    if model is not None:
        asyncio.run(sequential_streams(server, model, ["Hello!"], 8))


def figure_memory(
    server: Server, rss: dict[str, tuple[float, str]], raw_ready_s: float, raw_rss: float, bundle: Path
) -> None:
    peak = server.peak_rss_mb()
    logged = server.logged_ready_s()
    rss_rows = [
        (f"RSS {stage}, MB", value, split, raw_rss, ratio(value, raw_rss), "<= 350", verdict(value <= 350))
        for stage, (value, split) in rss.items()
    ]
    print_table(
        f"5. Server memory and start-up, bundle {bundle.name} (targets RSS <= 350 MB, ready <= 3 s)",
        ("figure", "ours", "ours: where (MB)", "raw llama-cpp-python, GGUF only", "ours / raw", "target", "met"),
        [
            *rss_rows,
            ("peak RSS (VmHWM), MB", peak, None, None, None, "<= 350", verdict(peak <= 350)),
            (
                "process start to ready, s",
                server.seconds_to_ready,
                None,
                raw_ready_s,
                ratio(server.seconds_to_ready, raw_ready_s),
                "<= 3",
                verdict(server.seconds_to_ready <= 3),
            ),
            ("  of which lifespan (server log), s", logged, None, None, None, None, None),
        ],
        (
            "ours: `python -m edge serve` spawned to the first `GET /readyz` 200 (polled every 10 ms); "
            "raw: a fresh Python spawned to `Llama(...)` returned",
            f"server threads at the end: {server.threads()}",
        ),
    )


# --- main -----------------------------------------------------------------------------------------


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # handled as Ctrl-C: unwinds through `running_server`, which stops the server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests per curated-route load run")
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "default", help="bundle to serve")
    parser.add_argument("--concurrency", type=int, default=32, help="connections of the curated-route load")
    parser.add_argument("--llm-threads", type=int, default=1, help="llama.cpp threads, server and raw baseline")
    parser.add_argument("--prompts", type=int, default=20, help="short prompts for the TTFT and tok/s figure")
    parser.add_argument("--gen-tokens", type=int, default=48, help="max_tokens of each plain-model stream")
    parser.add_argument("--conversations", type=int, default=3, help="conversations in the turn-5 figure")
    parser.add_argument("--time-limit", type=float, default=180.0, help="seconds at most per load run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--curated-only", action="store_true", help="only figure 1 (curated-route load) and memory: a quick check"
    )
    args = parser.parse_args()
    if args.requests < 3 or not 1 <= args.prompts <= len(SHORT_PROMPTS):
        parser.error(f"--requests must be >= 3 and --prompts between 1 and {len(SHORT_PROMPTS)}")
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: the server process was stopped", file=sys.stderr)
        sys.exit(130)


def run(args: argparse.Namespace) -> None:
    bundle = args.bundle.resolve()
    started = time.perf_counter()
    print(f"kiosk-edge server bench: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")

    gguf = bundle / "llm" / "model.gguf"
    has_llm = gguf.is_file()
    mix = build_query_mix(bundle, args.requests, warmup=16, seed=args.seed)
    raw_ready_s, raw_rss = raw_llm_process(gguf) if has_llm else (float("nan"), float("nan"))

    with (
        tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp,
        running_server(bundle, Path(tmp) / "data", args.llm_threads, start_timeout_s=120.0) as server,
    ):
        print(f"server pid {server.pid} ready in {server.seconds_to_ready:.2f} s on {server.url}")
        model = plain_model_id(server)
        warm_up(server, mix, model)
        rss = {"after warm-up": (server.rss_mb(), server.rss_split())}
        figure_curated(server, mix, args.concurrency, args.time_limit)
        rss["after the curated load"] = (server.rss_mb(), server.rss_split())
        if args.curated_only:
            print("\n--curated-only: figures 2-4 skipped")
        elif model is not None:
            figure_llm(server, model, gguf, args.llm_threads, SHORT_PROMPTS[: args.prompts], args.gen_tokens)
            figure_concurrent(server, model, SHORT_PROMPTS[:4], args.gen_tokens)
            figure_turns(server, model, mix.llm_questions, args.conversations, turns=5)
        else:
            print("\nno LLM in the bundle: figures 2-4 skipped")
        rss["at the end (after the LLM figures)"] = (server.rss_mb(), server.rss_split())
        figure_memory(server, rss, raw_ready_s, raw_rss, bundle)
        problems = server.log_problems()
        print(f"\nserver log: {len(problems)} warning/error lines" + "".join(f"\n  {p}" for p in problems[:10]))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
