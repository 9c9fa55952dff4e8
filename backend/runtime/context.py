"""What a running task can see and do: its job, progress reports, abort checks.

A task asks for it with a second parameter annotated ``TaskContext``::

    @blueprint.task(name="erp.sync_assets")
    def sync_assets(args: SyncArgs, ctx: TaskContext) -> SyncResult:
        for page in pages:
            ctx.raise_if_aborted()
            ctx.progress(done=n, total=total, message=f"{n}/{total}", created=created)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from procrastinate import App, JobContext, PsycopgConnector
from procrastinate.exceptions import JobAborted
from psycopg_pool import AsyncConnectionPool
from pydantic_settings import BaseSettings

from backend.db import DictConnection
from backend.errors import TaskhubError
from backend.runtime.isolation import SoftTimeLimitExceeded
from backend.runtime.progress import Progress
from backend.settings import Settings, load_settings

RUNTIME_KEY = "taskhub.runtime"
SETTINGS_KEY = "taskhub.settings"
APP_SETTINGS_KEY = "taskhub.app_settings"  # {settings class: instance read at start}
SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class NoDatabase(TaskhubError):
    """A task asked for ``ctx.connection()`` where no database was given (an in-process run)."""


class Reporter(Protocol):
    def report(self, progress: Progress) -> None: ...


@dataclass
class JobRuntime:
    """Per-job state the worker keeps next to procrastinate's JobContext."""

    reporter: Reporter | None = None
    error: BaseException | None = None
    soft_deadline: float | None = None  # time.monotonic() after which the task should stop
    started: bool = False  # the task function was called (before: an abort needs no cancel)
    submitted: bool = False  # the worker has the job's outcome (it waits for its batch)


def runtime_of(job_context: JobContext) -> JobRuntime:
    """The job's runtime state, created on first use."""
    runtime = job_context.additional_context.get(RUNTIME_KEY)
    if not isinstance(runtime, JobRuntime):
        runtime = JobRuntime()
        job_context.additional_context[RUNTIME_KEY] = runtime
    return runtime


class TaskContext:
    def __init__(self, job_context: JobContext) -> None:
        self._job_context = job_context
        self._runtime = runtime_of(job_context)

    @property
    def job_id(self) -> int:
        assert self._job_context.job.id is not None
        return self._job_context.job.id

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, ..."""
        return self._job_context.job.attempts + 1

    def progress(
        self,
        done: int | None = None,
        total: int | None = None,
        message: str | None = None,
        **counters: int,
    ) -> None:
        """Report progress. Cheap: writes are throttled, so call it as often as you like."""
        report = Progress(done=done, total=total, message=message, counters=counters)
        if self._runtime.reporter is not None:
            self._runtime.reporter.report(report)

    @property
    def app(self) -> App:
        """The procrastinate app running this job."""
        return self._job_context.app

    @property
    def settings(self) -> Settings:
        """The worker's settings."""
        settings = self._job_context.additional_context.get(SETTINGS_KEY)
        return settings if isinstance(settings, Settings) else load_settings()

    def settings_of(self, kind: type[SettingsT]) -> SettingsT:
        """An app's settings (the class it declares in ``TaskhubApp.settings``), as the
        worker read and validated them at start."""
        loaded = self._job_context.additional_context.get(APP_SETTINGS_KEY) or {}
        found = loaded.get(kind)
        return found if isinstance(found, kind) else kind()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[DictConnection]:
        """A connection from the worker's pool, in a transaction committed at the block's end.

        The task is the boundary: helpers it calls take this connection and never commit.
        """
        connector = self._job_context.app.connector
        if not isinstance(connector, PsycopgConnector):
            raise NoDatabase(
                "ctx.connection() needs a PostgreSQL database, and this run has none "
                "(backend.testing.run_task: pass connection_url=..., e.g. the "
                "taskhub_database_url fixture)"
            )
        pool = cast(AsyncConnectionPool[DictConnection], connector.pool)
        async with pool.connection() as conn, conn.transaction():
            yield conn

    @property
    def soft_time_limit_exceeded(self) -> bool:
        deadline = self._runtime.soft_deadline
        return deadline is not None and time.monotonic() >= deadline

    def should_abort(self) -> bool:
        """True once an operator cancelled this running job, the worker is shutting down, or
        the task's soft time limit has passed."""
        return self._job_context.should_abort() or self.soft_time_limit_exceeded

    def raise_if_aborted(self) -> None:
        """Stop here if the job was aborted (``JobAborted``) or ran past its soft time limit
        (``SoftTimeLimitExceeded``, which a task may catch to clean up)."""
        if self._job_context.should_abort():
            raise JobAborted("the job was aborted")
        if self.soft_time_limit_exceeded:
            raise SoftTimeLimitExceeded("the task ran past its soft time limit")

    async def checkpoint(self) -> None:
        """For async tasks in long CPU-bound stretches: let an abort through."""
        self.raise_if_aborted()
        await asyncio.sleep(0)
