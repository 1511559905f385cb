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
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
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
                Turn(str(t["query"]), str(t["expect"]), tuple(str(a) for a in t.get("accept", ())))
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


def run_cases(server: Server, cases: Sequence[Case], label_map: Mapping[str, str], repeat: int) -> list[TurnResult]:
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
                    try:
                        status, payload, result.latency_ms = chat(client, turn.query, f"bench-{case.id}", conversation)
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
