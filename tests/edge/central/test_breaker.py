from __future__ import annotations

from edge.central.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_then_probes_once() -> None:
    clock = Clock()
    breaker = Breaker(failures=3, cooldown_s=60, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    breaker.success()  # a success in between starts the count again
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now = 59.9
    assert not breaker.allow()
    clock.now = 60.0
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()  # a failed probe: another cool-down
    assert breaker.state == "open" and not breaker.allow()
    clock.now = 120.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_a_probe_the_shopper_abandoned_lets_the_next_question_probe() -> None:
    clock = Clock()
    breaker = Breaker(failures=1, cooldown_s=10, clock=clock)
    breaker.failure()
    clock.now = 10.0
    assert breaker.allow() and not breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_a_probe_that_never_reports_back_is_given_up_after_a_cool_down() -> None:
    clock = Clock()
    breaker = Breaker(failures=1, cooldown_s=10, clock=clock)
    breaker.failure()
    clock.now = 10.0
    assert breaker.allow() and not breaker.allow()
    clock.now = 20.0
    assert breaker.allow()
