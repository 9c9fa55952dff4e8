"""taskhub's extension of procrastinate's job manager: fetching skips paused queues.

``TaskhubJobManager.fetch_job`` runs procrastinate's fetch query against
``taskhub.fetch_job``, a copy of ``procrastinate_fetch_job_v2`` (migrations/sql/0003) with one
more condition: the job's queue is not in ``taskhub.paused_queues``.
"""

from __future__ import annotations

from collections.abc import Iterable

from procrastinate import jobs
from procrastinate.manager import JobManager

from backend.queries import QUERIES


class TaskhubJobManager(JobManager):
    async def fetch_job(self, queues: Iterable[str] | None, worker_id: int) -> jobs.Job | None:
        row = await self.connector.execute_query_one_async(
            query=QUERIES["fetch_job"], queues=queues, worker_id=worker_id
        )
        # The function always returns a row; all NULL when there was no job to take.
        if row["id"] is None:
            return None
        return jobs.Job.from_row(row)
