"""Running tasks outside a long-lived worker: one task function in the caller's process (the
``.apply()`` of Celery), and a worker that runs the jobs due now and stops (``wait=False``).

For :mod:`backend.testing`: both build procrastinate objects (a ``JobContext``, a worker
subclass), so they live here, next to the worker they imitate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import procrastinate
from procrastinate import JobContext
from procrastinate.jobs import Job
from procrastinate.testing import InMemoryConnector
from psycopg.rows import dict_row
from pydantic_settings import BaseSettings

from backend.declare.registry import TaskDefinition, to_json
from backend.runtime.app import task_arguments
from backend.runtime.context import APP_SETTINGS_KEY, SETTINGS_KEY, runtime_of
from backend.runtime.progress import Progress
from backend.runtime.worker import TaskhubWorker
from backend.settings import Settings


class RecordingReporter:
    """Keeps every progress report, in order, where the worker would write the last one."""

    def __init__(self) -> None:
        self.reports: list[Progress] = []

    def report(self, progress: Progress) -> None:
        self.reports.append(progress)


def detached_app(connection_url: str | None) -> procrastinate.App:
    """An App for one in-process run: on ``connection_url`` (a small pool, dict rows as the
    worker's), else on procrastinate's in-memory connector (``ctx.connection()`` refuses)."""
    connector: procrastinate.BaseConnector = (
        procrastinate.PsycopgConnector(
            conninfo=connection_url, min_size=1, max_size=2, kwargs={"row_factory": dict_row}
        )
        if connection_url is not None
        else InMemoryConnector()
    )
    return procrastinate.App(connector=connector)


def detached_context(
    app: procrastinate.App,
    definition: TaskDefinition[Any],
    stored_args: dict[str, Any],
    *,
    job_id: int,
    attempt: int,
    settings: Settings | None,
    app_settings: Mapping[type[BaseSettings], BaseSettings],
    reporter: RecordingReporter,
) -> JobContext:
    """The JobContext a worker would give this job, with no worker and no row behind it."""
    job = Job(
        id=job_id,
        status="doing",
        queue=definition.queue,
        priority=definition.priority,
        lock=definition.lock,
        queueing_lock=definition.queueing_lock,
        task_name=definition.name,
        task_kwargs=stored_args,
        attempts=attempt - 1,
    )
    additional: dict[str, Any] = {APP_SETTINGS_KEY: dict(app_settings)}
    if settings is not None:
        additional[SETTINGS_KEY] = settings
    context = JobContext(
        app=app,
        worker_name="taskhub.testing",
        job=job,
        start_timestamp=time.time(),
        additional_context=additional,
        abort_reason=lambda: None,
    )
    runtime_of(context).reporter = reporter
    return context


def call_sync(definition: TaskDefinition[Any], context: JobContext) -> Any:
    """The task's function on the worker's arguments, its result as the worker stores it."""
    return to_json(definition.func(*task_arguments(definition, context, context.job.task_kwargs)))


async def call_async(definition: TaskDefinition[Any], context: JobContext) -> Any:
    """Like :func:`call_sync`; a sync task runs in a thread, as the worker runs it."""
    if not definition.is_async:
        return await asyncio.to_thread(call_sync, definition, context)
    arguments = task_arguments(definition, context, context.job.task_kwargs)
    return to_json(await definition.func(*arguments))


class DrainingWorker(TaskhubWorker):
    """taskhub's worker that defers no periodic ticks: it runs what is due, nothing more."""

    async def _periodic_deferrer(self) -> None:
        return None


async def run_due_jobs(
    app: procrastinate.App,
    settings: Settings,
    app_settings: Mapping[type[BaseSettings], BaseSettings],
    *,
    queues: list[str] | None = None,
    concurrency: int = 1,
) -> int:
    """Run the jobs due now, and those they make due, until none is left; the number run.

    A job held by a lock, or retried at once, becomes due only when the previous finish
    commits, after the worker's last fetch: so workers run one after another until one finds
    nothing.
    """
    total = 0
    async with app.open_async():
        while True:
            worker = DrainingWorker(
                app=app,
                queues=queues,
                concurrency=concurrency,
                wait=False,
                listen_notify=False,
                install_signal_handlers=False,
                fetch_job_polling_interval=settings.fetch_polling_interval,
                shutdown_graceful_timeout=settings.shutdown_grace_period,
                update_heartbeat_interval=settings.heartbeat_interval,
                stalled_worker_timeout=settings.rescue_after,
                additional_context={
                    SETTINGS_KEY: settings,
                    APP_SETTINGS_KEY: dict(app_settings),
                },
            )
            await worker.run()
            if worker.jobs_done == 0:
                return total
            total += worker.jobs_done
