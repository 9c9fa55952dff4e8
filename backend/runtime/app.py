"""The procrastinate side of declared tasks: the App a worker runs, the functions it calls.

A :class:`~backend.declare.registry.TaskDefinition` is plain data; here it becomes a
procrastinate task with the resolved queue, retry and rate limit, and a function that
validates the stored JSON, calls the task, and stops a sync one at its hard limit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import procrastinate
from procrastinate import JobContext
from psycopg.rows import dict_row
from pydantic import ValidationError

from backend import tracing
from backend.declare.registry import (
    TaskBlueprint,
    TaskDefinition,
    describe_validation_error,
    to_json,
)
from backend.declare.schedules import configured_schedules
from backend.runtime.context import TaskContext, runtime_of
from backend.runtime.isolation import run_in_child
from backend.runtime.manager import TaskhubJobManager
from backend.settings import Settings


def build_task_app(
    url: str, settings: Settings, blueprints: Iterable[TaskBlueprint]
) -> procrastinate.App:
    """A procrastinate App with every declared task, on its own (unopened) pool."""
    connector = procrastinate.PsycopgConnector(
        conninfo=url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs={"row_factory": dict_row},  # tasks get dict rows from TaskContext.connection()
    )
    app = procrastinate.App(connector=connector)
    app.job_manager = TaskhubJobManager(connector)  # fetches skip paused queues
    overrides = settings.rate_limit_overrides()
    periodic_tasks: dict[str, procrastinate.tasks.Task[Any, Any, Any]] = {}
    for declared in (task for blueprint in blueprints for task in blueprint):
        # An operator's TASKHUB_RATE_LIMITS entry replaces the declared limit.
        definition = (
            dataclasses.replace(
                declared,
                declared=dataclasses.replace(
                    declared.declared, rate_limit=overrides[declared.name]
                ),
            )
            if declared.name in overrides
            else declared
        )
        task = app.task(
            name=definition.name,
            queue=definition.queue,
            priority=definition.priority,
            retry=definition.retry or False,
            lock=definition.lock,
            queueing_lock=definition.queueing_lock,
            pass_context=True,
        )(procrastinate_function(definition))
        periodic_tasks[definition.name] = task
    for schedule in configured_schedules(settings, blueprints):
        if schedule.cron:  # ticks computed in TASKHUB_TIMEZONE by the worker's ZonedDeferrer
            app.periodic(cron=schedule.cron, periodic_id=schedule.task_name)(
                periodic_tasks[schedule.task_name]
            )
    return app


def task_arguments(
    definition: TaskDefinition[Any], job_context: JobContext, kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """What the task function is called with: the stored JSON validated by its model, and a
    TaskContext if it asks for one (the worker and backend.testing alike)."""
    if tracing.TRACE_KEY in kwargs:
        kwargs = tracing.split_trace(kwargs)[0]
    try:
        parsed = definition.args_model.model_validate(kwargs)
    except ValidationError as exc:  # its text would quote the input, secrets included
        raise describe_validation_error(exc, ("args",)) from None
    arguments: tuple[Any, ...] = (parsed,) if definition.takes_args else ()
    return (*arguments, TaskContext(job_context)) if definition.takes_context else arguments


def procrastinate_function(definition: TaskDefinition[Any]) -> Callable[..., Any]:
    """The function procrastinate runs: validates the stored JSON, calls the task."""
    func = definition.func

    def call_args(job_context: JobContext, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        return task_arguments(definition, job_context, kwargs)

    # procrastinate passes its JobContext first (the app sets pass_context=True).
    time_limit = definition.time_limit
    if definition.is_async:

        async def run_async(job_context: JobContext, **kwargs: Any) -> Any:
            if not tracing.enabled():
                return to_json(await func(*call_args(job_context, kwargs)))
            kwargs, carrier = tracing.split_trace(kwargs)
            with tracing.run_span(definition.name, job_context.job.id, carrier):
                return to_json(await func(*call_args(job_context, kwargs)))

        runner: Callable[..., Any] = run_async
    else:

        def run_sync(job_context: JobContext, **kwargs: Any) -> Any:
            if not tracing.enabled():
                return run_sync_untraced(job_context, kwargs)
            kwargs, carrier = tracing.split_trace(kwargs)
            with tracing.run_span(definition.name, job_context.job.id, carrier):
                return run_sync_untraced(job_context, kwargs)

        def run_sync_untraced(job_context: JobContext, kwargs: dict[str, Any]) -> Any:
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
    runner.taskhub_definition = definition  # type: ignore[attr-defined]  # see definition_of
    runner.__name__ = getattr(func, "__name__", definition.name)
    runner.__qualname__ = getattr(func, "__qualname__", definition.name)
    runner.__module__ = getattr(func, "__module__", __name__)
    runner.__doc__ = func.__doc__
    return runner


def definition_of(app: procrastinate.App, task_name: str) -> TaskDefinition[Any] | None:
    """The taskhub definition behind one of ``app``'s procrastinate tasks, if any."""
    task = app.tasks.get(task_name)
    definition = getattr(task.func, "taskhub_definition", None) if task else None
    return definition if isinstance(definition, TaskDefinition) else None
