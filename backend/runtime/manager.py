"""taskhub's extension of procrastinate's job manager: fetching in batches, skipping paused queues.

``fetch_jobs`` takes up to N jobs in one statement (``fetch_jobs`` in backend/sql/queries.sql),
by procrastinate's rules plus one: a paused queue's jobs wait. ``fetch_job`` (one job, for
callers of procrastinate's own API) goes through ``taskhub.fetch_job``, a copy of
``procrastinate_fetch_job_v2`` (migrations/sql/0003) with the same paused-queue test.
``listen_for_jobs`` hands the worker procrastinate's notifications without an asyncio task
for each one. ``defer_periodic_job`` goes through ``taskhub.defer_periodic_job`` (migration
0016): a schedule's ticks only move forward, whatever the deferring worker's clock says.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

import psycopg
from procrastinate import exceptions, jobs
from procrastinate.connector import LISTEN_TIMEOUT
from procrastinate.manager import JobManager, get_channel_for_queues
from psycopg import sql

from backend.queries import QUERIES
from backend.runtime.connection import DedicatedConnection
from backend.runtime.outages import FIRST_PAUSE, LAST_PAUSE

logger = logging.getLogger(__name__)


class TaskhubJobManager(JobManager):
    async def listen_for_jobs(
        self, *, on_notification: Any, queues: Iterable[str] | None = None
    ) -> None:
        """procrastinate's listener, as cheap per notification as psycopg makes it.

        Every deferred job sends a NOTIFY, and a bulk enqueue of 20,000 jobs sends 20,000 to
        every listening worker. procrastinate waits for each one under ``asyncio.wait_for``
        (an asyncio task per notification) and formats a debug line for it: 15% of a busy
        worker's CPU after a bulk enqueue. Here psycopg's ``notifies`` generator hands them
        over as they are read; as procrastinate, the connection is checked when none came for
        ``LISTEN_TIMEOUT`` seconds and reopened when it breaks.
        """
        channels = list(get_channel_for_queues(queues=queues))
        listening = DedicatedConnection.like_pool_of(self.connector)
        pause = FIRST_PAUSE
        broke = False
        try:
            while True:
                try:
                    conn = await listening.open()
                    async with listening.answered(conn):
                        for channel in channels:
                            listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel))
                            await conn.execute(listen)
                    if broke:
                        # Jobs deferred while nobody listened sent their NOTIFY to no one:
                        # fetch now rather than at the next poll.
                        await on_notification(
                            channel=channels[0], notification={"type": "job_inserted"}
                        )
                        broke = False
                    while True:
                        notifies = conn.notifies(timeout=LISTEN_TIMEOUT)
                        try:
                            async for notify in notifies:
                                notification = json.loads(notify.payload)
                                await on_notification(
                                    channel=notify.channel, notification=notification
                                )
                        finally:
                            # Hands the connection's lock back even when cancelled mid-way.
                            await notifies.aclose()
                        async with listening.answered(conn):
                            await conn.execute("SELECT 1")
                        pause = FIRST_PAUSE
                except psycopg.OperationalError as exc:
                    # Jobs deferred meanwhile are fetched when LISTEN is back, or at the
                    # next poll (TASKHUB_FETCH_POLLING_INTERVAL) if that comes first.
                    logger.warning("the LISTEN connection broke (%s): listening again", exc)
                    await listening.close()
                    broke = True
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, LAST_PAUSE)
        finally:
            await listening.close()

    async def defer_periodic_job(
        self, job: jobs.Job, periodic_id: str, defer_timestamp: int
    ) -> int | None:
        """procrastinate's (3.10), through ``taskhub.defer_periodic_job``: None when the tick
        was deferred already, or is older than the newest one deferred."""
        if job.task_kwargs.get("timestamp") != defer_timestamp:
            raise exceptions.InvalidTimestamp
        try:
            row = await self.connector.execute_query_one_async(
                query=QUERIES["defer_periodic_job"],
                task_name=job.task_name,
                defer_timestamp=defer_timestamp,
                periodic_id=periodic_id,
                queue=job.queue,
                priority=job.priority,
                lock=job.lock,
                queueing_lock=job.queueing_lock,
                args=job.task_kwargs,
            )
        except exceptions.UniqueViolation as exc:
            self._raise_already_enqueued(exc=exc, queueing_lock=job.queueing_lock)
        job_id: int | None = row["id"]
        return job_id

    async def fetch_job(self, queues: Iterable[str] | None, worker_id: int) -> jobs.Job | None:
        row = await self.connector.execute_query_one_async(
            query=QUERIES["fetch_job"], queues=queues, worker_id=worker_id
        )
        # The function always returns a row; all NULL when there was no job to take.
        if row["id"] is None:
            return None
        return jobs.Job.from_row(row)

    async def fetch_jobs(
        self,
        connection: DedicatedConnection,
        *,
        queues: Iterable[str] | None,
        worker_id: int,
        count: int,
    ) -> list[jobs.Job]:
        """Up to ``count`` jobs, now ``doing`` for ``worker_id``, in the order they must start."""
        rows = await connection.fetch_all(
            QUERIES["fetch_jobs"],
            {"queues": list(queues) if queues else None, "worker_id": worker_id, "count": count},
        )
        fetched = [jobs.Job.from_row(row) for row in rows]
        fetched.sort(key=lambda job: (-job.priority, job.id or 0))
        return fetched
