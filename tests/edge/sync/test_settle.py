"""Everything at once, then let it settle: every conversation on central exactly once, local knowledge
equal to central's, nothing left in the outbox but parked rows with a reason.

One run with real processes (the runtime answering kiosk traffic, `edge sync run` killed with -9
between send and acknowledge) and a hypothesis state machine that interleaves the same events in
every order it can find.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edge.settings import Settings
from edge.store.conversations import ConversationStore
from edge.store.db import open_database
from edge.store.outbox import Outbox
from edge.sync.agent import SyncAgent
from edge.sync.client import DifyClient
from tests.edge.sync.test_agent_e2e import central_segments, local_segments
from tests.edge.sync.test_pull import CountingEmbedder
from tests.fake_dify.demo import seed_demo
from tests.fake_dify.live import LiveFakeDify
from tests.fake_dify.state import FakeDifyState

ROOT = Path(__file__).resolve().parents[3]
RUN = "/v1/workflows/run"


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def assert_settled(fake: LiveFakeDify, workflow_app_id: str, db, conversation_ids: set[str]) -> None:
    """Each record once, each turn in exactly one record, every conversation there (or parked, with a
    reason), an empty outbox, and local knowledge equal to central's."""
    runs = [run for run in fake.state.runs_of(workflow_app_id) if run.end_user_id is not None]  # not accounts
    sessions = [run.inputs["edge_session_id"] for run in runs]
    assert len(sessions) == len(set(sessions)), "a record reached central twice"
    turns = [turn["message_id"] for run in runs for turn in json.loads(run.inputs["transcript"])["turns"]]
    assert len(turns) == len(set(turns)), "a turn reached central twice"
    parked = Outbox(db).parked()
    assert all(row["last_error"] for row in parked)
    stored = {row[0] for row in db.execute("SELECT id FROM messages").fetchall()}
    assert set(turns) | {row["ref"] for row in parked} == stored, "a turn never reached central"
    assert {session.split(":")[0] for session in sessions} | {
        row["payload"]["conversation_id"] for row in parked
    } == conversation_ids
    assert Outbox(db).depth() == 0
    assert local_segments(db) == central_segments(fake)


@pytest.mark.slow
def test_kiosk_traffic_faults_and_kill_9_settle(tmp_path: Path, api_bundle: Path) -> None:
    from tests.edge.api.conftest import AUTH, KEY, STORE_FAQ

    state = FakeDifyState(seed=3)
    ids = seed_demo(state)
    data_dir = tmp_path / "data"
    with LiveFakeDify(state) as fake:
        env = {
            **os.environ,
            "KIOSK_DATA_DIR": str(data_dir),
            "KIOSK_BUNDLE_DIR": str(api_bundle),
            "KIOSK_CENTRAL_URL": fake.api_url,
            "KIOSK_CENTRAL_APP_KEY": ids.chat_key,
            "KIOSK_CENTRAL_DATASET_KEY": ids.dataset_key,
            "KIOSK_CENTRAL_INGEST_KEY": ids.workflow_key,
            "KIOSK_SYNC_IDLE_S": "0",
            "KIOSK_SYNC_INTERVAL_S": "0.2",
            "KIOSK_SYNC_BACKOFF_MAX_S": "1",
            "KIOSK_SYNC_TIMEOUT_S": "2",
        }

        def start_agent() -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, "-m", "edge", "sync", "run"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )

        # Central misbehaves from the start; the network is down for the first requests.
        fake.faults.error("/v1/", 503, times=3)
        fake.faults.commit_then(RUN, 502, times=2)
        fake.faults.rate_limit(RUN, times=2)
        fake.faults.error(RUN, 500, times=1)
        fake.faults.stall(RUN, 30, after=True, times=1)  # committed, then silence: the agent gets killed here
        document = state.knowledge.list_documents(ids.dataset_id)[0]
        fake.faults.between_pages(
            f"/v1/datasets/{ids.dataset_id}/documents*",
            1,
            lambda s: s.knowledge.update_segment(s.knowledge.list_segments(document.id)[0].id, content="moved on"),
            times=1,
        )

        agent = start_agent()
        conversation_ids: set[str] = set()
        port = free_port()
        runtime = subprocess.Popen(  # the runtime as a box runs it, on the same data directory
            [sys.executable, "-m", "edge", "serve"],
            env={
                **env,
                "KIOSK_APP_KEYS": json.dumps([KEY]),
                "KIOSK_PORT": str(port),
                "KIOSK_CURATED_ANSWERS_CSV": str(ROOT / "models/data/bitext_retail/intent_responses.csv"),
                "KIOSK_KNOWLEDGE_SEED_CSVS": json.dumps([str(STORE_FAQ)]),
                "KIOSK_LLM_MAX_TOKENS": "16",
                "KIOSK_RATE_LIMIT_BURST": "1000",
            },
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: _ready(port), 120, "the runtime to be ready")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=30) as kiosk:
                for i in range(12):
                    body = kiosk.post(
                        "/v1/chat-messages",
                        json={"query": ["I want to cancel my order", "where is my refund"][i % 2], "user": f"k{i}"},
                    ).json()
                    conversation_ids.add(body["conversation_id"])
                    if i == 5:  # the agent is mid-send (stalled after central committed): kill it
                        wait_for(lambda: fake.journal.count("POST", RUN) >= 6, 60, "the stalled run")
                        agent.send_signal(signal.SIGKILL)
                        agent.wait(10)
                        agent = start_agent()
                state.revoke_key(ids.chat_key)  # annotations/parameters stream: revoked mid-run
                new_chat_key = state.add_app_key(ids.chat_app_id)
        finally:
            runtime.send_signal(signal.SIGTERM)
            runtime.wait(30)
        db = open_database(data_dir / "kiosk.sqlite3")
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        env["KIOSK_CENTRAL_APP_KEY"] = new_chat_key  # the operator fixes the key and restarts
        agent = start_agent()
        try:
            wait_for(lambda: Outbox(db).depth() == 0 and local_segments(db) == central_segments(fake), 120, "settling")
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(20)
        assert_settled(fake, ids.workflow_app_id, db, conversation_ids)
        db.close()


class SyncMachine(RuleBasedStateMachine):
    """Kiosk turns and feedback, central edits, faults and sync passes in any order -- also two agents'
    passes at once (the sidecar and an operator's `edge sync once`), a central slow to run and to list
    runs, runs started by accounts, and an older Dify that ignores the logs' end-user filter. A crash
    between send and ack is a committed run whose response is lost (the edge persisted nothing after
    sending either way)."""

    def __init__(self) -> None:
        super().__init__()
        self.state = FakeDifyState(seed=11)
        self.ids = seed_demo(self.state)
        self.fake = LiveFakeDify(self.state).start()
        self.tmp = Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"sync-machine-{os.getpid()}-{id(self)}"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(
            data_dir=self.tmp,
            central_url=self.fake.api_url,
            central_app_key=self.ids.chat_key,
            central_dataset_key=self.ids.dataset_key,
            central_ingest_key=self.ids.workflow_key,
            sync_idle_s=0,
            sync_timeout_s=1,
            sync_probe_timeout_s=1,
            sync_max_attempts=50,
        )
        self.db = open_database(self.settings.database_path)
        embedder = CountingEmbedder()
        self.agent = SyncAgent(
            self.settings,
            self.db,
            DifyClient(self.fake.api_url, timeout_s=1),
            embedder_factory=lambda: (embedder, "e"),
        )
        self.store = ConversationStore(self.db)
        self.conversations: list[str] = []
        # A second pusher on the same file, with its own connection (the operator's `edge sync once`).
        operator = Settings(
            data_dir=self.tmp,
            central_url=self.fake.api_url,
            central_ingest_key=self.ids.workflow_key,
            sync_idle_s=0,
            sync_timeout_s=1,
            sync_probe_timeout_s=1,
            sync_max_attempts=50,
        )
        self.operator_db = open_database(operator.database_path)
        self.operator = SyncAgent(operator, self.operator_db, DifyClient(self.fake.api_url, timeout_s=1))

    @rule(n=st.integers(1, 3), follow_up=st.booleans())
    def kiosk_turns(self, n: int, follow_up: bool) -> None:
        for _ in range(n):
            if follow_up and self.conversations:
                conversation = self.conversations[-1]
            else:
                conversation = self.store.create("kiosk", {})["id"]
                self.conversations.append(conversation)
            self.store.record_turn(
                conversation,
                "kiosk",
                "where is my order",
                "on its way",
                route="curated",
                intent="x.y",
                confidence=0.9,
                latency_ms=1.0,
                prompt_tokens=0,
                completion_tokens=0,
                sources=[],
            )

    @rule(rating=st.sampled_from(["like", "dislike", None]))
    def feedback(self, rating: str | None) -> None:
        row = self.db.execute(
            "SELECT m.id, f.rating FROM messages m LEFT JOIN feedback f ON f.message_id = m.id"
            " ORDER BY m.seq DESC LIMIT 1"
        ).fetchone()
        if row is not None and (rating is not None or row[1] is not None):
            self.store.set_feedback(row[0], "kiosk", rating, None)

    @rule()
    def two_agents_at_once(self) -> None:
        threads = [threading.Thread(target=agent.run_once) for agent in (self.agent, self.operator)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.db.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")

    @rule(seconds=st.sampled_from([0.0, 0.3]))
    def central_lag(self, seconds: float) -> None:
        """Runs take this long, and are missing from the logs this long after they start."""
        self.fake.app.config.run_seconds = seconds
        self.fake.app.config.run_list_delay = seconds

    @rule(older=st.booleans())
    def central_generation(self, older: bool) -> None:
        self.fake.app.config.logs_user_filter = not older

    @rule()
    def account_run(self) -> None:
        """Someone re-runs a conversation's record from the console: an account's run, not the edge's."""
        conversation = self.conversations[-1] if self.conversations else "none"
        app = self.state.app(self.ids.workflow_app_id)
        self.state.record_workflow_run(app, None, {"edge_session_id": conversation, "transcript": "{}"})

    @rule(kind=st.sampled_from(["edit", "delete", "add", "annotate"]))
    def central_edit(self, kind: str) -> None:
        knowledge = self.state.knowledge
        document = knowledge.list_documents(self.ids.dataset_id)[0]
        segments = knowledge.list_segments(document.id)
        if kind == "edit" and segments:
            knowledge.update_segment(segments[0].id, content=segments[0].content + " (updated)")
        elif kind == "delete" and len(segments) > 1:
            knowledge.delete_segment(segments[-1].id)
        elif kind == "add":
            knowledge.add_segments(document.id, [{"content": f"new fact {len(segments)}"}])
        else:
            self.state.add_annotation(self.ids.chat_app_id, f"question {len(segments)}?", "answer.")

    @rule(
        fault=st.sampled_from(
            ["commit_then_502", "drop_after_commit", "rate_limit", "server_error", "down", "drift", "sse_free_error"]
        )
    )
    def inject(self, fault: str) -> None:
        faults = self.fake.faults
        if fault == "commit_then_502":
            faults.commit_then(RUN, 502, times=1)
        elif fault == "drop_after_commit":
            faults.drop(RUN, after=True, times=1)
        elif fault == "rate_limit":
            faults.rate_limit("/v1/*", times=1)
        elif fault == "server_error":
            faults.error("/v1/workflows/logs", 500, times=1)
        elif fault == "down":
            faults.error("/v1/", 503, times=2)
        elif fault == "drift":
            document = self.state.knowledge.list_documents(self.ids.dataset_id)[0]
            faults.between_pages(
                f"/v1/datasets/{self.ids.dataset_id}/documents*",
                1,
                lambda s: s.knowledge.add_segments(document.id, [{"content": "drifted in"}]),
                times=1,
            )
        else:
            faults.error("/v1/apps/annotations", 500, times=1)

    @rule()
    def sync_pass(self) -> None:
        self.agent.run_once()
        self.db.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")  # no real waiting

    @invariant()
    def never_twice(self) -> None:
        runs = [r for r in self.state.runs_of(self.ids.workflow_app_id) if r.end_user_id is not None]
        sessions = [r.inputs["edge_session_id"] for r in runs]
        assert len(sessions) == len(set(sessions))

    def teardown(self) -> None:
        """Faults cleared, a few passes: then it must have settled."""
        try:
            self.fake.faults.clear()
            for _ in range(5):
                self.agent.run_once()
                self.db.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")
            assert_settled(self.fake, self.ids.workflow_app_id, self.db, set(self.conversations))
        finally:
            self.agent.client.close()
            self.operator.client.close()
            self.db.close()
            self.operator_db.close()
            self.fake.stop()


TestSyncMachine = SyncMachine.TestCase
TestSyncMachine.settings = settings(
    max_examples=15, stateful_step_count=12, deadline=None, suppress_health_check=list(HealthCheck)
)
