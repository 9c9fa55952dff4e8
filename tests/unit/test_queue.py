"""Building job rows: the task's defaults, overrides, scheduling, and unknown tasks."""

from __future__ import annotations

import datetime

import pytest
from pydantic import BaseModel, Field

from backend.declare.apps import builtin_apps
from backend.declare.registry import TaskBlueprint, TaskDefinition
from backend.defer import make_job
from backend.errors import InvalidJobArguments, UnknownTask
from backend.tasks.builtin import PingArgs


class EmailArgs(BaseModel):
    to: str
    retries_left: int = Field(default=2, ge=0)


blueprint = TaskBlueprint()


@blueprint.task(
    name="tests.send_email",
    queue="emails",
    priority=5,
    lock="smtp",
    queueing_lock="email-digest",
)
def send_email(args: EmailArgs) -> None:
    """Send an email."""


def test_make_job_applies_the_task_defaults() -> None:
    job = make_job(send_email, {"to": "a@example.com"})

    assert job.task_name == "tests.send_email"
    assert job.task_kwargs == {"to": "a@example.com", "retries_left": 2}
    assert job.queue == "emails"
    assert job.priority == 5
    assert job.lock == "smtp"
    assert job.queueing_lock == "email-digest"
    assert job.scheduled_at is None
    assert job.id is None


def test_make_job_options_override_the_defaults() -> None:
    job = make_job(
        send_email,
        EmailArgs(to="b@example.com", retries_left=0),
        queue="urgent",
        priority=0,
        lock="other-lock",
        queueing_lock="other-queueing-lock",
    )

    assert job.task_kwargs == {"to": "b@example.com", "retries_left": 0}
    assert job.queue == "urgent"
    assert job.priority == 0, "priority 0 is an explicit choice, not 'use the default'"
    assert job.lock == "other-lock"
    assert job.queueing_lock == "other-queueing-lock"


def test_make_job_with_a_task_without_policy() -> None:
    ping = builtin_apps().task("taskhub.ping")

    job = make_job(ping, PingArgs(message={"nested": [1, 2]}))

    assert (job.queue, job.priority, job.lock, job.queueing_lock) == ("default", 0, None, None)
    assert job.task_kwargs == {"message": {"nested": [1, 2]}, "sleep": 0.0}


def test_make_job_validates_the_arguments() -> None:
    with pytest.raises(InvalidJobArguments) as caught:
        make_job(send_email, {"to": "a@example.com", "retries_left": -1})

    assert caught.value.errors[0]["loc"] == ["args", "retries_left"]


@pytest.mark.parametrize("schedule_in", [60, 60.0, datetime.timedelta(minutes=1)])
def test_schedule_in(schedule_in: float | datetime.timedelta) -> None:
    before = datetime.datetime.now(datetime.UTC)
    job = make_job(send_email, {"to": "a@example.com"}, schedule_in=schedule_in)
    after = datetime.datetime.now(datetime.UTC)

    assert job.scheduled_at is not None
    assert job.scheduled_at.utcoffset() == datetime.timedelta(0)
    minute = datetime.timedelta(seconds=60)
    assert before + minute <= job.scheduled_at <= after + minute


def test_schedule_at_is_kept() -> None:
    when = datetime.datetime(
        2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )

    job = make_job(send_email, {"to": "a@example.com"}, schedule_at=when)

    assert job.scheduled_at == when
    assert job.scheduled_at is not None
    assert job.scheduled_at.utcoffset() == datetime.timedelta(hours=2)


def test_schedule_in_and_schedule_at_together_raise() -> None:
    when = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)

    with pytest.raises(ValueError, match="not both"):
        make_job(send_email, {"to": "a@example.com"}, schedule_at=when, schedule_in=60)


def test_a_naive_schedule_at_raises() -> None:
    naive = datetime.datetime(2030, 1, 1, 9, 0)

    with pytest.raises(ValueError, match="timezone"):
        make_job(send_email, {"to": "a@example.com"}, schedule_at=naive)


def test_get_task_finds_registered_tasks() -> None:
    ping = builtin_apps().task("taskhub.ping")

    assert isinstance(ping, TaskDefinition)
    assert ping.name == "taskhub.ping"
    assert ping.args_model is PingArgs
    assert ping is builtin_apps().tasks["taskhub.ping"]


def test_get_task_of_an_unknown_name_lists_the_registered_tasks() -> None:
    with pytest.raises(UnknownTask) as caught:
        builtin_apps().task("nope")

    assert caught.value.status_code == 404
    registered = ", ".join(sorted(builtin_apps().tasks))
    assert "taskhub.ping" in registered
    assert caught.value.message == f"unknown task 'nope'; registered tasks: {registered}"


def test_tasks_of_other_blueprints_are_not_registered() -> None:
    with pytest.raises(UnknownTask):
        builtin_apps().task("tests.send_email")
