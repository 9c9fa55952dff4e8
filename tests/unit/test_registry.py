"""Declaring tasks: the arguments model, validation, the function procrastinate runs, retries."""

from __future__ import annotations

import datetime
import inspect
from typing import Any

import pytest
from procrastinate import App, JobContext, RetryStrategy
from procrastinate.jobs import Job
from procrastinate.testing import InMemoryConnector
from pydantic import BaseModel, ConfigDict, Field

from backend.declare.apps import builtin_apps
from backend.declare.registry import NoArgs, TaskBlueprint, TaskDefinition
from backend.errors import InvalidJobArguments
from backend.runtime.app import procrastinate_function


def job_context() -> JobContext:
    """A procrastinate JobContext for calling task functions directly (no database)."""
    app = App(connector=InMemoryConnector())
    job = Job(id=1, queue="default", lock=None, queueing_lock=None, task_name="tests.task")
    return JobContext(app=app, job=job, start_timestamp=0.0, abort_reason=lambda: None)


class ReportArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str
    sleep: float = Field(default=0, ge=0)
    day: datetime.date = datetime.date(2024, 1, 31)
    tags: list[str] = Field(default_factory=list)


class OtherArgs(BaseModel):
    account: str
    sleep: float = 2.5


class Report(BaseModel):
    account: str
    day: datetime.date
    total: float


@pytest.fixture
def blueprint() -> TaskBlueprint:
    return TaskBlueprint()


def declare_report(blueprint: TaskBlueprint, **options: Any) -> TaskDefinition[ReportArgs]:
    @blueprint.task(name="tests.report", **options)
    def report(args: ReportArgs) -> int:
        """Build a report."""
        return len(args.account)

    return report


def test_the_first_parameter_annotation_is_the_arguments_model(blueprint: TaskBlueprint) -> None:
    definition = declare_report(blueprint, queue="reports", priority=3)

    assert definition.args_model is ReportArgs
    assert definition.name == "tests.report"
    assert (definition.queue, definition.priority) == ("reports", 3)
    assert definition.description == "Build a report."
    assert not definition.is_async
    assert blueprint.tasks == {"tests.report": definition}
    assert list(blueprint) == [definition]


def test_policy_defaults(blueprint: TaskBlueprint) -> None:
    definition = declare_report(blueprint)

    assert (definition.queue, definition.priority) == ("default", 0)
    assert (definition.lock, definition.queueing_lock, definition.retry) == (None, None, None)


def test_a_first_parameter_that_is_not_a_model_is_rejected(blueprint: TaskBlueprint) -> None:
    def count(n: int) -> int:
        return n

    with pytest.raises(TypeError, match="first parameter must be annotated with a pydantic model"):
        blueprint.task(name="tests.count")(count)
    assert blueprint.tasks == {}


def test_an_unannotated_first_parameter_is_rejected(blueprint: TaskBlueprint) -> None:
    def untyped(args):  # type: ignore[no-untyped-def]
        return args

    with pytest.raises(TypeError, match="untyped"):
        blueprint.task(name="tests.untyped")(untyped)
    assert blueprint.tasks == {}


def test_a_task_without_parameters_gets_no_args(blueprint: TaskBlueprint) -> None:
    @blueprint.task(name="tests.tick")
    def tick() -> str:
        return "tock"

    assert tick.args_model is NoArgs
    assert tick.validate_args({}) == {}
    with pytest.raises(InvalidJobArguments) as caught:
        tick.validate_args({"unexpected": 1})
    assert caught.value.errors[0]["loc"] == ["args", "unexpected"]


def test_a_task_without_parameters_can_run(blueprint: TaskBlueprint) -> None:
    @blueprint.task(name="tests.tick")
    def tick() -> str:
        return "tock"

    assert procrastinate_function(tick)(job_context()) == "tock"


def test_declaring_the_same_name_twice_raises(blueprint: TaskBlueprint) -> None:
    first = declare_report(blueprint)

    with pytest.raises(ValueError, match=r"'tests\.report' is declared twice"):
        declare_report(blueprint)
    assert blueprint.tasks["tests.report"] is first


def test_the_same_name_on_two_blueprints_is_independent() -> None:
    one, two = TaskBlueprint(), TaskBlueprint()

    assert declare_report(one) is not declare_report(two)


def test_test_blueprints_do_not_leak_into_the_registered_tasks(blueprint: TaskBlueprint) -> None:
    declare_report(blueprint)

    assert "tests.report" not in builtin_apps().tasks
    assert "taskhub.ping" in builtin_apps().tasks


def test_validate_args_returns_json_with_defaults(blueprint: TaskBlueprint) -> None:
    definition = declare_report(blueprint)

    assert definition.validate_args({"account": "acme"}) == {
        "account": "acme",
        "sleep": 0.0,
        "day": "2024-01-31",
        "tags": [],
    }


def test_validate_args_accepts_the_model_and_other_models(blueprint: TaskBlueprint) -> None:
    definition = declare_report(blueprint)

    from_model = definition.validate_args(ReportArgs(account="acme", day=datetime.date(2025, 5, 1)))
    from_other = definition.validate_args(OtherArgs(account="acme"))

    assert from_model["day"] == "2025-05-01"
    assert from_other == {"account": "acme", "sleep": 2.5, "day": "2024-01-31", "tags": []}


def test_validate_args_coerces_like_json_would(blueprint: TaskBlueprint) -> None:
    definition = declare_report(blueprint)

    data = definition.validate_args({"account": "acme", "sleep": "1.5", "day": "2024-02-29"})

    assert data["sleep"] == 1.5
    assert data["day"] == "2024-02-29"


def test_invalid_args_name_the_field(blueprint: TaskBlueprint) -> None:
    definition = declare_report(blueprint)

    with pytest.raises(InvalidJobArguments) as caught:
        definition.validate_args({"account": "acme", "sleep": -1})

    error = caught.value
    assert error.status_code == 422
    assert error.message.startswith("invalid job: args.sleep: ")
    assert "greater than or equal to 0" in error.message
    assert error.errors[0]["loc"] == ["args", "sleep"]
    assert error.errors[0]["type"] == "greater_than_equal"
    assert len(error.errors) == 1


def test_every_invalid_field_is_listed(blueprint: TaskBlueprint) -> None:
    definition = declare_report(blueprint)

    with pytest.raises(InvalidJobArguments) as caught:
        definition.validate_args({"sleep": "x", "tags": ["ok", 3], "extra": True})

    locations = [error["loc"] for error in caught.value.errors]
    assert ["args", "account"] in locations
    assert ["args", "sleep"] in locations
    assert ["args", "tags", "1"] in locations
    assert ["args", "extra"] in locations
    assert "url" not in caught.value.errors[0]


async def test_procrastinate_function_of_an_async_task(blueprint: TaskBlueprint) -> None:
    received: list[ReportArgs] = []

    @blueprint.task(name="tests.async_report")
    async def build(args: ReportArgs) -> Report:
        """Build it asynchronously."""
        received.append(args)
        return Report(account=args.account, day=args.day, total=12.5)

    function = procrastinate_function(build)

    assert build.is_async
    assert inspect.iscoroutinefunction(function)
    assert function.__name__ == "build"
    assert function.__doc__ == "Build it asynchronously."
    result = await function(job_context(), account="acme", day="2024-03-01")
    assert result == {"account": "acme", "day": "2024-03-01", "total": 12.5}
    assert received == [ReportArgs(account="acme", day=datetime.date(2024, 3, 1))]


def test_procrastinate_function_of_a_sync_task(blueprint: TaskBlueprint) -> None:
    @blueprint.task(name="tests.sync_report")
    def build(args: ReportArgs) -> Report:
        return Report(account=args.account, day=args.day, total=args.sleep)

    function = procrastinate_function(build)

    assert not build.is_async
    assert not inspect.iscoroutinefunction(function)
    assert inspect.isfunction(function)
    assert function(job_context(), account="acme", sleep=3) == {
        "account": "acme",
        "day": "2024-01-31",
        "total": 3.0,
    }


def test_plain_return_values_pass_through(blueprint: TaskBlueprint) -> None:
    @blueprint.task(name="tests.plain")
    def plain(args: ReportArgs) -> dict[str, Any]:
        return {"account": args.account, "tags": args.tags}

    assert procrastinate_function(plain)(job_context(), account="a", tags=["x"]) == {
        "account": "a",
        "tags": ["x"],
    }


def test_procrastinate_function_validates_the_stored_kwargs(blueprint: TaskBlueprint) -> None:
    calls: list[ReportArgs] = []

    @blueprint.task(name="tests.strict")
    def strict(args: ReportArgs) -> None:
        calls.append(args)

    function = procrastinate_function(strict)

    with pytest.raises(InvalidJobArguments, match=r"^invalid job: args\.sleep: ") as caught:
        function(job_context(), account="acme", sleep=-5)
    assert "-5" not in str(caught.value), "the input (maybe a secret) is not quoted"
    with pytest.raises(InvalidJobArguments, match=r"args\.account: Field required"):
        function(job_context(), sleep=1)
    assert calls == []


async def test_async_procrastinate_function_validates_the_stored_kwargs(
    blueprint: TaskBlueprint,
) -> None:
    calls: list[ReportArgs] = []

    @blueprint.task(name="tests.strict_async")
    async def strict(args: ReportArgs) -> None:
        calls.append(args)

    with pytest.raises(InvalidJobArguments, match=r"args\.unknown: Extra inputs"):
        await procrastinate_function(strict)(job_context(), account="acme", unknown=1)
    assert calls == []


def test_retry_as_a_number_becomes_a_retry_strategy(blueprint: TaskBlueprint) -> None:
    definition = declare_report(blueprint, retry=3)

    assert isinstance(definition.retry, RetryStrategy)
    assert definition.retry == RetryStrategy(max_attempts=3)
    assert definition.describe_retry() == {
        "max_attempts": 3,
        "wait": 0,
        "linear_wait": 0,
        "exponential_wait": 0,
        "retry_exceptions": None,
    }


def test_a_retry_strategy_is_kept_and_described(blueprint: TaskBlueprint) -> None:
    strategy = RetryStrategy(
        max_attempts=5, exponential_wait=2, retry_exceptions={TimeoutError, ConnectionError}
    )
    definition = declare_report(blueprint, retry=strategy)

    assert definition.retry is strategy
    assert definition.describe_retry() == {
        "max_attempts": 5,
        "wait": 0,
        "linear_wait": 0,
        "exponential_wait": 2,
        "retry_exceptions": ["ConnectionError", "TimeoutError"],
    }


def test_no_retry_is_described_as_none(blueprint: TaskBlueprint) -> None:
    definition = declare_report(blueprint)

    assert definition.retry is None
    assert definition.describe_retry() is None


def test_retry_values_mean_what_they_mean_in_procrastinate(blueprint: TaskBlueprint) -> None:
    def declare(name: str, retry: bool | int) -> TaskDefinition[Any]:
        def noop() -> None:
            return None

        return blueprint.task(name=name, retry=retry)(noop)

    forever = declare("tests.forever", True)
    assert isinstance(forever.retry, RetryStrategy)
    assert forever.retry.max_attempts is None
    assert declare("tests.never", False).retry is None
    assert declare("tests.zero", 0).retry is None
