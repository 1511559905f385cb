"""End-to-end answer quality: shopper questions in English and Chinese against a real `edge serve`.

Run: `.venv/bin/python bench/answers.py --bundle models/default [--cases bench/answers/questions.jsonl]
[--language en|zh] [--repeat N] [--json-out figures.json]` (a few minutes on 2 cores, mostly LLM turns).

The questions (`bench/answers/questions.jsonl`) are written from a shopper's point of view, independently
of the training data: store FAQ paraphrases, online-shop intent questions, two- and three-turn follow-ups,
near-domain questions the box has no answer for and plain off-topic ones. Each turn names what should
answer it: an intent label, `faq:<question of store_faq.csv>` (resolved to a label through
`bench/answers/labels.csv`, so the label names can change without touching the questions) or `handoff`.

How it runs: `python -m edge serve` in its own session on a free loopback port, with a fresh data directory,
a generated app key and sync off; inherited `KIOSK_*` variables are dropped (pass settings with `--env`).
It waits for `GET /readyz` 200, then for the knowledge seed to be embedded (the server embeds it in the
background after it is ready: the bench polls the SQLite file read-only until no segment lacks a vector,
or the count stops moving for 15 s, then waits 3 s more for the server's 2 s knowledge refresh). Every turn
goes through Dify's blocking `POST /v1/chat-messages`, one conversation per case, one at a time. After a
clean shutdown the bench reads each turn's `route, intent, answer, sources` from `messages` read-only.

Scoring (see `score`): a verbatim answer (route `cache`/`curated`) is judged by `messages.intent`, an LLM
answer by the `document_name` of its first source; either is right when that label is accepted for the
turn. `handoff`/`declined` is right only where `handoff` is expected. Latency is the client's wall time per
turn; these machines are shared and noisy, so treat it as a rough guide (nothing here asserts on it).

With central online (`--central`, opt-in; issue #13): the fake central Dify of `tests/fake_dify` is started
on loopback (uvicorn in this process), its chat app answering from `bench/answers/central_knowledge.jsonl`
(one store fact a line: `id`, `language`, `content`; the facts the box's bank lacks), with a modelled
think time (`--central-first-byte`, `--central-token-delay`). The bench then serves the same cases twice,
each through the box's *streaming* chat API so the first token is timed: a baseline with escalation off,
and a run with `KIOSK_ESCALATE=true`, `KIOSK_ESCALATE_ON` (`--escalate-on`), `KIOSK_CENTRAL_URL` and
`KIOSK_CENTRAL_CHAT_KEY` pointing at the fake (`edge sync once` first, so the box has seen central reachable).
A turn may name the fact that answers it: `"central": "<fact id>"` (the near-domain questions the bank lacks;
their `expect` stays `handoff`, which the default run scores as before). In both runs of `--central`, such a
turn counts as answerable, and it is correct only when the box relayed central's answer (route `central`,
the fact's text in the answer); a hand-off there is a miss. An answer from central on any other turn is
wrong. Printed per language: correct answers with and without escalation, escalations, fall-backs by cause,
and the client's first-token latency p50/p99 of escalated answers (beside the box's own record of central's
first byte).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np

from edge.settings import PLACEHOLDER_MARKERS

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "bench" / "answers" / "questions.jsonl"
LABELS = ROOT / "bench" / "answers" / "labels.csv"
INTENT_ANSWERS = ROOT / "models" / "data" / "bitext_retail" / "intent_responses.csv"
STORE_FAQ = ROOT / "models" / "data" / "knowledge" / "store_faq.csv"

HANDOFF = "handoff"
FAQ_PREFIX = "faq:"
LANGUAGES = ("en", "zh")
KINDS = ("faq", "intent", "followup", "near_domain", "off_topic")
VERBATIM_ROUTES = frozenset({"cache", "curated"})
ANSWERED_ROUTES = VERBATIM_ROUTES | {"llm"}
HANDOFF_ROUTES = frozenset({"handoff", "declined"})
SEED_STALL_S = 15.0  # the seed's vector count has not moved for this long: indexing is off or stuck
SEED_SETTLE_S = 3.0  # after indexing: longer than the server's knowledge refresh (2 s by default)
REQUEST_TIMEOUT_S = 180.0  # one turn: an LLM answer may queue behind another and run its 30 s budget


# --- the cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    query: str
    expect: str
    accept: tuple[str, ...] = ()
    central: str | None = None  # the id of the central fact that answers it (`--central`), if any

    @property
    def expectations(self) -> tuple[str, ...]:
        return (self.expect, *self.accept)


@dataclass(frozen=True)
class Case:
    id: str
    language: str
    kind: str
    turns: tuple[Turn, ...]


def load_cases(path: Path) -> list[Case]:
    """The question file: one JSON object a line; raises ValueError naming the line when one is malformed."""
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            turns = tuple(
                Turn(
                    str(t["query"]),
                    str(t["expect"]),
                    tuple(str(a) for a in t.get("accept", ())),
                    str(t["central"]) if t.get("central") else None,
                )
                for t in raw["turns"]
            )
            case = Case(str(raw["id"]), str(raw["language"]), str(raw["kind"]), turns)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a case ({type(exc).__name__}: {exc})") from None
        if case.language not in LANGUAGES or case.kind not in KINDS or not case.turns:
            raise ValueError(f"{path}:{number}: unknown language or kind, or no turns")
        cases.append(case)
    return cases


def intent_labels(path: Path = INTENT_ANSWERS) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [row["label"] for row in csv.DictReader(handle)]


def faq_questions(path: Path = STORE_FAQ) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [row["question"] for row in csv.DictReader(handle)]


def load_label_map(path: Path = LABELS) -> dict[str, str]:
    """`expect,label`: what a `faq:<question>` expectation means as the label the server reports."""
    with path.open(encoding="utf-8", newline="") as handle:
        return {row["expect"]: row["label"] for row in csv.DictReader(handle)}


def resolve(expectation: str, label_map: Mapping[str, str]) -> str:
    """An expectation as a label: `faq:` through the mapping file; intent labels and `handoff` as they are."""
    if expectation.startswith(FAQ_PREFIX):
        if expectation not in label_map:
            raise ValueError(f"{expectation!r} is not in the labels file")
        return label_map[expectation]
    return expectation


def accepted_labels(turn: Turn, label_map: Mapping[str, str]) -> frozenset[str]:
    return frozenset(resolve(expectation, label_map) for expectation in turn.expectations)


# --- scoring (pure) ---------------------------------------------------------------------------------


class Outcome(StrEnum):
    CORRECT = "correct"  # answered, by an accepted item
    WRONG = "wrong"  # answered, by another item, or at all where a hand-off was expected
    MISSED = "missed"  # handed off although the box had an answer
    HANDED_OFF = "handed_off"  # handed off (or declined) where that was expected
    ERROR = "error"  # no answer to judge: an HTTP error or no message row


def score(accepted: Collection[str], route: str | None, label: str | None) -> Outcome:
    """One turn's outcome from its accepted labels (resolved; may include `handoff`), the message's route and
    the label that answered (`answered_label`)."""
    if route in HANDOFF_ROUTES:
        return Outcome.HANDED_OFF if HANDOFF in accepted else Outcome.MISSED
    if route in ANSWERED_ROUTES:
        return Outcome.CORRECT if label is not None and label != HANDOFF and label in accepted else Outcome.WRONG
    return Outcome.ERROR


def answered_label(route: str | None, intent: str | None, sources: str | None) -> str | None:
    """The item that answered: `messages.intent` for a verbatim answer, the first source's `document_name`
    for an LLM answer (`sources` is the column's JSON text), else None."""
    if route in VERBATIM_ROUTES:
        return intent or None
    if route != "llm" or not sources:
        return None
    try:
        parsed = json.loads(sources)
    except json.JSONDecodeError:
        return None
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        name = parsed[0].get("document_name")
        return str(name) if name else None
    return None


CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LATIN_WORD = re.compile(r"[A-Za-z]+")


def is_chinese(text: str) -> bool:
    """Mostly Chinese: CJK characters at least as many as Latin words (an e-mail address or a button's
    English name inside a Chinese sentence is fine; a Chinese store name in an English answer is not)."""
    cjk = len(CJK.findall(text))
    return cjk > 0 and cjk >= len(LATIN_WORD.findall(text))


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


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    key: str
    data_dir: Path
    log_path: Path
    seconds_to_ready: float = float("nan")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.data_dir / "kiosk.sqlite3"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else "(no log)"

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the server exited with {self.process.returncode}; its log ends:\n{self.log_tail()}")


def server_env(bundle: Path, data_dir: Path, port: int, key: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The process environment minus any inherited KIOSK_* (a developer's shell must not change the figures)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("KIOSK_")}
    env.update(
        {
            "KIOSK_APP_KEYS": json.dumps([key]),
            "KIOSK_BUNDLE_DIR": str(bundle),
            "KIOSK_DATA_DIR": str(data_dir),
            "KIOSK_CENTRAL_URL": "",
            "KIOSK_HOST": "127.0.0.1",
            "KIOSK_PORT": str(port),
            "KIOSK_RATE_LIMIT_PER_S": "1000000",  # one client sends every turn: never rate-limit it
            "KIOSK_RATE_LIMIT_BURST": "1000000",
        }
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def running_server(bundle: Path, data_dir: Path, extra_env: Mapping[str, str], timeout_s: float) -> Iterator[Server]:
    """`python -m edge serve` in its own session (cwd: the repository, for the seed paths); SIGTERM and a wait
    on the way out, SIGKILL if it does not stop."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port, key = free_port(), app_key()
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "edge", "serve"],
            cwd=ROOT,
            env=server_env(bundle, data_dir, port, key, extra_env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, key, data_dir, log_path)
    try:
        server.seconds_to_ready = wait_ready(server, started, timeout_s)
        yield server
    finally:
        stop_server(server)


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print("the server did not stop within 30 s of SIGTERM: killed", file=sys.stderr)
            server.process.kill()
            server.process.wait(timeout=10)


def wait_ready(server: Server, started: float, timeout_s: float) -> float:
    """Poll `/readyz` (503 while loading) until 200; seconds since spawn."""
    deadline = started + timeout_s
    with httpx.Client(base_url=server.url, timeout=2.0) as client:
        while time.perf_counter() < deadline:
            server.check_alive()
            with contextlib.suppress(httpx.TransportError):
                if client.get("/readyz").status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.1)
    raise RuntimeError(f"the server was not ready after {timeout_s:.0f} s; its log ends:\n{server.log_tail()}")


def read_only(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)


def seed_counts(database: Path) -> tuple[int, int] | None:
    """(knowledge segments, segments without a vector), or None before the table exists."""
    try:
        with contextlib.closing(read_only(database)) as db:
            total, missing = db.execute(
                "SELECT count(*), coalesce(sum(vector IS NULL), 0) FROM knowledge_segments"
            ).fetchone()
    except sqlite3.Error:
        return None
    return int(total), int(missing)


def wait_seeded(server: Server, timeout_s: float) -> str:
    """Until every seeded segment has its vector (or the count stalls), then the server's refresh interval."""
    started = time.perf_counter()
    last: tuple[int, int] | None = None
    moved = started
    while time.perf_counter() - started < timeout_s:
        server.check_alive()
        counts = seed_counts(server.database)
        if counts != last:
            last, moved = counts, time.perf_counter()
        if counts is not None and counts[0] > 0 and counts[1] == 0:
            time.sleep(SEED_SETTLE_S)
            return f"{counts[0]} knowledge segments embedded after {time.perf_counter() - started:.1f} s"
        if time.perf_counter() - moved > SEED_STALL_S:
            break
        time.sleep(0.5)
    time.sleep(SEED_SETTLE_S)
    return (
        f"seeding not confirmed (segments, without vector: {last}); went on after {time.perf_counter() - started:.0f} s"
    )


# --- running the cases ------------------------------------------------------------------------------


@dataclass
class TurnResult:
    case_id: str
    language: str
    kind: str
    turn: int  # 1-based
    repeat: int  # 1-based
    query: str
    expect: str
    accepted: tuple[str, ...]  # resolved labels
    latency_ms: float | None = None
    status: int | None = None
    message_id: str | None = None
    conversation_id: str | None = None
    answer: str = ""
    error: str | None = None
    route: str | None = None
    label: str | None = None
    outcome: Outcome = Outcome.ERROR

    @property
    def answerable(self) -> bool:
        return self.expect != HANDOFF

    @property
    def tag(self) -> str:
        return f"{self.case_id} t{self.turn}" + (f" r{self.repeat}" if self.repeat > 1 else "")


def chat(client: httpx.Client, query: str, user: str, conversation_id: str) -> tuple[int, dict[str, Any] | str, float]:
    body = {
        "query": query,
        "user": user,
        "inputs": {},
        "response_mode": "blocking",
        "conversation_id": conversation_id,
    }
    started = time.perf_counter()
    response = client.post("/v1/chat-messages", json=body)
    latency_ms = (time.perf_counter() - started) * 1000.0
    try:
        payload: dict[str, Any] | str = response.json()
    except ValueError:
        payload = response.text
    return response.status_code, payload, latency_ms


def run_cases(
    server: Server,
    cases: Sequence[Case],
    label_map: Mapping[str, str],
    repeat: int,
    send: Callable[[httpx.Client, str, str, str], tuple[int, dict[str, Any] | str, float]] | None = None,
    payloads: list[dict[str, Any] | str | None] | None = None,
) -> list[TurnResult]:
    """Every turn, in order; `send` (default: blocking `chat`) sends one; `payloads` collects each turn's reply."""
    send = send or chat
    total = repeat * sum(len(case.turns) for case in cases)
    results: list[TurnResult] = []
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=REQUEST_TIMEOUT_S) as client:
        for round_ in range(1, repeat + 1):
            for case in cases:
                conversation = ""
                for number, turn in enumerate(case.turns, start=1):
                    result = TurnResult(
                        case.id,
                        case.language,
                        case.kind,
                        number,
                        round_,
                        turn.query,
                        turn.expect,
                        tuple(sorted(accepted_labels(turn, label_map))),
                    )
                    payload: dict[str, Any] | str | None = None
                    try:
                        status, payload, result.latency_ms = send(client, turn.query, f"bench-{case.id}", conversation)
                    except httpx.HTTPError as exc:
                        server.check_alive()
                        result.error = f"{type(exc).__name__}: {exc}"
                    else:
                        result.status = status
                        if status == 200 and isinstance(payload, dict):
                            result.message_id = payload.get("message_id")
                            result.conversation_id = payload.get("conversation_id")
                            result.answer = str(payload.get("answer") or "")
                            conversation = result.conversation_id or conversation
                        else:
                            result.error = f"HTTP {status}: {str(payload)[:200]}"
                    results.append(result)
                    if payloads is not None:
                        payloads.append(payload)
                    if len(results) % 50 == 0 or len(results) == total:
                        print(f"  {len(results)}/{total} turns, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return results


def judge(results: Iterable[TurnResult], database: Path) -> None:
    """Fill route, label and outcome of every turn from the server's own record of the message."""
    with contextlib.closing(read_only(database)) as db:
        for result in results:
            if result.message_id is None:
                result.outcome = Outcome.ERROR
                continue
            row = db.execute(
                "SELECT route, intent, answer, sources FROM messages WHERE id = ?", (result.message_id,)
            ).fetchone()
            if row is None:
                result.error = result.error or "no messages row for the message_id"
                result.outcome = Outcome.ERROR
                continue
            route, intent, answer, sources = row
            result.route = route
            result.label = answered_label(route, intent, sources)
            result.answer = answer if answer is not None else result.answer
            result.outcome = score(result.accepted, route, result.label)


# --- figures ---------------------------------------------------------------------------------------


def pct(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summary(results: Sequence[TurnResult], language: str) -> dict[str, Any]:
    """The headline figures of one language's turns (a dict, so the JSON file carries the same numbers)."""
    count = Counter(r.outcome for r in results)
    answerable = [r for r in results if r.answerable]
    out_of_scope = [r for r in results if not r.answerable]
    correct = sum(1 for r in answerable if r.outcome is Outcome.CORRECT)
    wrong = count[Outcome.WRONG]
    missed = sum(1 for r in answerable if r.outcome is Outcome.MISSED)
    handed_off = sum(1 for r in out_of_scope if r.outcome is Outcome.HANDED_OFF)
    figures: dict[str, Any] = {
        "turns": len(results),
        "answerable_turns": len(answerable),
        "answered_correctly": correct,
        "answered_correctly_pct": pct(correct, len(answerable)),
        "answered_wrongly": wrong,
        "answered_wrongly_pct_of_all": pct(wrong, len(results)),
        "answerable_handed_off": missed,
        "answerable_handed_off_pct": pct(missed, len(answerable)),
        "out_of_scope_turns": len(out_of_scope),
        "out_of_scope_handed_off": handed_off,
        "out_of_scope_handed_off_pct": pct(handed_off, len(out_of_scope)),
        "errors": count[Outcome.ERROR],
    }
    if language == "zh":
        with_text = [r for r in results if r.outcome is not Outcome.ERROR and r.answer]
        chinese = sum(1 for r in with_text if is_chinese(r.answer))
        figures["answers_in_chinese"] = chinese
        figures["answers_in_chinese_pct"] = pct(chinese, len(with_text))
    return figures


def kind_breakdown(results: Sequence[TurnResult]) -> dict[str, dict[str, Any]]:
    by_kind: dict[str, list[TurnResult]] = defaultdict(list)
    for result in results:
        by_kind[result.kind].append(result)
    out = {}
    for kind in KINDS:
        turns = by_kind.get(kind, [])
        if not turns:
            continue
        count = Counter(r.outcome for r in turns)
        right = count[Outcome.CORRECT] + count[Outcome.HANDED_OFF]
        out[kind] = {
            "turns": len(turns),
            **{outcome.value: count[outcome] for outcome in Outcome},
            "right_pct": pct(right, len(turns)),
        }
    return out


def latency_by_route(results: Sequence[TurnResult]) -> dict[str, dict[str, Any]]:
    by_route: dict[str, list[float]] = defaultdict(list)
    for result in results:
        if result.latency_ms is not None:
            by_route[result.route or "unknown"].append(result.latency_ms)
    return {
        route: {"n": len(values), "p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99)}
        for route, values in sorted(by_route.items())
    }


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if value != value else f"{value:.1f}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[fmt(cell) for cell in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)]
    print(f"\n{title}\n")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


SUMMARY_ROWS = (
    ("turns", "turns"),
    ("answerable turns", "answerable_turns"),
    ("answered correctly, n", "answered_correctly"),
    ("answered correctly, % of answerable", "answered_correctly_pct"),
    ("answered wrongly, n", "answered_wrongly"),
    ("answered wrongly, % of all turns", "answered_wrongly_pct_of_all"),
    ("answerable but handed off, n", "answerable_handed_off"),
    ("answerable but handed off, % of answerable", "answerable_handed_off_pct"),
    ("off-topic + near-domain turns", "out_of_scope_turns"),
    ("  handed off or declined, %", "out_of_scope_handed_off_pct"),
    ("Chinese turns answered in Chinese, %", "answers_in_chinese_pct"),
    ("errors (HTTP or no message row)", "errors"),
)


def one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def report(results: Sequence[TurnResult]) -> dict[str, Any]:
    languages = [language for language in LANGUAGES if any(r.language == language for r in results)]
    per_language = {lang: [r for r in results if r.language == lang] for lang in languages}
    figures = {
        "summary": {lang: summary(turns, lang) for lang, turns in per_language.items()},
        "kinds": {lang: kind_breakdown(turns) for lang, turns in per_language.items()},
        "latency_ms": {lang: latency_by_route(turns) for lang, turns in per_language.items()},
    }
    print_table(
        "Answer quality per language",
        ("figure", *languages),
        [(name, *(figures["summary"][lang].get(key) for lang in languages)) for name, key in SUMMARY_ROWS],
    )
    print_table(
        "By kind (right = correct answer, or hand-off where one is expected)",
        ("language", "kind", "turns", *(o.value for o in Outcome), "right %"),
        [
            (lang, kind, row["turns"], *(row[o.value] for o in Outcome), row["right_pct"])
            for lang in languages
            for kind, row in figures["kinds"][lang].items()
        ],
    )
    print_table(
        "Client latency per route, ms (one request at a time; shared machine: a rough guide)",
        ("language", "route", "n", "p50", "p99"),
        [
            (lang, route, row["n"], row["p50_ms"], row["p99_ms"])
            for lang in languages
            for route, row in figures["latency_ms"][lang].items()
        ],
    )
    failures = [r for r in results if r.outcome in (Outcome.WRONG, Outcome.MISSED, Outcome.ERROR)]
    print_failures(failures)
    figures["failures"] = [failure_record(r) for r in failures]
    return figures


def failure_record(result: TurnResult) -> dict[str, Any]:
    return {
        "id": result.case_id,
        "turn": result.turn,
        "repeat": result.repeat,
        "outcome": result.outcome.value,
        "query": result.query,
        "expect": result.expect,
        "accepted": list(result.accepted),
        "route": result.route,
        "label": result.label,
        "answer": result.answer,
        "error": result.error,
    }


def print_failures(failures: Sequence[TurnResult]) -> None:
    sections = (
        (Outcome.WRONG, "Wrong answers"),
        (Outcome.MISSED, "Answerable questions handed off"),
        (Outcome.ERROR, "Errors"),
    )
    for outcome, title in sections:
        chosen = [r for r in failures if r.outcome is outcome]
        print(f"\n{title}: {len(chosen)}")
        for r in chosen:
            wanted = " | ".join(r.accepted)
            if outcome is Outcome.WRONG:
                got = f"{r.route}: {r.label or '(no label)'} «{one_line(r.answer, 60)}»"
            elif outcome is Outcome.MISSED:
                got = r.route or "-"
            else:
                got = r.error or "-"
            print(f"  [{r.tag}] {one_line(r.query, 70)}\n      expected {wanted}\n      got      {got}")


# --- with central online (--central) -------------------------------------------------------------

CENTRAL_KNOWLEDGE = ROOT / "bench" / "answers" / "central_knowledge.jsonl"
CENTRAL_ROUTE = "central"
CENTRAL_MIN_SCORE = 0.5  # the fake central answers only when half the question's terms are in a fact
ESCALATE_ON = ("handoff", "llm", "both", "all")
REACHABLE_FOR_THE_RUN_S = 86_400.0  # one `edge sync once` probe stands for the whole run


@dataclass(frozen=True)
class Fact:
    id: str
    language: str
    content: str


def load_facts(path: Path = CENTRAL_KNOWLEDGE) -> dict[str, Fact]:
    """Central's knowledge file: one `{"id", "language", "content"}` a line; ids unique."""
    facts: dict[str, Fact] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            fact = Fact(str(raw["id"]), str(raw["language"]), str(raw["content"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a fact ({type(exc).__name__}: {exc})") from None
        if fact.id in facts or fact.language not in LANGUAGES or not fact.content.strip():
            raise ValueError(f"{path}:{number}: a repeated id, an unknown language or no content")
        facts[fact.id] = fact
    return facts


def check_central_expectations(cases: Iterable[Case], facts: Mapping[str, Fact]) -> None:
    for case in cases:
        for turn in case.turns:
            if turn.central is not None and turn.central not in facts:
                raise ValueError(f"{case.id}: central fact {turn.central!r} is not in the knowledge file")


def _flat(text: str) -> str:
    return " ".join(text.split())


def score_with_central(
    turn: Turn, accepted: Collection[str], route: str | None, label: str | None, answer: str, facts: Mapping[str, Fact]
) -> Outcome:
    """`score`, where central counts: a relayed answer (route `central`) is correct only when the turn names a
    central fact and the answer carries its text; a hand-off where central knew the answer is a miss."""
    if route == CENTRAL_ROUTE:
        fact = facts.get(turn.central) if turn.central else None
        return Outcome.CORRECT if fact is not None and _flat(fact.content) in _flat(answer) else Outcome.WRONG
    outcome = score(accepted, route, label)
    return Outcome.MISSED if turn.central is not None and outcome is Outcome.HANDED_OFF else outcome


@dataclass
class CentralTurn:
    """What the `--central` runs add to a turn: the client's first token, and the box's record of central."""

    result: TurnResult
    turn: Turn
    first_token_ms: float | None = None
    escalation: str | None = None  # the box's `messages.escalation`: None, `answered`, `fallback:<cause>`
    central_first_byte_ms: float | None = None


def chat_streaming(
    client: httpx.Client, query: str, user: str, conversation_id: str
) -> tuple[int, dict[str, Any] | str, float]:
    """`chat`, streamed: the payload also carries `first_token_ms` (the first non-empty `message` chunk)."""
    body = {
        "query": query,
        "user": user,
        "inputs": {},
        "response_mode": "streaming",
        "conversation_id": conversation_id,
    }
    started = time.perf_counter()
    first_token_ms: float | None = None
    parts: list[str] = []
    payload: dict[str, Any] = {}
    with client.stream("POST", "/v1/chat-messages", json=body) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, response.text, (time.perf_counter() - started) * 1000.0
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            payload.setdefault("message_id", event.get("message_id"))
            payload.setdefault("conversation_id", event.get("conversation_id"))
            if event.get("event") == "message" and event.get("answer"):
                if first_token_ms is None:
                    first_token_ms = (time.perf_counter() - started) * 1000.0
                parts.append(str(event["answer"]))
            elif event.get("event") == "error":
                return 500, f"error event: {event.get('code')}: {event.get('message')}", 0.0
    payload.update(answer="".join(parts), first_token_ms=first_token_ms)
    return 200, payload, (time.perf_counter() - started) * 1000.0


def escalation_settings() -> tuple[str, ...]:
    """The runtime's escalation settings (issue #13), by field name; an error when they do not exist yet."""
    from edge.settings import Settings

    wanted = ("escalate", "escalate_on", "central_chat_key", "escalate_first_byte_s", "escalate_reachable_s")
    fields = tuple(name for name in wanted if name in Settings.model_fields)
    if fields[:3] != wanted[:3]:
        raise RuntimeError(f"edge.settings has no escalation settings ({', '.join(wanted[:3])}): --central needs them")
    return fields


@contextlib.contextmanager
def fake_central(
    facts: Iterable[Fact], first_byte_s: float, token_delay_s: float
) -> Iterator[tuple[Any, str, frozenset[str]]]:
    """The fake central Dify on a loopback port, its chat app over the facts (one document each, named by the
    fact's id); yields the live server, the chat app's key and central's "I do not know" answers."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the fake lives in tests/
    from tests.fake_dify.demo import seed_chat
    from tests.fake_dify.live import LiveFakeDify
    from tests.fake_dify.routes_chat import NO_ANSWER, NO_ANSWER_ZH
    from tests.fake_dify.state import FakeDifyState

    state = FakeDifyState(seed=13)
    chat_app = seed_chat(state, [{"title": fact.id, "content": fact.content} for fact in facts])
    with LiveFakeDify(state, token_delay=token_delay_s, chat_min_score=CENTRAL_MIN_SCORE) as server:
        if first_byte_s > 0:
            server.faults.first_byte(first_byte_s, times=None)
        yield server, chat_app.key, frozenset({NO_ANSWER, NO_ANSWER_ZH})


def sync_probe(data_dir: Path, env: Mapping[str, str]) -> str:
    """`edge sync once` on the box's data directory: the probe records central online, as the agent would."""
    done = subprocess.run(
        [sys.executable, "-m", "edge", "sync", "once"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"`edge sync once` failed ({done.returncode}): {done.stderr[-1500:]}")
    return " ".join(done.stdout.split())


def run_central_pass(
    name: str,
    args: argparse.Namespace,
    cases: Sequence[Case],
    label_map: Mapping[str, str],
    facts: Mapping[str, Fact],
    data_dir: Path,
    extra_env: Mapping[str, str],
) -> list[CentralTurn]:
    """One server run of the cases through the streaming API, judged with central counted."""
    bundle = args.bundle.resolve()
    print(f"\n[{name}] starting the box")
    payloads: list[dict[str, Any] | str | None] = []
    with running_server(bundle, data_dir, extra_env, args.start_timeout) as server:
        print(f"[{name}] server ready in {server.seconds_to_ready:.1f} s; {wait_seeded(server, args.start_timeout)}")
        if extra_env.get("KIOSK_ESCALATE") == "true":
            env = server_env(bundle, data_dir, server.port, server.key, extra_env)
            print(f"[{name}] sync probe: {sync_probe(data_dir, env)}")
        results = run_cases(server, cases, label_map, args.repeat, chat_streaming, payloads)
    judge(results, server.database)
    turns = [turn for _ in range(args.repeat) for case in cases for turn in case.turns]
    rows = [CentralTurn(r, t) for r, t in zip(results, turns, strict=True)]
    for row, payload in zip(rows, payloads, strict=True):
        if isinstance(payload, dict):
            row.first_token_ms = payload.get("first_token_ms")
    with contextlib.closing(read_only(server.database)) as db:
        columns = {c[1] for c in db.execute("PRAGMA table_info(messages)")}
        for row in rows:
            r = row.result
            if r.message_id is not None and {"escalation", "central_first_byte_ms"} <= columns:
                found = db.execute(
                    "SELECT escalation, central_first_byte_ms FROM messages WHERE id = ?", (r.message_id,)
                ).fetchone()
                if found is not None:
                    row.escalation, row.central_first_byte_ms = found
            if r.message_id is not None and r.route is not None:  # judged: the box recorded the turn
                r.outcome = score_with_central(row.turn, r.accepted, r.route, r.label, r.answer, facts)
    return rows


def central_summary(
    baseline: Sequence[CentralTurn], escalated: Sequence[CentralTurn], no_answers: Collection[str] = ()
) -> dict[str, Any]:
    """One language's figures: the same turns without and with escalation (`no_answers`: central's "I do not
    know" texts, counted apart among the relayed answers)."""

    def answerable(row: CentralTurn) -> bool:
        return row.result.answerable or row.turn.central is not None

    def correct(rows: Sequence[CentralTurn]) -> int:
        return sum(1 for row in rows if answerable(row) and row.result.outcome is Outcome.CORRECT)

    total = sum(1 for row in baseline if answerable(row))
    relayed = [row for row in escalated if row.result.route == CENTRAL_ROUTE]
    fallbacks = Counter(
        row.escalation.partition(":")[2] for row in escalated if (row.escalation or "").startswith("fallback:")
    )
    first_tokens = [row.first_token_ms for row in relayed if row.first_token_ms is not None]
    local_first = [
        row.first_token_ms for row in escalated if row.result.route != CENTRAL_ROUTE and row.first_token_ms is not None
    ]
    central_bytes = [row.central_first_byte_ms for row in relayed if row.central_first_byte_ms is not None]
    return {
        "turns": len(baseline),
        "answerable_turns": total,
        "central_only_turns": sum(1 for row in baseline if row.turn.central is not None),
        "correct_without_escalation": correct(baseline),
        "correct_without_escalation_pct": pct(correct(baseline), total),
        "correct_with_escalation": correct(escalated),
        "correct_with_escalation_pct": pct(correct(escalated), total),
        "escalated_answers": len(relayed),
        "escalated_correct": sum(1 for row in relayed if row.result.outcome is Outcome.CORRECT),
        "escalated_no_answer": sum(1 for row in relayed if _flat(row.result.answer) in no_answers),
        "escalation_fallbacks": sum(fallbacks.values()),
        "fallback_causes": dict(sorted(fallbacks.items())),
        "wrong_without_escalation": sum(1 for row in baseline if row.result.outcome is Outcome.WRONG),
        "wrong_with_escalation": sum(1 for row in escalated if row.result.outcome is Outcome.WRONG),
        "errors_with_escalation": sum(1 for row in escalated if row.result.outcome is Outcome.ERROR),
        "escalated_first_token_p50_ms": percentile(first_tokens, 50),
        "escalated_first_token_p99_ms": percentile(first_tokens, 99),
        "local_first_token_p50_ms": percentile(local_first, 50),
        "local_first_token_p99_ms": percentile(local_first, 99),
        "central_first_byte_p50_ms": percentile(central_bytes, 50),
        "central_first_byte_p99_ms": percentile(central_bytes, 99),
    }


CENTRAL_ROWS = (
    ("turns", "turns"),
    ("answerable turns (box or central)", "answerable_turns"),
    ("  of them only central knows", "central_only_turns"),
    ("answered correctly without escalation, n", "correct_without_escalation"),
    ("answered correctly without escalation, %", "correct_without_escalation_pct"),
    ("answered correctly with escalation, n", "correct_with_escalation"),
    ("answered correctly with escalation, %", "correct_with_escalation_pct"),
    ("escalated answers relayed, n", "escalated_answers"),
    ("  of them correct", "escalated_correct"),
    ("  of them central's \"I don't know\"", "escalated_no_answer"),
    ("escalations that fell back, n", "escalation_fallbacks"),
    ("answered wrongly without / with escalation", "wrong_pair"),
    ("errors with escalation", "errors_with_escalation"),
    ("first token, escalated answers p50 / p99, ms", "escalated_first_token"),
    ("first token, local answers p50 / p99, ms", "local_first_token"),
    ("central's first byte at the box p50 / p99, ms", "central_first_byte"),
)


def central_report(
    baseline: Sequence[CentralTurn], escalated: Sequence[CentralTurn], no_answers: Collection[str] = ()
) -> dict[str, Any]:
    languages = [lang for lang in LANGUAGES if any(row.result.language == lang for row in baseline)]
    figures = {
        lang: central_summary(
            [row for row in baseline if row.result.language == lang],
            [row for row in escalated if row.result.language == lang],
            no_answers,
        )
        for lang in languages
    }

    def cell(figure: dict[str, Any], key: str) -> object:
        if key == "wrong_pair":
            return f"{figure['wrong_without_escalation']} / {figure['wrong_with_escalation']}"
        if key in ("escalated_first_token", "local_first_token", "central_first_byte"):
            return f"{fmt(figure[key + '_p50_ms'])} / {fmt(figure[key + '_p99_ms'])}"
        return figure[key]

    print_table(
        "With central online: the same turns without and with escalation (streaming client)",
        ("figure", *languages),
        [(name, *(cell(figures[lang], key) for lang in languages)) for name, key in CENTRAL_ROWS],
    )
    for lang in languages:
        if figures[lang]["fallback_causes"]:
            causes = ", ".join(f"{cause} {n}" for cause, n in figures[lang]["fallback_causes"].items())
            print(f"  {lang} fall-backs by cause: {causes}")
    misses = [
        row.result
        for row in escalated
        if (row.turn.central is not None or row.result.route == CENTRAL_ROUTE)
        and row.result.outcome is not Outcome.CORRECT
    ]
    print(f"\nCentral-related turns not answered correctly with escalation: {len(misses)}")
    for r in misses:
        print(f"  [{r.tag}] {one_line(r.query, 70)}\n      got {r.route}: «{one_line(r.answer, 70)}»")
    return {"summary": figures, "central_misses": [failure_record(r) for r in misses]}


def run_central(args: argparse.Namespace, cases: Sequence[Case], label_map: Mapping[str, str]) -> None:
    facts = load_facts(args.central_knowledge)
    check_central_expectations(cases, facts)
    fields = escalation_settings()
    extra_env = parse_env(args.env)
    started = time.perf_counter()
    print(f"answer quality with central online: {len(cases)} cases x {args.repeat}, {len(facts)} central facts")
    with contextlib.ExitStack() as stack:
        if args.data_dir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-answers-central-")))
        else:
            root = args.data_dir.resolve()
            if root.exists() and any(root.iterdir()):
                raise SystemExit(f"--data-dir {root} is not empty: the bench needs a fresh data directory")
        central, key, no_answers = stack.enter_context(
            fake_central(facts.values(), args.central_first_byte, args.central_token_delay)
        )
        print(f"fake central on {central.api_url} (first byte {args.central_first_byte} s)")
        baseline = run_central_pass("baseline", args, cases, label_map, facts, root / "baseline", extra_env)
        escalate_env = {
            **extra_env,
            "KIOSK_CENTRAL_URL": central.api_url,
            "KIOSK_ESCALATE": "true",
            "KIOSK_ESCALATE_ON": args.escalate_on,
            "KIOSK_CENTRAL_CHAT_KEY": key,
        }
        if "escalate_reachable_s" in fields:
            escalate_env.setdefault("KIOSK_ESCALATE_REACHABLE_S", str(REACHABLE_FOR_THE_RUN_S))
        escalated = run_central_pass("escalation", args, cases, label_map, facts, root / "escalation", escalate_env)
        chat_requests = central.journal.count("POST", "/v1/chat-messages")
        figures = central_report(baseline, escalated, no_answers)
        seconds = time.perf_counter() - started
        print(f"\ncentral received {chat_requests} chat requests; total {seconds:.0f} s")
        if args.json_out:
            meta = {
                "bundle": str(args.bundle.resolve()),
                "cases_file": str(args.cases),
                "central_knowledge": str(args.central_knowledge),
                "language": args.language,
                "repeat": args.repeat,
                "escalate_on": args.escalate_on,
                "central_first_byte_s": args.central_first_byte,
                "central_token_delay_s": args.central_token_delay,
                "central_chat_requests": chat_requests,
                "seconds": seconds,
            }
            turns_out = [
                {
                    "run": run_name,
                    **asdict(row.result),
                    "outcome": row.result.outcome.value,
                    "central": row.turn.central,
                    "first_token_ms": row.first_token_ms,
                    "escalation": row.escalation,
                    "central_first_byte_ms": row.central_first_byte_ms,
                }
                for run_name, rows in (("baseline", baseline), ("escalation", escalated))
                for row in rows
            ]
            document = {"meta": meta, **figures, "turns": turns_out}
            args.json_out.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
            print(f"figures written to {args.json_out}")


# --- main -------------------------------------------------------------------------------------------


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through `running_server`, which stops the server


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("KIOSK_"):
            raise SystemExit(f"--env wants KIOSK_NAME=value, got {pair!r}")
        env[name] = value
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "default", help="bundle to serve")
    parser.add_argument("--cases", type=Path, default=CASES, help="question file (JSON lines)")
    parser.add_argument("--labels", type=Path, default=LABELS, help="`expect,label` mapping of faq: expectations")
    parser.add_argument("--language", choices=LANGUAGES, help="only the cases in this language")
    parser.add_argument("--repeat", type=int, default=1, help="send every case N times (later rounds hit the cache)")
    parser.add_argument("--json-out", type=Path, help="also write the figures and every turn here")
    parser.add_argument("--data-dir", type=Path, help="keep the server's data here (default: a temporary dir)")
    parser.add_argument("--env", action="append", default=[], help="extra server setting KIOSK_NAME=value")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for /readyz 200")
    central = parser.add_argument_group("with central online (issue #13)")
    central.add_argument(
        "--central", action="store_true", help="run twice against a fake central: escalation off, then on"
    )
    central.add_argument("--central-knowledge", type=Path, default=CENTRAL_KNOWLEDGE, help="central's facts (JSONL)")
    central.add_argument("--escalate-on", choices=ESCALATE_ON, default="handoff", help="KIOSK_ESCALATE_ON")
    central.add_argument("--central-first-byte", type=float, default=0.5, help="central's think time, seconds")
    central.add_argument("--central-token-delay", type=float, default=0.02, help="seconds between central's chunks")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: the server process was stopped", file=sys.stderr)
        sys.exit(130)
    except RuntimeError as exc:
        print(f"\nbench/answers.py: {exc}", file=sys.stderr)
        sys.exit(1)


def run(args: argparse.Namespace) -> None:
    cases = [c for c in load_cases(args.cases) if args.language in (None, c.language)]
    label_map = load_label_map(args.labels)
    for case in cases:  # an unmapped faq: fails here, before a server is started
        for turn in case.turns:
            accepted_labels(turn, label_map)
    if args.central:
        run_central(args, cases, label_map)
        return
    bundle = args.bundle.resolve()
    extra_env = parse_env(args.env)
    started = time.perf_counter()
    turns = sum(len(c.turns) for c in cases)
    print(f"answer quality: {len(cases)} cases, {turns} turns x {args.repeat}, bundle {bundle}")
    with contextlib.ExitStack() as stack:
        if args.data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-answers-"))) / "data"
        else:
            data_dir = args.data_dir.resolve()
            if data_dir.exists() and any(data_dir.iterdir()):
                raise SystemExit(f"--data-dir {data_dir} is not empty: the bench needs a fresh data directory")
        with running_server(bundle, data_dir, extra_env, args.start_timeout) as server:
            print(f"server ready in {server.seconds_to_ready:.1f} s on {server.url}")
            seeding = wait_seeded(server, timeout_s=args.start_timeout)
            print(seeding)
            results = run_cases(server, cases, label_map, args.repeat)
        judge(results, server.database)  # after a clean stop: the writer has flushed every message
        figures = report(results)
        seconds = time.perf_counter() - started
        print(f"\ntotal {seconds:.0f} s")
        if args.json_out:
            meta = {
                "bundle": str(bundle),
                "cases_file": str(args.cases),
                "language": args.language,
                "repeat": args.repeat,
                "cases": len(cases),
                "turns_per_round": turns,
                "seconds": seconds,
                "server_seconds_to_ready": server.seconds_to_ready,
                "seeding": seeding,
            }
            turns_out = [{**asdict(r), "outcome": r.outcome.value} for r in results]
            document = {"meta": meta, **figures, "turns": turns_out}
            args.json_out.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
            print(f"figures written to {args.json_out}")


if __name__ == "__main__":
    main()
