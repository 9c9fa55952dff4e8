"""taskhub's extension of procrastinate's job manager: fetching in batches, skipping paused queues.

``fetch_jobs`` takes up to N jobs in one statement (``fetch_jobs`` in backend/sql/queries.sql),
by procrastinate's rules plus one: a paused queue's jobs wait. ``fetch_job`` (one job, for
callers of procrastinate's own API) goes through ``taskhub.fetch_job``, a copy of
``procrastinate_fetch_job_v2`` (migrations/sql/0003) with the same paused-queue test.
"""

from __future__ import annotations

from collections.abc import Iterable

from procrastinate import jobs
from procrastinate.manager import JobManager

from backend.queries import QUERIES
from backend.runtime.connection import DedicatedConnection


class TaskhubJobManager(JobManager):
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
