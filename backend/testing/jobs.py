"""Run the jobs a test deferred with a real taskhub worker, in-process, until none is due."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from backend.control.jobs import JobView, get_job
from backend.declare.apps import LoadedApps
from backend.queries import QUERIES
from backend.runtime.app import build_task_app
from backend.runtime.inprocess import run_due_jobs
from backend.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class JobOutcome:
    """Where one job that ran ended: ``status`` is procrastinate's (``todo`` for a job that
    failed and waits for its retry)."""

    id: int
    task: str
    status: str
    result: Any
    error: str | None  # "Type: message" of its last failed attempt
    attempts: int
    view: JobView  # everything else: args, progress, every error with its traceback


class JobRunner:
    """``runner()`` in a sync test, ``await runner.arun()`` in an async one."""

    def __init__(self, url: str, settings: Settings, apps: LoadedApps) -> None:
        self.url = url
        self.settings = settings
        self.apps = apps

    def __call__(
        self, *, queues: list[str] | None = None, concurrency: int = 1
    ) -> list[JobOutcome]:
        return run_coroutine(self.arun(queues=queues, concurrency=concurrency))

    async def arun(
        self, *, queues: list[str] | None = None, concurrency: int = 1
    ) -> list[JobOutcome]:
        """Run every committed job due now in ``queues`` (all by default), and the jobs those
        defer, until none is due; their outcomes in the order they first started. Jobs
        scheduled later, and retries waiting for their time, stay ``todo``."""
        async with await psycopg.AsyncConnection.connect(
            self.url, row_factory=dict_row, autocommit=True
        ) as conn:
            cursor = await conn.execute(QUERIES["testing_last_event"])
            row = await cursor.fetchone()
            assert row is not None
            app = build_task_app(self.url, self.settings, self.apps.blueprints)
            await run_due_jobs(
                app, self.settings, self.apps.settings, queues=queues, concurrency=concurrency
            )
            cursor = await conn.execute(QUERIES["testing_jobs_started_since"], {"after": row["id"]})
            started = [item["id"] for item in await cursor.fetchall()]
            return [outcome(await get_job(conn, job_id)) for job_id in started]


def outcome(view: JobView) -> JobOutcome:
    error = view.last_error
    return JobOutcome(
        id=view.id,
        task=view.task,
        status=view.status.value,
        result=view.result,
        error=f"{error.type}: {error.message}" if error is not None else None,
        attempts=view.attempts,
        view=view,
    )


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, or in a thread of its own when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
