"""Retry backoff and priority tiers, as the seeds declare them."""

from __future__ import annotations

import datetime

import pytest
from procrastinate.jobs import Job

from backend.declare.policy import Priority, RateLimit, Retry, parse_rate_limits
from backend.declare.registry import TaskBlueprint


def job(attempts: int) -> Job:
    return Job(queue="q", lock=None, queueing_lock=None, task_name="t", attempts=attempts)


def waits(policy: Retry, error: BaseException | None = None) -> list[float | None]:
    """Seconds until each retry the policy decides, until it gives up."""
    found: list[float | None] = []
    for attempts in range(10):
        decision = policy.get_retry_decision(exception=error or ValueError(), job=job(attempts))
        if decision is None:
            found.append(None)
            break
        assert decision.retry_at is not None
        remaining = decision.retry_at - datetime.datetime.now(datetime.UTC)
        found.append(round(remaining.total_seconds()))
    return found


def test_backoff_60_120_240_480() -> None:
    assert waits(Retry(retries=4, backoff=60)) == [60, 120, 240, 480, None]


def test_three_retries_sixty_seconds_apart() -> None:
    assert waits(Retry(retries=3, backoff=60, factor=1)) == [60, 60, 60, None]


def test_cap_bounds_the_wait() -> None:
    assert waits(Retry(retries=5, backoff=10, factor=3, cap=100)) == [10, 30, 90, 100, 100, None]


def test_jitter_spreads_the_wait_within_its_fraction() -> None:
    policy = Retry(retries=1, backoff=100, jitter=0.2)
    seen = {waits(policy)[0] for _ in range(200)}
    assert all(value is not None and 80 <= value <= 120 for value in seen)
    assert len(seen) > 10, "jitter must actually vary the wait"


def test_retry_only_on_listed_exceptions() -> None:
    policy = Retry(retries=3, backoff=1, on=(ConnectionError, TimeoutError))
    assert waits(policy, ConnectionError())[0] == 1
    assert waits(policy, ValueError()) == [None]


@pytest.mark.parametrize(
    "options",
    [
        {"retries": -1},
        {"retries": 1, "factor": 0.5},
        {"retries": 1, "jitter": 1.5},
        {"retries": 1, "cap": -1},
    ],
)
def test_invalid_policies_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must be|fraction"):
        Retry(**options)  # type: ignore[arg-type]


def test_policy_shows_in_the_task_description() -> None:
    blueprint = TaskBlueprint()

    @blueprint.task(
        name="payments.process",
        queue="payment.critical",
        priority=Priority.critical,
        retry=Retry(retries=4, backoff=60, on=(ConnectionError,)),
    )
    def process() -> None:
        return None

    assert process.priority == 100
    assert process.describe_retry() == {
        "retries": 4,
        "backoff": 60,
        "factor": 2.0,
        "cap": None,
        "jitter": 0.0,
        "on": ["ConnectionError"],
        "delays": [60, 120, 240, 480],
    }


def test_tiers_order() -> None:
    assert Priority.critical > Priority.high > Priority.normal > Priority.low
    assert int(Priority.normal) == 0, "procrastinate's default priority"


@pytest.mark.parametrize(
    ("text", "runs", "seconds"), [("100/m", 100, 60), ("5/s", 5, 1), ("2/h", 2, 3600)]
)
def test_rate_limits_parse(text: str, runs: int, seconds: float) -> None:
    limit = RateLimit.parse(text)
    assert (limit.runs, limit.seconds, str(limit)) == (runs, seconds, text)


@pytest.mark.parametrize("text", ["100", "0/m", "ten/m", "5/week", "-1/s"])
def test_bad_rate_limits_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="write it as 100/m"):
        RateLimit.parse(text)


def test_operators_rate_limits_parse() -> None:
    limits = parse_rate_limits(" emails.send=100/m , taskhub.ping=5/s,")
    assert {name: str(limit) for name, limit in limits.items()} == {
        "emails.send": "100/m",
        "taskhub.ping": "5/s",
    }
    with pytest.raises(ValueError, match="task=limit"):
        parse_rate_limits("5/s")
