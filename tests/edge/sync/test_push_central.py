"""Each record on central exactly once, against the fake central's awkward sides: two agents on one
database, runs that are still running or not listed yet, log entries of accounts and of other users,
Difys too old for the end-user filter, feedback, and parked rows an operator re-queues.

Real SQLite files, the fake on real uvicorn, the agents as they run (`SyncAgent`, `edge sync once`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge.cli import main
from edge.settings import Settings
from edge.store.conversations import ConversationStore
from edge.store.db import open_database
from edge.store.outbox import Outbox
from edge.sync.agent import SyncAgent
from edge.sync.client import DifyClient
from tests.fake_dify.demo import Central, seed_demo
from tests.fake_dify.live import LiveFakeDify
from tests.fake_dify.state import FakeDifyState

RUN = "/v1/workflows/run"


@pytest.fixture
def central() -> Iterator[tuple[FakeDifyState, Central]]:
    state = FakeDifyState(seed=21)
    return state, seed_demo(state)


def settings_for(fake: LiveFakeDify, ids: Central, data_dir: Path, **overrides: Any) -> Settings:
    """An agent that only pushes (no app or dataset key: the pull streams are off)."""
    values: dict[str, Any] = dict(
        data_dir=data_dir,
        central_url=fake.api_url,
        central_ingest_key=ids.workflow_key,
        store_id="s9",
        kiosk_id="k1",
        sync_idle_s=0,
        sync_timeout_s=5,
        sync_probe_timeout_s=2,
    )
    return Settings(**(values | overrides))


def agent_for(settings: Settings) -> SyncAgent:
    """An agent with its own connection to the database file, as a second process would have."""
    db = open_database(settings.database_path)
    return SyncAgent(settings, db, DifyClient(settings.central_url, timeout_s=settings.sync_timeout_s))


def converse(db, *queries: str) -> tuple[str, list[str]]:
    store = ConversationStore(db, clock=lambda: 1_700_000_000.0)
    conversation = store.create("kiosk", {})["id"]
    messages = []
    for query in queries:
        row = store.record_turn(
            conversation,
            "kiosk",
            query,
            "ok",
            route="curated",
            intent="order.cancel_order",
            confidence=0.9,
            latency_ms=1.0,
            prompt_tokens=0,
            completion_tokens=0,
            sources=[],
        )
        messages.append(row["id"])
    return conversation, messages


def sessions(state: FakeDifyState, ids: Central) -> list[str]:
    """The `edge_session_id` of every run central holds, one per record that reached it."""
    return sorted(run.inputs["edge_session_id"] for run in state.runs_of(ids.workflow_app_id))


def transcripts(state: FakeDifyState, ids: Central) -> list[dict[str, Any]]:
    runs = sorted(state.runs_of(ids.workflow_app_id), key=lambda run: run.seq)
    return [json.loads(run.inputs["transcript"]) for run in runs]


def due_now(db) -> None:
    """Time passes: every pending row is due (the backoff is not what these tests are about)."""
    db.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# --- 1. two pushers, one database ----------------------------------------------------------------


def test_sidecar_and_operator_pass_send_a_record_once_and_the_second_says_who_works(
    central, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, ids = central
    with LiveFakeDify(state, run_seconds=1.5, run_list_delay=1.0) as fake:  # slow to run, slow to list
        settings = settings_for(fake, ids, tmp_path / "data")
        sidecar = agent_for(settings)
        conversation, _ = converse(sidecar.db, "cancel my order", "thanks")
        passes: list[Any] = []
        thread = threading.Thread(target=lambda: passes.append(sidecar.run_once()))
        thread.start()
        wait_for(lambda: fake.journal.count("POST", RUN) == 1, 10, "the sidecar's send")
        for name, value in {
            "KIOSK_DATA_DIR": str(settings.data_dir),
            "KIOSK_CENTRAL_URL": fake.api_url,
            "KIOSK_CENTRAL_INGEST_KEY": ids.workflow_key,
            "KIOSK_STORE_ID": "s9",
            "KIOSK_KIOSK_ID": "k1",
            "KIOSK_SYNC_IDLE_S": "0",
        }.items():
            monkeypatch.setenv(name, value)
        operator = CliRunner().invoke(main, ["sync", "once"])  # `edge sync once` while the sidecar sends
        thread.join(30)
        assert operator.exit_code == 0, operator.output
        assert sessions(state, ids) == [conversation], "central got two runs for one record"
        assert json.loads(operator.stdout)["streams"]["push"] == "busy"
        assert "another sync agent (pid" in operator.stderr and "left them to it" in operator.stderr
        assert passes[0].outcomes["push"] == "ok" and Outbox(sidecar.db).depth() == 0


def test_two_agents_started_together_push_every_conversation_once(central, tmp_path: Path) -> None:
    state, ids = central
    with LiveFakeDify(state, run_list_delay=1.0) as fake:
        settings = settings_for(fake, ids, tmp_path / "data")
        agents = [agent_for(settings), agent_for(settings)]
        conversations = sorted(converse(agents[0].db, f"question {n}")[0] for n in range(6))
        start = threading.Barrier(2)

        def work(agent: SyncAgent) -> None:
            start.wait()
            agent.run_once()

        threads = [threading.Thread(target=work, args=(agent,)) for agent in agents]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sessions(state, ids) == conversations
        assert Outbox(agents[0].db).depth() == 0


# --- 2. a run that may exist is waited for, not re-sent -------------------------------------------


def test_a_lost_answer_while_the_run_is_still_running_is_waited_for(central, tmp_path: Path) -> None:
    state, ids = central
    with LiveFakeDify(state, run_seconds=1.0) as fake:
        agent = agent_for(settings_for(fake, ids, tmp_path / "data", sync_timeout_s=0.3))
        conversation, _ = converse(agent.db, "where is my refund")
        agent.run_once()  # the blocking run outlasts the timeout: the answer is lost, the run is running
        assert [run.status for run in state.runs_of(ids.workflow_app_id)] == ["running"]
        due_now(agent.db)
        agent.run_once()  # finds it running: waits for it instead of sending a second one
        assert sessions(state, ids) == [conversation]
        assert Outbox(agent.db).depth() == 0


def test_a_lost_answer_for_a_run_not_listed_yet_is_waited_for(central, tmp_path: Path) -> None:
    state, ids = central
    with LiveFakeDify(state, run_list_delay=1.0) as fake:
        agent = agent_for(settings_for(fake, ids, tmp_path / "data"))
        conversation, _ = converse(agent.db, "where is my refund")
        fake.faults.commit_then(RUN, 502, times=1)
        agent.run_once()  # central ran it, the proxy lost the answer, and the logs do not show it yet
        due_now(agent.db)
        agent.run_once()
        assert sessions(state, ids) == [conversation]
        assert Outbox(agent.db).depth() == 0


def test_a_send_that_never_reached_central_is_sent_again_once_it_had_time_to_be_listed(central, tmp_path: Path) -> None:
    state, ids = central
    with LiveFakeDify(state) as fake:
        agent = agent_for(settings_for(fake, ids, tmp_path / "data", sync_settle_s=0.5))
        conversation, _ = converse(agent.db, "hello")
        fake.faults.error(RUN, 502, times=1)  # nginx's page: nothing ran, but the agent cannot know
        agent.run_once()
        due_now(agent.db)
        assert agent.pusher is not None
        report = agent.pusher.run()  # absent, but maybe not listed yet: waits out KIOSK_SYNC_SETTLE_S, then sends
        assert (report.sent, report.found) == (1, 0)
        assert sessions(state, ids) == [conversation] and Outbox(agent.db).depth() == 0


# --- 3. only an exact end-user match counts; Difys that ignore the filter -------------------------


@pytest.mark.parametrize("generation", ["current", "older"])
def test_a_run_started_by_an_account_is_not_the_record(central, tmp_path: Path, generation: str) -> None:
    state, ids = central
    with LiveFakeDify(state, logs_user_filter=generation == "current") as fake:
        agent = agent_for(settings_for(fake, ids, tmp_path / "data"))
        conversation, _ = converse(agent.db, "hello")
        app = state.app(ids.workflow_app_id)
        inputs = {"store_id": "s9", "kiosk_id": "k1", "edge_session_id": conversation, "transcript": "{}"}
        state.record_workflow_run(app, None, inputs)  # an operator re-ran it from the console, as an account
        agent.run_once()
        ours = [run for run in state.runs_of(ids.workflow_app_id) if run.end_user_id is not None]
        assert [run.inputs["edge_session_id"] for run in ours] == [conversation]
        assert Outbox(agent.db).depth() == 0


@pytest.mark.parametrize("generation", ["current", "older"])
def test_a_landed_run_behind_other_users_runs_is_found(central, tmp_path: Path, generation: str) -> None:
    state, ids = central
    with LiveFakeDify(state, logs_user_filter=generation == "current") as fake:
        agent = agent_for(settings_for(fake, ids, tmp_path / "data"))
        conversation, _ = converse(agent.db, "hello")
        fake.faults.commit_then(RUN, 502, times=1)
        agent.run_once()  # landed, answer lost
        app = state.app(ids.workflow_app_id)
        for n in range(130):  # other kiosks push meanwhile: the run is no longer on the first page
            other = state.end_user(app.id, f"edge:s9:k{n + 2}:c{n}")
            state.record_workflow_run(app, other, {"store_id": "s9", "edge_session_id": f"c{n}", "transcript": "{}"})
        due_now(agent.db)
        agent.run_once()
        assert sessions(state, ids).count(conversation) == 1
        assert Outbox(agent.db).depth() == 0


# --- 4. feedback reaches central once -------------------------------------------------------------


def test_feedback_reaches_central_once_before_and_after_the_push(central, tmp_path: Path) -> None:
    state, ids = central
    with LiveFakeDify(state) as fake:
        agent = agent_for(settings_for(fake, ids, tmp_path / "data"))
        store = ConversationStore(agent.db)
        conversation, (first, second) = converse(agent.db, "cancel my order", "thanks")
        store.set_feedback(first, "kiosk", "dislike", "too slow")  # before the push: inside its record
        agent.run_once()
        assert Outbox(agent.db).depth() == 0
        store.set_feedback(second, "kiosk", "like", None)  # after the push: the conversation's next part
        store.set_feedback(first, "kiosk", None, None)  # and a revocation
        agent.run_once()
        agent.run_once()
        assert Outbox(agent.db).depth() == 0
        parts = transcripts(state, ids)
        assert sessions(state, ids) == sorted([conversation, f"{conversation}:2"])
        assert [turn["feedback"] for turn in parts[0]["turns"]] == [{"rating": "dislike", "content": "too slow"}, None]
        assert parts[1]["turns"] == []
        assert [(item["message_id"], item["rating"]) for item in parts[1]["feedback"]] == [
            (second, "like"),
            (first, None),
        ]


# --- 5. parked rows can be re-queued ---------------------------------------------------------------


def test_parked_rows_are_retried_by_the_operator_by_reason(
    central, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, ids = central
    with LiveFakeDify(state) as fake:
        settings = settings_for(fake, ids, tmp_path / "data")
        agent = agent_for(settings)
        conversation, _ = converse(agent.db, "hello")
        fake.faults.error(RUN, 400, code="invalid_param", message="transcript is too long", times=1)
        agent.run_once()
        assert len(Outbox(agent.db).parked()) == 1
        monkeypatch.setenv("KIOSK_DATA_DIR", str(settings.data_dir))
        other = CliRunner().invoke(main, ["sync", "retry", "--reason", "connection refused"])
        assert other.exit_code == 0 and other.stdout.startswith("0 parked row(s)")
        agent.run_once()
        assert sessions(state, ids) == []  # the rows stay parked: nothing was retried
        retried = CliRunner().invoke(main, ["sync", "retry", "--reason", "too long"])
        assert retried.exit_code == 0 and retried.stdout.startswith("1 parked row(s) re-queued"), retried.output
        agent.run_once()
        assert sessions(state, ids) == [conversation]
        assert Outbox(agent.db).depth() == 0 and Outbox(agent.db).parked() == []


def test_a_record_parked_after_lost_answers_is_found_not_sent_again_on_retry(
    central, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, ids = central
    with LiveFakeDify(state) as fake:
        settings = settings_for(fake, ids, tmp_path / "data", sync_max_attempts=1)
        agent = agent_for(settings)
        conversation, _ = converse(agent.db, "hello")
        fake.faults.commit_then(RUN, 502, times=1)  # landed, but the agent only saw a 502: parked at once
        agent.run_once()
        assert len(Outbox(agent.db).parked()) == 1
        monkeypatch.setenv("KIOSK_DATA_DIR", str(settings.data_dir))
        assert CliRunner().invoke(main, ["sync", "retry"]).exit_code == 0
        agent.run_once()
        assert sessions(state, ids) == [conversation]
        assert Outbox(agent.db).depth() == 0


def test_every_sync_command_has_help_and_is_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    for command in ("run", "once", "status", "retry"):
        result = CliRunner().invoke(main, ["sync", command, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output
        assert f"edge sync {command}" in readme, f"`edge sync {command}` is not documented in README.md"
    assert "KIOSK_SYNC_SETTLE_S" in readme and "KIOSK_SYNC_MAX_ATTEMPTS" in readme
