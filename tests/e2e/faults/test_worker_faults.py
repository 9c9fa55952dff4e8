"""Many workers and a poison job (issue 20, faults 6 and 10): twenty worker processes start
each attempt exactly once and lose nothing, five of them killed or not; a job that eats all
its memory (or is killed as by the OOM killer) fails after its attempts without taking its
worker down, and another queue on that worker keeps its pace.

Faults 5, 7 and 8 are in test_pool_starvation.py and test_workers_faults.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from backend.defer import batch_defer_sync, defer_sync
from tests.e2e.conftest import TaskhubProcess, clean_env
from tests.e2e.faults import tasks, worker_tasks
from tests.e2e.faults.server import ThrowawayServer

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

APP = "tests.e2e.faults.tasks"
PROCESSES = 20  # the full size: ~25 s here, batching workers
MB = 1024 * 1024
TALLY = worker_tasks.tally.name
MANY_JOBS = 50_000
FLAKY_EVERY = 10  # one job in ten fails its first attempt and is retried
KILLED = 5
RESCUE_EVERY_SECOND = {
    "TASKHUB_HEARTBEAT_INTERVAL": "0.5",
    "TASKHUB_RESCUE_AFTER": "2",
    "TASKHUB_SCHEDULES": "taskhub.rescue_stalled_jobs=* * * * * *",
}


def statuses(url: str, task_name: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs WHERE task_name = %s GROUP BY 1",
            (task_name,),
        ).fetchall()
    return dict(rows)


def clients(url: str) -> int:
    """Client connections to the server now, this one included."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.timeout(240)
@pytest.mark.parametrize("killed", [0, KILLED], ids=["steady", "five-killed"])
def test_twenty_worker_processes_start_each_attempt_exactly_once(
    spawn: type[TaskhubProcess], tmp_path: Path, pg_server: ThrowawayServer, killed: int
) -> None:
    """On a server of its own: twenty processes' connections (~5 each) would crowd the
    shared one's 100. With ``killed``, that many processes get SIGKILL a third of the way:
    the supervisor restarts them and a rescue every second gives their jobs to others."""
    db_url = pg_server.url
    deferring = time.monotonic()
    with psycopg.connect(db_url) as conn:
        for start in range(0, MANY_JOBS, 5_000):
            stop = min(start + 5_000, MANY_JOBS)
            batch = [{"n": n, "fail_first": n % FLAKY_EVERY == 0} for n in range(start, stop)]
            batch_defer_sync(conn, worker_tasks.tally, batch)
            conn.commit()
        conn.execute("ANALYZE procrastinate_jobs")
    env = clean_env(DATABASE_URL=db_url, **(RESCUE_EVERY_SECOND if killed else {}))
    queues = "tally,maintenance" if killed else "tally"
    began = time.monotonic()
    args = ["--app", worker_tasks.__name__, "--queues", queues, "--processes", str(PROCESSES)]
    workers = spawn(["worker", *args], tmp_path, env)
    deadline = began + 180
    connections = 0
    victims: list[int] = []
    while (succeeded := statuses(db_url, TALLY).get("succeeded", 0)) < MANY_JOBS:
        connections = max(connections, clients(db_url))
        if killed and not victims and succeeded > MANY_JOBS // 3:
            for child in psutil.Process(workers.process.pid).children()[:killed]:
                child.kill()
                victims.append(child.pid)
        assert workers.process.poll() is None, workers.output
        assert time.monotonic() < deadline, f"{statuses(db_url, TALLY)}\n{workers.output}"
        time.sleep(0.5)
    took = time.monotonic() - began
    checking = time.monotonic()
    with psycopg.connect(db_url) as conn:
        # A finished job keeps its worker's id until that worker unregisters.
        used = conn.execute(
            "SELECT count(DISTINCT worker_id) FROM procrastinate_jobs WHERE task_name = %s",
            (TALLY,),
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
            ") per_job GROUP BY 1, 2, 3 ORDER BY 1",
            (TALLY,),
        ).fetchall()
        results = conn.execute(
            "SELECT count(*) FILTER (WHERE result.result = job.args->'n')"
            "  FROM procrastinate_jobs job"
            "  JOIN taskhub.job_results result ON result.job_id = job.id"
            " WHERE job.task_name = %s",
            (TALLY,),
        ).fetchone()
        unsound = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs job"
            "  LEFT JOIN (SELECT job_id,"
            "                    count(*) FILTER (WHERE type = 'started') AS started,"
            "                    count(*) FILTER (WHERE type = 'succeeded') AS succeeded"
            "               FROM procrastinate_events GROUP BY job_id) event"
            "         ON event.job_id = job.id"
            "  LEFT JOIN (SELECT job_id, count(*) AS errors FROM taskhub.job_errors"
            "              GROUP BY job_id) error ON error.job_id = job.id"
            " WHERE job.task_name = %s"
            "   AND (event.started IS DISTINCT FROM job.attempts"
            "        OR event.succeeded IS DISTINCT FROM 1"
            "        OR coalesce(error.errors, 0) <> job.attempts - 1)",
            (TALLY,),
        ).fetchone()
        errors = conn.execute(
            "SELECT error.type, count(*) FROM taskhub.job_errors error"
            "  JOIN procrastinate_jobs job ON job.id = error.job_id"
            " WHERE job.task_name = %s GROUP BY 1 ORDER BY 1",
            (TALLY,),
        ).fetchall()
    checked = time.monotonic() - checking
    assert workers.stop() == 0, workers.output[-5000:]
    print(
        f"\ndeferred in {began - deferring:.1f} s, checked in {checked:.1f} s;"
        f" {MANY_JOBS} jobs on {PROCESSES} worker processes: {took:.1f} s from the start"
        f" ({MANY_JOBS / took:.0f} jobs/s), {used[0] if used else 0} processes took jobs,"
        f" at most {connections} connections; {len(victims)} killed;"
        f" (started, succeeded, attempts, jobs): {per_job}; errors {errors}"
    )
    assert statuses(db_url, TALLY) == {"succeeded": MANY_JOBS}, "none lost"
    assert unsound == (0,), "per job: a start per attempt, one success, an error per retry"
    assert results == (MANY_JOBS,), "every job stored its own result"
    flaky = MANY_JOBS // FLAKY_EVERY
    if not killed:
        # Retried jobs twice, the rest once.
        assert per_job == [(1, 1, 1, MANY_JOBS - flaky), (2, 1, 2, flaky)]
        assert errors == [("FirstAttemptFailed", flaky)], "each planned failure recorded once"
        assert used == (PROCESSES,), "every process took jobs"
    else:
        assert len(victims) == killed
        by_type = {str(kind): int(count) for kind, count in errors}
        lost = by_type.get("WorkerLost", 0)
        assert set(by_type) == {"FirstAttemptFailed", "WorkerLost"}
        # A flaky job whose first attempt was lost to a kill succeeds on its second.
        assert flaky - lost <= by_type["FirstAttemptFailed"] <= flaky
        assert lost > 0, "the killed processes had jobs in flight"


STEADY_RATE = 40  # steady jobs deferred per second: 80% of the worker's capacity
STEADY = 320  # steady jobs per measure: 8 s of arrivals
STEADY_SLEEP = 0.2  # each one's wait: an I/O-bound queue, 50 jobs/s at concurrency 10
CONCURRENCY = 10


def job_status(conn: psycopg.Connection, job_id: int) -> str | None:
    row = conn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job_id,)
    ).fetchone()
    return row[0] if row else None


def steady_pace(
    url: str, poison_task: Any = None, poisoned: list[int] | None = None
) -> tuple[float, float]:
    """(jobs per second, p95 seconds from deferring to success) of the steady queue, its jobs
    arriving at STEADY_RATE, from the first deferred to the last success. With
    ``poison_task``, one poison job runs at all times meanwhile: deferred ahead of the steady
    jobs (a higher priority), again as soon as it has failed (their ids appended)."""
    done = threading.Event()

    def poisoner() -> None:
        assert poisoned is not None
        with psycopg.connect(url, autocommit=True) as conn:
            while not done.is_set():
                poisoned.append(defer_sync(conn, poison_task, {}, priority=10))
                while not done.is_set() and job_status(conn, poisoned[-1]) != "failed":
                    time.sleep(0.02)

    thread = threading.Thread(target=poisoner, daemon=True)
    if poisoned is not None:
        thread.start()
        time.sleep(0.5)  # the poison is running when the steady jobs arrive
    ids: list[int] = []
    began = time.monotonic()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            step = STEADY_RATE // 10  # a batch every 0.1 s
            for tick, start in enumerate(range(0, STEADY, step), 1):
                batch = [{"n": n, "sleep": STEADY_SLEEP} for n in range(start, start + step)]
                ids += batch_defer_sync(conn, tasks.work, batch)
                time.sleep(max(began + tick / 10 - time.monotonic(), 0))
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
            took = time.monotonic() - began
            latency = conn.execute(
                "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds) FROM ("
                "  SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')"
                "                          - min(at) FILTER (WHERE type = 'deferred')) AS seconds"
                "    FROM procrastinate_events WHERE job_id = ANY(%s) GROUP BY job_id) per_job",
                (ids,),
            ).fetchone()
    finally:
        done.set()
        if poisoned is not None:
            thread.join(timeout=5)
    assert latency is not None
    return STEADY / took, float(latency[0])


POISONS = {
    # the child's address space capped: its allocations fail
    "MemoryError": tasks.gobble,
    # the child killed outright, as by the kernel's OOM killer: it cannot say why
    "ChildDied": worker_tasks.oom_killed,
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("error", POISONS)
def test_a_poison_job_fails_alone_and_the_other_queue_keeps_its_pace(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str, error: str
) -> None:
    poison_task = POISONS[error]
    env = clean_env(DATABASE_URL=db_url)
    args = [
        "--app",
        APP,
        "--app",
        worker_tasks.__name__,
        "--queues",
        "poison,steady",
        "--concurrency",
        str(CONCURRENCY),
    ]
    worker = spawn(["worker", *args, "--processes", "1"], tmp_path, env)
    worker.wait_for_line("Stop with Ctrl-C.")
    before = steady_pace(db_url)
    poisoned: list[int] = []
    during = steady_pace(db_url, poison_task, poisoned)
    after = steady_pace(db_url)
    rss = psutil.Process(worker.process.pid).memory_info().rss / MB
    deadline = time.monotonic() + 60
    while statuses(db_url, poison_task.name).get("failed", 0) < len(poisoned):
        assert time.monotonic() < deadline, f"{statuses(db_url, poison_task.name)}"
        time.sleep(0.1)
    with psycopg.connect(db_url) as conn:
        outcomes = conn.execute(
            "SELECT job.attempts,"
            "       ARRAY(SELECT type || '@' || attempt FROM taskhub.job_errors"
            "             WHERE job_id = job.id ORDER BY id) AS errors,"
            "       count(*)"
            "  FROM procrastinate_jobs job WHERE id = ANY(%s) GROUP BY 1, 2",
            (poisoned,),
        ).fetchall()
        registered = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
    alive = worker.process.poll() is None
    assert worker.stop() == 0, worker.output[-5000:]
    baseline = (before[0] + after[0]) / 2
    print(
        f"\nsteady queue ({STEADY} jobs of {STEADY_SLEEP} s arriving at {STEADY_RATE}/s,"
        f" concurrency {CONCURRENCY}): {before[0]:.1f} jobs/s (p95 {before[1]:.2f} s) before,"
        f" {during[0]:.1f} (p95 {during[1]:.2f} s) with {len(poisoned)} poison jobs"
        f" ({during[0] / baseline:.0%} of the mean), {after[0]:.1f} (p95 {after[1]:.2f} s)"
        f" after; worker RSS {rss:.0f} MB; poison (attempts, errors, jobs): {outcomes}"
    )
    assert alive, "the worker outlived the poison"
    assert registered == (1,), "one worker throughout: no restart"
    assert outcomes == [(3, [f"{error}@1", f"{error}@2", f"{error}@3"], len(poisoned))]
    assert during[0] >= 0.9 * baseline, f"{during[0]:.1f} jobs/s against {baseline:.1f}"
    assert during[1] < max(before[1], after[1]) + 0.5, "its jobs wait no longer for a slot"
