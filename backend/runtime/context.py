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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

from procrastinate import App, JobContext, PsycopgConnector
from procrastinate.exceptions import JobAborted
from psycopg_pool import AsyncConnectionPool

from backend.db import DictConnection
from backend.runtime.progress import Progress, ProgressReporter
from backend.settings import Settings, load_settings

RUNTIME_KEY = "taskhub.runtime"
SETTINGS_KEY = "taskhub.settings"


@dataclass
class JobRuntime:
    """Per-job state the worker keeps next to procrastinate's JobContext."""

    reporter: ProgressReporter | None = None
    error: BaseException | None = None


class TaskContext:
    def __init__(self, job_context: JobContext) -> None:
        self._job_context = job_context
        runtime = job_context.additional_context.get(RUNTIME_KEY)
        self._runtime: JobRuntime = runtime if isinstance(runtime, JobRuntime) else JobRuntime()

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

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[DictConnection]:
        """A connection from the worker's pool, in a transaction committed at the block's end.

        The task is the boundary: helpers it calls take this connection and never commit.
        """
        connector = self._job_context.app.connector
        assert isinstance(connector, PsycopgConnector)
        pool = cast(AsyncConnectionPool[DictConnection], connector.pool)
        async with pool.connection() as conn, conn.transaction():
            yield conn

    def should_abort(self) -> bool:
        """True once an operator cancelled this running job (or the worker is shutting down)."""
        return self._job_context.should_abort()

    def raise_if_aborted(self) -> None:
        """For sync tasks: stop here if the job was aborted. Async tasks are cancelled for you."""
        if self.should_abort():
            raise JobAborted("the job was aborted")

    async def checkpoint(self) -> None:
        """For async tasks in long CPU-bound stretches: let an abort through."""
        self.raise_if_aborted()
        await asyncio.sleep(0)
