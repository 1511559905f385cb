"""The ingest workflow's awkward sides, which the sync agent must survive: runs that stay `running` a
while, a central slow to list new runs, log entries of accounts (no end user), and a Dify older than the
logs' end-user filter, which ignores it and answers every user's latest runs."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fake_dify import Central, FakeDify, FakeDifyState
from tests.fake_dify.test_fake_dify import SESSION, TRANSCRIPT, Api


@pytest.fixture
def api(client: httpx.Client, central: Central, state: FakeDifyState) -> Api:
    return Api(client, central, state)


def logs(api: Api, **params: object) -> dict:
    response = api.wf("GET", "/workflows/logs", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_run_stays_running_then_succeeds_and_a_blocking_call_waits_for_it(
    api: Api, fake: FakeDify, state: FakeDifyState
) -> None:
    app = state.app(api.central.workflow_app_id)
    state.record_workflow_run(app, state.end_user(app.id, "someone"), TRANSCRIPT, running_s=0.3)
    [entry] = logs(api)["data"]
    assert (entry["workflow_run"]["status"], entry["workflow_run"]["finished_at"]) == ("running", None)
    time.sleep(0.3)
    assert logs(api)["data"][0]["workflow_run"]["status"] == "succeeded"

    fake.config.run_seconds = 0.3
    started = time.monotonic()
    body = api.run().json()
    assert time.monotonic() - started >= 0.3 and body["data"]["status"] == "succeeded"


def test_a_new_run_is_missing_from_the_logs_while_central_is_slow_to_list(api: Api, fake: FakeDify) -> None:
    fake.config.run_list_delay = 0.3
    run_id = api.run().json()["workflow_run_id"]
    assert logs(api, created_by_end_user_session_id=SESSION)["total"] == 0
    assert api.wf("GET", f"/workflows/run/{run_id}").status_code == 200  # it exists all the same
    time.sleep(0.3)
    assert [e["workflow_run"]["id"] for e in logs(api, created_by_end_user_session_id=SESSION)["data"]] == [run_id]


def test_a_run_started_by_an_account_has_no_end_user(api: Api, state: FakeDifyState) -> None:
    state.record_workflow_run(state.app(api.central.workflow_app_id), None, TRANSCRIPT)
    api.run()
    account_entry, user_entry = sorted(logs(api)["data"], key=lambda e: e["created_by_role"])
    assert account_entry["created_by_end_user"] is None
    assert account_entry["created_by_account"]["email"] == state.owner_email
    assert user_entry["created_by_end_user"]["session_id"] == SESSION and user_entry["created_by_account"] is None
    assert logs(api, created_by_end_user_session_id=SESSION)["total"] == 1  # the filter leaves accounts out
    assert logs(api, keyword=TRANSCRIPT["edge_session_id"])["total"] == 2  # a search does not
    assert [e["created_by_role"] for e in logs(api, created_by_account=state.owner_email)["data"]] == ["account"]
    unknown = api.wf("GET", "/workflows/logs", params={"created_by_account": "nobody@example.com"})
    assert (unknown.status_code, unknown.json()["code"]) == (400, "invalid_param")


@pytest.mark.parametrize("generation", ["current", "older"])
def test_an_older_dify_ignores_the_end_user_filter(api: Api, fake: FakeDify, generation: str) -> None:
    fake.config.logs_user_filter = generation == "current"
    for n in range(3):
        api.run(user=f"{SESSION}-{n}", inputs={**TRANSCRIPT, "edge_session_id": f"session-{n}"})
    found = logs(api, created_by_end_user_session_id=f"{SESSION}-1")
    sessions = [entry["created_by_end_user"]["session_id"] for entry in found["data"]]
    if generation == "current":
        assert sessions == [f"{SESSION}-1"]
    else:  # every user's latest runs, newest first, as if there were no filter
        assert sessions == [f"{SESSION}-2", f"{SESSION}-1", f"{SESSION}-0"]
    by_keyword = logs(api, keyword="session-1")["data"]  # the look-up that works on both
    assert [entry["created_by_end_user"]["session_id"] for entry in by_keyword] == [f"{SESSION}-1"]
