"""50,000 jobs over four batching worker processes: each runs exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from backend.defer import batch_defer_sync
from backend.tasks.builtin import ping
from tests.e2e.conftest import TaskhubProcess, clean_env

pytestmark = pytest.mark.e2e

JOBS = 50_000


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs"
            " WHERE task_name = 'taskhub.ping' GROUP BY 1"  # not the periodic maintenance jobs
        ).fetchall()
    return dict(rows)


@pytest.mark.timeout(600)
def test_fifty_thousand_jobs_over_four_processes_each_run_once(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    with psycopg.connect(db_url) as conn:
        for start in range(0, JOBS, 5_000):
            batch_defer_sync(conn, ping, [{"message": n} for n in range(start, start + 5_000)])
            conn.commit()
        conn.execute("ANALYZE procrastinate_jobs")
    env = clean_env(DATABASE_URL=db_url, TASKHUB_WORKER_QUEUES="default")
    workers = spawn(["worker", "--processes", "4"], tmp_path, env)

    deadline = time.monotonic() + 480
    while counts(db_url).get("succeeded", 0) < JOBS:
        assert workers.process.poll() is None, workers.output
        assert time.monotonic() < deadline, f"{counts(db_url)} after 8 minutes"
        time.sleep(0.5)
    with psycopg.connect(db_url) as conn:
        # A finished job keeps its worker's id until that worker unregisters.
        used = conn.execute(
            "SELECT count(DISTINCT worker_id) FROM procrastinate_jobs"
            " WHERE task_name = 'taskhub.ping'"
        ).fetchone()
    assert workers.stop() == 0
    assert used == (4,), "all four processes took jobs"

    assert counts(db_url) == {"succeeded": JOBS}
    with psycopg.connect(db_url) as conn:
        per_job = conn.execute(
            "SELECT started, attempts, count(*) FROM ("
            "  SELECT job.id, job.attempts,"
            "         count(*) FILTER (WHERE event.type = 'started') AS started"
            "    FROM procrastinate_jobs job"
            "    JOIN procrastinate_events event ON event.job_id = job.id"
            "   WHERE job.task_name = 'taskhub.ping'"
            "   GROUP BY job.id, job.attempts"
            ") per_job GROUP BY 1, 2"
        ).fetchall()
        results = conn.execute(
            "SELECT count(*) FILTER (WHERE result.result = job.args->'message')"
            "  FROM procrastinate_jobs job"
            "  JOIN taskhub.job_results result ON result.job_id = job.id"
        ).fetchone()
    # One attempt per job, one 'started' event per attempt.
    assert per_job == [(1, 1, JOBS)]
    assert results == (JOBS,), "every job stored its own result"
