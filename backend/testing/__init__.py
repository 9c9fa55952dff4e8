"""Testing helpers for taskhub's users: run a task in the test's own process, no worker, no
queue (the ``.apply()`` of Celery)::

    from backend.testing import run_task

    def test_sync_assets() -> None:
        run = run_task(sync_assets, {"page_size": 50})
        assert run.result == {"created": 12}
        assert run.progress[-1].done == 50

The pytest plugin (``backend.testing.pytest_plugin``, loaded for every project that installs
taskhub) adds fixtures for a migrated database and for running the jobs a test deferred.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import procrastinate
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from backend.declare.registry import TaskDefinition
from backend.runtime.inprocess import (
    RecordingReporter,
    call_async,
    call_sync,
    detached_app,
    detached_context,
)
from backend.runtime.progress import Progress
from backend.settings import Settings, load_settings
from backend.testing.jobs import run_coroutine

__all__ = ["Progress", "TaskRun", "arun_task", "run_task"]

Args = Mapping[str, Any] | BaseModel


@dataclass
class TaskRun:
    """One in-process run: what the task was given, what it reported, how it ended."""

    task: str
    args: dict[str, Any]  # as a defer stores them (validated JSON)
    job_id: int
    attempt: int
    result: Any = None  # what the worker would store: the return value as JSON
    error: BaseException | None = None
    progress: list[Progress] = field(default_factory=list)

    @property
    def status(self) -> Literal["succeeded", "failed"]:
        return "failed" if self.error is not None else "succeeded"


def _prepare(
    task: TaskDefinition[Any],
    args: Args | None,
    connection_url: str | None,
    settings: Settings | None,
    app_settings: Iterable[BaseSettings],
    job_id: int,
    attempt: int,
) -> tuple[TaskRun, procrastinate.App, procrastinate.JobContext]:
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    stored = task.validate_args({} if args is None else args)  # InvalidJobArguments, as defer
    if settings is None and connection_url is not None:
        settings = load_settings(database_url=connection_url)
    app = detached_app(connection_url)
    run = TaskRun(task=task.name, args=stored, job_id=job_id, attempt=attempt)
    reporter = RecordingReporter()
    run.progress = reporter.reports
    context = detached_context(
        app,
        task,
        stored,
        job_id=job_id,
        attempt=attempt,
        settings=settings,
        app_settings={type(instance): instance for instance in app_settings},
        reporter=reporter,
    )
    return run, app, context


def _finish(run: TaskRun, outcome: Callable[[], Any], raises: bool) -> TaskRun:
    try:
        run.result = outcome()
    except Exception as exc:
        if raises:
            raise
        run.error = exc
    return run


async def arun_task(
    task: TaskDefinition[Any],
    args: Args | None = None,
    *,
    connection_url: str | None = None,
    settings: Settings | None = None,
    app_settings: Iterable[BaseSettings] = (),
    job_id: int = 1,
    attempt: int = 1,
    raises: bool = True,
) -> TaskRun:
    """Run ``task`` once in this event loop (a sync task in a thread, as the worker does).

    ``args`` are validated as a defer validates them (``InvalidJobArguments`` before the task
    runs). ``ctx.connection()`` connects to ``connection_url`` (none given: ``NoDatabase``);
    ``ctx.settings_of(Class)`` returns the instance of ``Class`` in ``app_settings``, else
    reads the environment. The task's exception is raised, or kept in ``run.error`` with
    ``raises=False``.
    """
    run, app, context = _prepare(
        task, args, connection_url, settings, app_settings, job_id, attempt
    )
    try:
        async with app.open_async():
            result = await call_async(task, context)
    except Exception as exc:
        if raises:
            raise
        run.error = exc
    else:
        run.result = result
    return run


def run_task(
    task: TaskDefinition[Any],
    args: Args | None = None,
    *,
    connection_url: str | None = None,
    settings: Settings | None = None,
    app_settings: Iterable[BaseSettings] = (),
    job_id: int = 1,
    attempt: int = 1,
    raises: bool = True,
) -> TaskRun:
    """:func:`arun_task` for plain (sync) tests. A sync task runs in this thread, with no
    event loop (Django's ORM and the test's transaction work in it); an async one in an
    event loop of its own."""
    if task.is_async:
        return run_coroutine(
            arun_task(
                task,
                args,
                connection_url=connection_url,
                settings=settings,
                app_settings=app_settings,
                job_id=job_id,
                attempt=attempt,
                raises=raises,
            )
        )
    run, _app, context = _prepare(
        task, args, connection_url, settings, app_settings, job_id, attempt
    )
    return _finish(run, lambda: call_sync(task, context), raises)
