"""Many workers and a poison job (issue 20, faults 6 and 10): twenty worker processes start
each attempt exactly once and lose nothing; a job that eats all its memory fails after its
attempts without taking its worker down, and another queue keeps its pace.

Faults 5, 7 and 8 are in test_pool_starvation.py and test_workers_faults.py. Worker faults
only: the shared server serves (no server is restarted here)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from backend.defer import batch_defer_sync, defer_sync
from backend.tasks.builtin import ping
from tests.e2e.conftest import TaskhubProcess, clean_env
from tests.e2e.faults import tasks

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

APP = "tests.e2e.faults.tasks"
PROCESSES = 20  # the full size: ~25 s here, batching workers
MB = 1024 * 1024
MANY_JOBS = 50_000


def statuses(url: str, task_name: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs WHERE task_name = %s GROUP BY 1",
            (task_name,),
        ).fetchall()
    return dict(rows)


@pytest.mark.timeout(240)
def test_twenty_worker_processes_start_each_attempt_exactly_once(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    with psycopg.connect(db_url) as conn:
        for start in range(0, MANY_JOBS, 5_000):
            stop = min(start + 5_000, MANY_JOBS)
            batch_defer_sync(conn, ping, [{"message": n} for n in range(start, stop)])
            conn.commit()
        conn.execute("ANALYZE procrastinate_jobs")
    env = clean_env(DATABASE_URL=db_url, TASKHUB_WORKER_QUEUES="default")
    began = time.monotonic()
    workers = spawn(["worker", "--processes", str(PROCESSES)], tmp_path, env)
    deadline = began + 180
    while statuses(db_url, ping.name).get("succeeded", 0) < MANY_JOBS:
        assert workers.process.poll() is None, workers.output
        assert time.monotonic() < deadline, f"{statuses(db_url, ping.name)}\n{workers.output}"
        time.sleep(0.5)
    took = time.monotonic() - began
    with psycopg.connect(db_url) as conn:
        # A finished job keeps its worker's id until that worker unregisters.
        used = conn.execute(
            "SELECT count(DISTINCT worker_id) FROM procrastinate_jobs WHERE task_name = %s",
            (ping.name,),
        ).fetchone()
        per_job = conn.execute(
            "SELECT started, succeeded, attempts, count(*) FROM ("
            "  SELECT job.id, job.attempts,"
            "         count(*) FILTER (WHERE event.type = 'started') AS started,"
            "         count(*) FILTER (WHERE event.type = 'succeeded') AS succeeded"
            "    FROM procrastinate_jobs job"
            "    JOIN procrastinate_events event ON event.job_id = job.id"
            "   WHERE job.task_name = %s"
            "   GROUP BY job.id, job.attempts"
            ") per_job GROUP BY 1, 2, 3",
            (ping.name,),
        ).fetchall()
        results = conn.execute(
            "SELECT count(*) FILTER (WHERE result.result = job.args->'message')"
            "  FROM procrastinate_jobs job"
            "  JOIN taskhub.job_results result ON result.job_id = job.id"
            " WHERE job.task_name = %s",
            (ping.name,),
        ).fetchone()
    assert workers.stop() == 0, workers.output[-5000:]
    print(
        f"\n{MANY_JOBS} jobs on {PROCESSES} worker processes: {took:.1f} s from the start"
        f" ({MANY_JOBS / took:.0f} jobs/s), {used[0] if used else 0} processes took jobs;"
        f" (started, succeeded, attempts, jobs): {per_job}"
    )
    assert statuses(db_url, ping.name) == {"succeeded": MANY_JOBS}, "none lost"
    assert per_job == [(1, 1, 1, MANY_JOBS)], "one attempt, one start, one success per job"
    assert results == (MANY_JOBS,), "every job stored its own result"
    assert used == (PROCESSES,), "every process took jobs"


STEADY = 300  # well-behaved jobs per measure
STEADY_SLEEP = 0.2  # each one's wait: an I/O-bound queue, ~50 jobs/s at concurrency 10
CONCURRENCY = 10


def job_status(conn: psycopg.Connection, job_id: int) -> str | None:
    row = conn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job_id,)
    ).fetchone()
    return row[0] if row else None


def steady_pace(url: str, poison: list[int] | None = None) -> float:
    """Jobs per second of the steady queue, from deferring to the last success; with
    ``poison``, one poison job runs at all times meanwhile: deferred ahead of the steady jobs
    (a higher priority), again as soon as it has failed (their ids appended)."""
    with psycopg.connect(url) as conn:
        ids = batch_defer_sync(
            conn, tasks.work, [{"n": n, "sleep": STEADY_SLEEP} for n in range(STEADY)]
        )
        conn.commit()
    began = time.monotonic()
    done = threading.Event()

    def poisoner() -> None:
        assert poison is not None
        with psycopg.connect(url, autocommit=True) as conn:
            while not done.is_set():
                poison.append(defer_sync(conn, tasks.gobble, {}, priority=10))
                while not done.is_set() and job_status(conn, poison[-1]) != "failed":
                    time.sleep(0.02)

    thread = threading.Thread(target=poisoner, daemon=True)
    if poison is not None:
        thread.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT count(*) FROM procrastinate_jobs"
                    " WHERE id = ANY(%s) AND status = 'succeeded'",
                    (ids,),
                ).fetchone()
                if row and row[0] == STEADY:
                    break
                assert time.monotonic() < began + 60, f"{row} of {STEADY} after 60 s"
                time.sleep(0.05)
    finally:
        done.set()
        if poison is not None:
            thread.join(timeout=5)
    return STEADY / (time.monotonic() - began)


@pytest.mark.timeout(180)
def test_a_poison_job_fails_alone_and_the_other_queue_keeps_its_pace(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    env = clean_env(DATABASE_URL=db_url)
    args = ["--app", APP, "--queues", "poison,steady", "--concurrency", str(CONCURRENCY)]
    worker = spawn(["worker", *args, "--processes", "1"], tmp_path, env)
    worker.wait_for_line("Stop with Ctrl-C.")
    before = steady_pace(db_url)
    poison: list[int] = []
    during = steady_pace(db_url, poison)
    after = steady_pace(db_url)
    rss = psutil.Process(worker.process.pid).memory_info().rss / MB
    deadline = time.monotonic() + 60
    while statuses(db_url, tasks.gobble.name).get("failed", 0) < len(poison):
        assert time.monotonic() < deadline, f"{statuses(db_url, tasks.gobble.name)}"
        time.sleep(0.1)
    with psycopg.connect(db_url) as conn:
        outcomes = conn.execute(
            "SELECT job.attempts,"
            "       ARRAY(SELECT type || '@' || attempt FROM taskhub.job_errors"
            "             WHERE job_id = job.id ORDER BY id) AS errors,"
            "       count(*)"
            "  FROM procrastinate_jobs job WHERE id = ANY(%s) GROUP BY 1, 2",
            (poison,),
        ).fetchall()
        registered = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
    alive = worker.process.poll() is None
    assert worker.stop() == 0, worker.output[-5000:]
    baseline = (before + after) / 2
    print(
        f"\nsteady queue ({STEADY} jobs of {STEADY_SLEEP} s, concurrency {CONCURRENCY}):"
        f" {before:.1f} jobs/s before, {during:.1f} with {len(poison)} poison jobs"
        f" ({during / baseline:.0%} of the mean), {after:.1f} after; worker RSS {rss:.0f} MB;"
        f" poison (attempts, errors, jobs): {outcomes}"
    )
    assert alive, "the worker outlived the poison"
    assert registered == (1,), "one worker throughout: no restart"
    assert outcomes == [(3, ["MemoryError@1", "MemoryError@2", "MemoryError@3"], len(poison))]
    assert during >= 0.9 * baseline, f"{during:.1f} jobs/s against {baseline:.1f}"
