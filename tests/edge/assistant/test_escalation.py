"""Which local outcomes go to central (`KIOSK_ESCALATE_ON`); the staff button never does."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.assistant.escalation import Escalator
from edge.assistant.policy import Decision, Reason, Route
from edge.settings import Settings

CASES = {
    "handoff": {Route.HANDOFF},
    "llm": {Route.LLM},
    "both": {Route.HANDOFF, Route.LLM},
    "all": {Route.HANDOFF, Route.LLM, Route.DECLINED},
}


@pytest.mark.parametrize("escalate_on", sorted(CASES))
def test_each_setting_escalates_exactly_its_outcomes(escalate_on: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, escalate_on=escalate_on)
    escalator = Escalator(settings, None, None, None, None, None)  # type: ignore[arg-type]  # only settings used
    for route in Route:
        assert escalator.escalates(Decision(route)) == (route in CASES[escalate_on]), route
    assert not escalator.escalates(Decision(Route.HANDOFF, reason=Reason.BUTTON))  # the shopper asked for staff
