"""Declaring tasks: a pydantic model for the arguments, a policy next to the function.

Task modules declare :class:`TaskDefinition` objects on a :class:`TaskBlueprint`.
Definitions are plain data bound to no app, so every procrastinate ``App`` that
``build_task_app`` makes (the API, each worker, each test) gets fresh procrastinate
tasks of its own, while application code defers through the definition itself.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import procrastinate
from procrastinate import JobContext
from procrastinate.retry import BaseRetryStrategy, RetryStrategy, RetryValue, get_retry_strategy
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from backend.declare.policy import RateLimit, Retry
from backend.errors import InvalidJobArguments
from backend.runtime.context import TaskContext, runtime_of
from backend.runtime.isolation import run_in_child

ArgsT = TypeVar("ArgsT", bound=BaseModel)
JSONDict = dict[str, Any]


class NoArgs(BaseModel):
    """Arguments model for tasks that take none."""

    model_config = ConfigDict(extra="forbid")


class PeriodicArgs(BaseModel):
    """Arguments of a periodic task: procrastinate passes the tick's Unix timestamp."""

    model_config = ConfigDict(extra="forbid")

    timestamp: int | None = None


class ResultNotJSON(TypeError):
    """A task returned something that cannot be stored as JSON."""


def to_json(value: Any) -> Any:
    """Turn a task's return value into JSON data: pydantic models, datetimes, UUIDs, ...

    Anything else (a set of objects, a file, a socket) fails the job with a clear error
    rather than the statement that stores the result.
    """
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise ResultNotJSON(f"the task returned a value that is not JSON: {exc}") from None


def describe_validation_error(
    error: ValidationError, prefix: tuple[str, ...]
) -> InvalidJobArguments:
    errors: list[dict[str, Any]] = [
        {"loc": [*prefix, *map(str, item["loc"])], "msg": item["msg"], "type": item["type"]}
        for item in error.errors(include_url=False)
    ]
    first = errors[0]
    where = ".".join(str(part) for part in typing.cast(list[str], first["loc"]))
    return InvalidJobArguments(f"invalid job: {where}: {first['msg']}", errors)


@dataclass(frozen=True, kw_only=True)
class TaskDefinition(Generic[ArgsT]):
    """One task: its name, argument model, function and default policy."""

    name: str
    func: Callable[..., Any]
    args_model: type[ArgsT]
    takes_args: bool = True
    takes_context: bool = False
    queue: str = "default"
    priority: int = 0
    retry: BaseRetryStrategy | None = None
    lock: str | None = None
    queueing_lock: str | None = None
    cron: str | None = None
    on_failure: Callable[..., Any] | None = None
    rate_limit: RateLimit | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    description: str = ""

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    def validate_args(self, raw: Mapping[str, Any] | BaseModel) -> JSONDict:
        """Validate arguments against the model and return them as JSON data.

        Raises :class:`InvalidJobArguments` naming the field at fault.
        """
        if isinstance(raw, self.args_model):
            model = raw
        else:
            data = raw.model_dump(mode="json") if isinstance(raw, BaseModel) else raw
            try:
                model = self.args_model.model_validate(data)
            except ValidationError as exc:
                raise describe_validation_error(exc, ("args",)) from None
        return model.model_dump(mode="json")

    def procrastinate_function(self) -> Callable[..., Any]:
        """The function procrastinate runs: validates the stored JSON, calls the task."""
        func, model = self.func, self.args_model
        takes_args, takes_context = self.takes_args, self.takes_context

        def call_args(job_context: JobContext, kwargs: dict[str, Any]) -> tuple[Any, ...]:
            parsed = model.model_validate(kwargs)
            arguments: tuple[Any, ...] = (parsed,) if takes_args else ()
            return (*arguments, TaskContext(job_context)) if takes_context else arguments

        # procrastinate passes its JobContext first (the app sets pass_context=True).
        time_limit = self.time_limit
        if self.is_async:

            async def run_async(job_context: JobContext, **kwargs: Any) -> Any:
                return to_json(await func(*call_args(job_context, kwargs)))

            runner: Callable[..., Any] = run_async
        else:

            def run_sync(job_context: JobContext, **kwargs: Any) -> Any:
                def target() -> Any:
                    return to_json(func(*call_args(job_context, kwargs)))

                if time_limit is None:
                    return target()
                # A hard limit needs a process: a thread cannot be stopped.
                runtime = runtime_of(job_context)
                parent = runtime.reporter

                def use_in_child(reporter: Any) -> None:
                    runtime.reporter = reporter

                return run_in_child(
                    target,
                    time_limit=time_limit,
                    prepare=use_in_child,
                    on_progress=parent.report if parent else lambda progress: None,
                    should_abort=job_context.should_abort,
                )

            runner = run_sync
        runner.taskhub_definition = self  # type: ignore[attr-defined]  # see definition_of
        runner.__name__ = getattr(func, "__name__", self.name)
        runner.__qualname__ = getattr(func, "__qualname__", self.name)
        runner.__module__ = getattr(func, "__module__", __name__)
        runner.__doc__ = func.__doc__
        return runner

    def describe_retry(self) -> dict[str, Any] | None:
        if self.retry is None:
            return None
        if isinstance(self.retry, Retry):
            return self.retry.describe()
        if not isinstance(self.retry, RetryStrategy):
            return {"strategy": type(self.retry).__name__}
        return {
            "max_attempts": self.retry.max_attempts,
            "wait": self.retry.wait,
            "linear_wait": self.retry.linear_wait,
            "exponential_wait": self.retry.exponential_wait,
            "retry_exceptions": sorted(exc.__name__ for exc in (self.retry.retry_exceptions or ()))
            or None,
        }


def definition_of(app: procrastinate.App, task_name: str) -> TaskDefinition[Any] | None:
    """The taskhub definition behind one of ``app``'s procrastinate tasks, if any."""
    task = app.tasks.get(task_name)
    definition = getattr(task.func, "taskhub_definition", None) if task else None
    return definition if isinstance(definition, TaskDefinition) else None


@dataclass(frozen=True)
class _Signature:
    args_model: type[BaseModel]
    takes_args: bool
    takes_context: bool


def _inspect_task(func: Callable[..., Any]) -> _Signature:
    """A task is ``f()``, ``f(args: Model)``, ``f(ctx: TaskContext)`` or ``f(args, ctx)``."""
    parameters = list(inspect.signature(func).parameters.values())
    hints = typing.get_type_hints(func)
    annotations = [hints.get(parameter.name) for parameter in parameters]
    takes_context = bool(annotations) and annotations[-1] is TaskContext
    if takes_context:
        annotations = annotations[:-1]
    if not annotations:
        return _Signature(NoArgs, takes_args=False, takes_context=takes_context)
    first = annotations[0]
    if len(annotations) > 1 or not (isinstance(first, type) and issubclass(first, BaseModel)):
        raise TypeError(
            f"task {func.__qualname__}: its first parameter must be annotated with a "
            "pydantic model (the job's JSON arguments), and a second one, if any, "
            "with TaskContext"
        )
    return _Signature(first, takes_args=True, takes_context=takes_context)


@dataclass
class TaskBlueprint:
    """A group of task definitions, declared at import time and bound to apps later."""

    tasks: dict[str, TaskDefinition[Any]] = field(default_factory=dict)

    def task(
        self,
        *,
        name: str,
        queue: str = "default",
        priority: int = 0,
        retry: RetryValue = False,
        lock: str | None = None,
        queueing_lock: str | None = None,
        cron: str | None = None,
        on_failure: Callable[..., Any] | None = None,
        rate_limit: str | RateLimit | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
    ) -> Callable[[Callable[..., Any]], TaskDefinition[Any]]:
        """Declare a task. Its first parameter's annotation is the arguments model.

        ``retry`` is a :class:`~backend.declare.policy.Retry` (backoff, cap, jitter, exception
        types), or what procrastinate takes: a number of attempts, True (forever), a
        strategy. ``priority`` is any integer; :class:`~backend.declare.policy.Priority` names
        tiers. ``cron`` makes it periodic (one job per tick across all workers; its model
        must accept ``timestamp``, see :class:`PeriodicArgs`). ``on_failure(job)``, sync or
        async, runs once per final failure, as a job of its own (``taskhub.on_failure``),
        with the failed job's ``JobView``. ``rate_limit="100/m"`` holds across all workers;
        a job over the limit waits without using up an attempt. ``soft_time_limit`` (seconds)
        makes ``ctx.should_abort()`` true and ``ctx.raise_if_aborted()`` raise
        ``SoftTimeLimitExceeded``; ``time_limit`` stops the task (sync ones run in a child
        process for it) and fails the attempt with ``TimeLimitExceeded``.
        """

        def declare(func: Callable[..., Any]) -> TaskDefinition[Any]:
            if name in self.tasks:
                raise ValueError(f"task {name!r} is declared twice")
            if soft_time_limit and time_limit and soft_time_limit >= time_limit:
                raise ValueError(f"task {name!r}: soft_time_limit must be below time_limit")
            signature = _inspect_task(func)
            if cron and "timestamp" not in signature.args_model.model_fields:
                raise TypeError(f"periodic task {name!r}: its model needs a timestamp field")
            definition: TaskDefinition[Any] = TaskDefinition(
                name=name,
                func=func,
                args_model=signature.args_model,
                takes_args=signature.takes_args,
                takes_context=signature.takes_context,
                queue=queue,
                priority=priority,
                retry=get_retry_strategy(retry),
                lock=lock,
                queueing_lock=queueing_lock,
                cron=cron,
                on_failure=on_failure,
                rate_limit=RateLimit.parse(rate_limit)
                if isinstance(rate_limit, str)
                else rate_limit,
                time_limit=time_limit,
                soft_time_limit=soft_time_limit,
                description=inspect.getdoc(func) or "",
            )
            self.tasks[name] = definition
            return definition

        return declare

    def __iter__(self) -> Iterator[TaskDefinition[Any]]:
        return iter(self.tasks.values())
