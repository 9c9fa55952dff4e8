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
from typing import Any, Generic, Literal, TypeVar

from procrastinate.retry import BaseRetryStrategy, RetryStrategy, RetryValue
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from backend.declare.policy import RateLimit, Retry, TaskDefaults
from backend.declare.secrets import mask, reveal, secret_paths
from backend.errors import InvalidJobArguments
from backend.runtime.context import TaskContext
from backend.tracing import TRACE_KEY, split_trace

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


NO_DEFAULTS = TaskDefaults()


@dataclass(frozen=True, kw_only=True)
class TaskDefinition(Generic[ArgsT]):
    """One task: its name, argument model, function and declared policy.

    Queue, retry and limits resolve when read: what the task declares, else its blueprint's
    defaults (set when its app is loaded), else taskhub's (queue ``default``, no retry, no
    limit). Application code holds this object and defers through it, so a default applied
    at load reaches every defer.
    """

    name: str
    func: Callable[..., Any]
    args_model: type[ArgsT]
    takes_args: bool = True
    takes_context: bool = False
    declared: TaskDefaults = NO_DEFAULTS
    priority: int = 0
    lock: str | None = None
    queueing_lock: str | None = None
    cron: str | None = None
    on_failure: Callable[..., Any] | None = None
    description: str = ""
    blueprint: TaskBlueprint | None = field(default=None, compare=False, repr=False)

    def _resolved(self, name: str) -> Any:
        value = getattr(self.declared, name)
        if value is None and self.blueprint is not None:
            value = getattr(self.blueprint.defaults, name)
        return None if value is False else value

    @property
    def queue(self) -> str:
        return self._resolved("queue") or "default"

    @property
    def retry(self) -> BaseRetryStrategy | None:
        strategy: BaseRetryStrategy | None = self._resolved("retry")
        return strategy

    @property
    def rate_limit(self) -> RateLimit | None:
        limit: RateLimit | None = self._resolved("rate_limit")
        return limit

    @property
    def time_limit(self) -> float | None:
        limit: float | None = self._resolved("time_limit")
        return limit

    @property
    def soft_time_limit(self) -> float | None:
        limit: float | None = self._resolved("soft_time_limit")
        return limit

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    def check_limits(self) -> None:
        """ValueError when the resolved soft limit does not come before the hard one."""
        soft, hard = self.soft_time_limit, self.time_limit
        if soft and hard and soft >= hard:
            raise ValueError(
                f"task {self.name!r}: soft_time_limit ({soft:g} s) must be below "
                f"time_limit ({hard:g} s)"
            )

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
        if not secret_paths(self.args_model):
            return model.model_dump(mode="json")
        # Stored with the secrets' real values: the task needs them (shown masked elsewhere).
        stored: JSONDict = to_jsonable_python(reveal(model.model_dump(mode="python")))
        return stored

    def mask(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """``args`` as shown outside the database: secret fields masked, and without the trace
        context that travels with them (backend.tracing)."""
        if TRACE_KEY in args:
            args = split_trace(args)[0]
        return mask(self.args_model, args) if secret_paths(self.args_model) else dict(args)

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


@dataclass(eq=False)
class TaskBlueprint:
    """A group of task definitions, declared at import time and bound to apps later.

    ``defaults`` fill what a task leaves unset: its app's (and the operator's) defaults,
    set when the app is loaded.
    """

    tasks: dict[str, TaskDefinition[Any]] = field(default_factory=dict)
    defaults: TaskDefaults = NO_DEFAULTS

    def task(
        self,
        *,
        name: str,
        queue: str | None = None,
        priority: int = 0,
        retry: RetryValue | None = None,
        lock: str | None = None,
        queueing_lock: str | None = None,
        cron: str | None = None,
        on_failure: Callable[..., Any] | None = None,
        rate_limit: str | RateLimit | Literal[False] | None = None,
        time_limit: float | Literal[False] | None = None,
        soft_time_limit: float | Literal[False] | None = None,
    ) -> Callable[[Callable[..., Any]], TaskDefinition[Any]]:
        """Declare a task. Its first parameter's annotation is the arguments model.

        ``retry`` is a :class:`~backend.declare.policy.Retry` (backoff, cap, jitter,
        exception types), or what procrastinate takes: a number of attempts, True (forever),
        a strategy. ``priority`` is any integer; :class:`~backend.declare.policy.Priority`
        names tiers. ``cron`` makes it periodic (one job per tick across all workers; its
        model must accept ``timestamp``, see :class:`PeriodicArgs`). ``on_failure(job)``, sync
        or async, runs once per final failure, as a job of its own (``taskhub.on_failure``),
        with the failed job's ``JobView``. ``rate_limit="100/m"`` holds across all workers;
        a job over the limit waits without using up an attempt. ``soft_time_limit`` (seconds)
        makes ``ctx.should_abort()`` true and ``ctx.raise_if_aborted()`` raise
        ``SoftTimeLimitExceeded``; ``time_limit`` stops the task (sync ones run in a child
        process for it) and fails the attempt with ``TimeLimitExceeded``. Queue, retry and
        limits left unset come from the app's defaults (:class:`TaskDefaults`).
        """

        def declare(func: Callable[..., Any]) -> TaskDefinition[Any]:
            if name in self.tasks:
                raise ValueError(f"task {name!r} is declared twice")
            signature = _inspect_task(func)
            if cron and "timestamp" not in signature.args_model.model_fields:
                raise TypeError(f"periodic task {name!r}: its model needs a timestamp field")
            definition: TaskDefinition[Any] = TaskDefinition(
                name=name,
                func=func,
                args_model=signature.args_model,
                takes_args=signature.takes_args,
                takes_context=signature.takes_context,
                declared=TaskDefaults(
                    queue=queue,
                    retry=retry,
                    rate_limit=rate_limit,
                    time_limit=time_limit,
                    soft_time_limit=soft_time_limit,
                ),
                priority=priority,
                lock=lock,
                queueing_lock=queueing_lock,
                cron=cron,
                on_failure=on_failure,
                description=inspect.getdoc(func) or "",
                blueprint=self,
            )
            definition.check_limits()
            self.tasks[name] = definition
            return definition

        return declare

    def __iter__(self) -> Iterator[TaskDefinition[Any]]:
        return iter(self.tasks.values())
