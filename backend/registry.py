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

from procrastinate.retry import BaseRetryStrategy, RetryStrategy, RetryValue, get_retry_strategy
from pydantic import BaseModel, ConfigDict, ValidationError

from backend.errors import InvalidJobArguments

ArgsT = TypeVar("ArgsT", bound=BaseModel)
JSONDict = dict[str, Any]


class NoArgs(BaseModel):
    """Arguments model for tasks that take none."""

    model_config = ConfigDict(extra="forbid")


def to_json(value: Any) -> Any:
    """Turn a task's return value into JSON-compatible data (pydantic models included)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


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
    queue: str = "default"
    priority: int = 0
    retry: BaseRetryStrategy | None = None
    lock: str | None = None
    queueing_lock: str | None = None
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
        func, model, takes_args = self.func, self.args_model, self.takes_args

        def call_args(kwargs: dict[str, Any]) -> tuple[BaseModel, ...]:
            parsed = model.model_validate(kwargs)
            return (parsed,) if takes_args else ()

        if self.is_async:

            async def run_async(**kwargs: Any) -> Any:
                return to_json(await func(*call_args(kwargs)))

            runner: Callable[..., Any] = run_async
        else:

            def run_sync(**kwargs: Any) -> Any:
                return to_json(func(*call_args(kwargs)))

            runner = run_sync
        runner.__name__ = getattr(func, "__name__", self.name)
        runner.__qualname__ = getattr(func, "__qualname__", self.name)
        runner.__module__ = getattr(func, "__module__", __name__)
        runner.__doc__ = func.__doc__
        return runner

    def describe_retry(self) -> dict[str, Any] | None:
        if self.retry is None:
            return None
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


def _args_model_of(func: Callable[..., Any]) -> type[BaseModel]:
    parameters = list(inspect.signature(func).parameters.values())
    if not parameters:
        return NoArgs
    hints = typing.get_type_hints(func)
    annotation = hints.get(parameters[0].name)
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        raise TypeError(
            f"task {func.__qualname__}: its first parameter must be annotated with a "
            "pydantic model (the job's JSON arguments)"
        )
    return annotation


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
    ) -> Callable[[Callable[..., Any]], TaskDefinition[Any]]:
        """Declare a task. Its first parameter's annotation is the arguments model.

        ``retry`` takes what procrastinate takes: a number of attempts, True (forever),
        or a retry strategy.
        """

        def declare(func: Callable[..., Any]) -> TaskDefinition[Any]:
            if name in self.tasks:
                raise ValueError(f"task {name!r} is declared twice")
            definition: TaskDefinition[Any] = TaskDefinition(
                name=name,
                func=func,
                args_model=_args_model_of(func),
                takes_args=bool(inspect.signature(func).parameters),
                queue=queue,
                priority=priority,
                retry=get_retry_strategy(retry),
                lock=lock,
                queueing_lock=queueing_lock,
                description=inspect.getdoc(func) or "",
            )
            self.tasks[name] = definition
            return definition

        return declare

    def __iter__(self) -> Iterator[TaskDefinition[Any]]:
        return iter(self.tasks.values())
