"""Pruning a million finished jobs does not slow the workers down: a real `taskhub worker`
drains a backlog of new jobs at the same pace while another one runs `taskhub.prune_jobs` as
while it does not.

The pruning worker is stopped (SIGSTOP, between two batches) and continued in turns, so the
windows with and without pruning interleave: a machine whose speed drifts (other tenants, CPU
steal) then weighs on both alike. Rates are counted from the succeeded events the worker
writes, over windows read on the database's clock, the clock of those events.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from backend import defer
from backend.tasks.maintenance import prune_jobs
from tests.e2e.conftest import TaskhubProcess, clean_env, wait_status

pytestmark = pytest.mark.e2e

FINISHED_JOBS = 1_000_000
BACKLOG = 1_000_000  # new no-op jobs: more than the worker can run while the test measures
WARM_UP = 5.0  # seconds of work not measured
ON = 20.0  # seconds the pruning runs in each turn
OFF = 5.0  # seconds it is stopped
MAX_SLOWDOWN = 0.20
PRUNER = "taskhub-pruner"  # the pruning worker's application_name in pg_stat_activity

# 1,000,000 jobs that finished one after the other, 0.1 s apart, over the day before 8 days ago
# (the failed ones before 31 days ago), each with its deferred, started (not the cancelled
# ones) and finished events; half the succeeded ones with a result, a tenth with progress, the
# failed ones with an error, one in a thousand with an audit row. Loaded as a replica would (no
# triggers, no foreign-key checks), the events' secondary indexes built afterwards.
LOAD_FINISHED_JOBS = [
    "SET LOCAL session_replication_role = replica",
    "SET LOCAL maintenance_work_mem = '256MB'",
    f"""
    INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts)
    SELECT 'archive', 'archive.old', jsonb_build_object('n', g),
           (CASE WHEN g % 20 < 14 THEN 'succeeded' WHEN g % 20 < 18 THEN 'failed'
                 WHEN g % 20 = 18 THEN 'cancelled' ELSE 'aborted' END)::procrastinate_job_status,
           CASE WHEN g % 20 = 18 THEN 0 ELSE 1 END
      FROM generate_series(1, {FINISHED_JOBS}) g
    """,
    f"""
    CREATE TEMP TABLE loaded ON COMMIT DROP AS
    SELECT id, status,
           now() - CASE WHEN status = 'failed' THEN interval '31 days' ELSE interval '8 days' END
                 - ({FINISHED_JOBS} - id) * interval '100 ms' AS finished
      FROM procrastinate_jobs WHERE queue_name = 'archive'
    """,
    "DROP INDEX procrastinate_events_job_id_fkey_v1",
    "DROP INDEX taskhub_events_finished_idx",
    """
    INSERT INTO procrastinate_events (job_id, type, at)
    SELECT id, step.type::procrastinate_job_event_type, finished - step.before
      FROM loaded,
           LATERAL (VALUES ('deferred', interval '60 s'), ('started', interval '30 s'),
                           (status::text, interval '0 s')) AS step(type, before)
     WHERE NOT (status = 'cancelled' AND step.type = 'started')
    """,
    "CREATE INDEX procrastinate_events_job_id_fkey_v1 ON procrastinate_events (job_id)",
    """
    CREATE INDEX taskhub_events_finished_idx ON procrastinate_events (type, at, id)
        WHERE type IN ('succeeded', 'failed', 'cancelled', 'aborted')
    """,
    """
    INSERT INTO taskhub.job_results (job_id, result, created_at)
    SELECT id, jsonb_build_object('total', id), finished
      FROM loaded WHERE status = 'succeeded' AND id % 2 = 0
    """,
    """
    INSERT INTO taskhub.job_progress (job_id, done, total, message, updated_at)
    SELECT id, 10, 10, 'done', finished FROM loaded WHERE id % 10 = 0
    """,
    """
    INSERT INTO taskhub.job_errors (job_id, attempt, type, message, created_at)
    SELECT id, 1, 'ValueError', 'boom', finished FROM loaded WHERE status = 'failed'
    """,
    """
    INSERT INTO taskhub.audit_log (actor, action, job_id)
    SELECT 'test', 'retry', id FROM loaded WHERE id % 1000 = 0
    """,
]

# taskhub.ping no-ops, waiting; inserted without triggers, as no worker listens yet.
LOAD_BACKLOG = [
    "SET LOCAL session_replication_role = replica",
    f"""
    INSERT INTO procrastinate_jobs (queue_name, task_name, args)
    SELECT 'default', 'taskhub.ping', jsonb_build_object('message', g)
      FROM generate_series(1, {BACKLOG}) g
    """,
]


def run_in_one_transaction(url: str, statements: list[str]) -> None:
    with psycopg.connect(url) as conn:
        for statement in statements:
            conn.execute(statement.encode())
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")
        conn.execute("CHECKPOINT")


def fetch(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query.encode(), params).fetchone()
    assert row is not None
    return next(iter(row.values()))


def succeeded(conn: psycopg.Connection[Any], first_id: int, start: Any, end: Any) -> int:
    """How many new jobs succeeded between two database times."""
    return int(
        fetch(
            conn,
            "SELECT count(*) FROM procrastinate_events WHERE type = 'succeeded'"
            " AND at >= %s AND at < %s AND job_id >= %s",
            (start, end, first_id),
        )
    )


def per_second(
    conn: psycopg.Connection[Any], first_id: int, windows: list[tuple[Any, Any]]
) -> float:
    """New jobs per second that succeeded within ``windows``, taken together."""
    done = sum(succeeded(conn, first_id, start, end) for start, end in windows)
    seconds: float = sum((end - start).total_seconds() for start, end in windows)
    return done / seconds


def now(conn: psycopg.Connection[Any]) -> Any:
    return fetch(conn, "SELECT clock_timestamp()")


PRUNER_ACTIVE = (
    "SELECT count(*) > 0 FROM pg_stat_activity"
    f" WHERE application_name = '{PRUNER}' AND state = 'active'"
)
PRUNER_BUSY = (
    "SELECT count(*) > 0 FROM pg_stat_activity"
    f" WHERE application_name = '{PRUNER}' AND state <> 'idle'"
)


def stop_between_batches(conn: psycopg.Connection[Any], pruner: TaskhubProcess) -> None:
    """SIGSTOP the pruning worker at a moment none of its connections is in a transaction
    (between two batches, or in the pause after one): stopped, it holds no lock, no snapshot
    and no transaction id that could slow the other worker down."""
    while True:
        pruner.process.send_signal(signal.SIGSTOP)
        # A statement sent just before the stop still runs to its end.
        deadline = time.monotonic() + 10
        while fetch(conn, PRUNER_ACTIVE) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not fetch(conn, PRUNER_BUSY):
            return
        pruner.process.send_signal(signal.SIGCONT)
        time.sleep(0.05)


def finished(conn: psycopg.Connection[Any], job_id: int) -> bool:
    return bool(
        fetch(
            conn,
            "SELECT status <> 'todo' AND status <> 'doing' FROM procrastinate_jobs WHERE id = %s",
            (job_id,),
        )
    )


def finished_at(conn: psycopg.Connection[Any], job_id: int) -> Any:
    return fetch(
        conn,
        "SELECT max(at) FROM procrastinate_events WHERE job_id = %s AND type = 'succeeded'",
        (job_id,),
    )


@pytest.mark.timeout(900)
def test_pruning_a_million_jobs_keeps_the_workers_pace(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    loading = time.monotonic()
    run_in_one_transaction(db_url, LOAD_FINISHED_JOBS)
    run_in_one_transaction(db_url, LOAD_BACKLOG)
    loaded = time.monotonic() - loading
    without: list[tuple[Any, Any]] = []
    with_pruning: list[tuple[Any, Any]] = []
    with psycopg.connect(db_url, row_factory=dict_row, autocommit=True) as conn:
        first_id = fetch(
            conn, "SELECT min(id) FROM procrastinate_jobs WHERE task_name = 'taskhub.ping'"
        )
        assert first_id > FINISHED_JOBS
        loaded_at = now(conn)
        # The one run measured, waiting for the pruning worker; the workers' own schedule of
        # it is off.
        prune_id = defer.defer_sync(conn, prune_jobs, {})
        env = clean_env(
            DATABASE_URL=db_url,
            TASKHUB_LOG_LEVEL="WARNING",
            TASKHUB_SCHEDULES="taskhub.prune_jobs=off",
        )
        # One process at concurrency 10, as when the test was written: a worker that leaves the
        # machine room for the pruner, so the figure is pruning's cost, not a fight for cores.
        worker = spawn(
            ["worker", "--queues", "default", "--processes", "1", "--concurrency", "10"],
            tmp_path,
            env,
        )
        while not succeeded(conn, first_id, loaded_at, now(conn)):
            time.sleep(0.1)
        time.sleep(WARM_UP)
        start = now(conn)
        time.sleep(OFF * 2)
        without.append((start, now(conn)))

        pruner = spawn(
            ["worker", "--queues", "maintenance", "--processes", "1", "--concurrency", "1"],
            tmp_path,
            {**env, "PGAPPNAME": PRUNER},
        )
        try:
            while True:
                start = now(conn)
                deadline = time.monotonic() + ON
                while time.monotonic() < deadline and not finished(conn, prune_id):
                    time.sleep(0.2)
                with_pruning.append((start, now(conn)))
                if finished(conn, prune_id):
                    break
                stop_between_batches(conn, pruner)
                start = now(conn)
                time.sleep(OFF)
                without.append((start, now(conn)))
                pruner.process.send_signal(signal.SIGCONT)
        finally:
            pruner.process.send_signal(signal.SIGCONT)
        job = wait_status(db_url, prune_id, "succeeded", timeout=5)
        report: dict[str, Any] = job["result"]
        # The last window ends with the pruning.
        with_pruning[-1] = (with_pruning[-1][0], finished_at(conn, prune_id))
        start = now(conn)
        time.sleep(OFF * 2)
        without.append((start, now(conn)))

        rates = {
            "without pruning": per_second(conn, first_id, without),
            "with pruning": per_second(conn, first_id, with_pruning),
        }
        waiting = fetch(
            conn,
            "SELECT count(*) FROM procrastinate_jobs"
            " WHERE task_name = 'taskhub.ping' AND status = 'todo'",
        )
        left = fetch(conn, "SELECT count(*) FROM procrastinate_jobs WHERE id < %s", (first_id,))
        left_rows = fetch(
            conn,
            "SELECT (SELECT count(*) FROM procrastinate_events WHERE job_id < %(id)s)"
            " + (SELECT count(*) FROM taskhub.job_results WHERE job_id < %(id)s)"
            " + (SELECT count(*) FROM taskhub.job_progress WHERE job_id < %(id)s)"
            " + (SELECT count(*) FROM taskhub.job_errors WHERE job_id < %(id)s)",
            {"id": first_id},
        )
        audit = fetch(conn, "SELECT count(*) FROM taskhub.audit_log WHERE actor = 'test'")
    assert pruner.stop() == 0
    assert worker.stop() == 0

    pruning_seconds = sum((end - start).total_seconds() for start, end in with_pruning)
    pause_seconds = sum((end - start).total_seconds() for start, end in without)
    figures = "\n".join(
        [
            f"loaded {FINISHED_JOBS:,} finished jobs and {BACKLOG:,} new ones in {loaded:.0f} s",
            f"pruning deleted {report['jobs']:,} jobs in {report['seconds']:.0f} s, of which"
            f" {pruning_seconds:.0f} s running ({report['jobs'] / pruning_seconds:,.0f} jobs/s,"
            f" {report['batches']} batches) and the rest stopped",
            *(
                f"worker rate {name}: {value:,.0f} jobs/s over"
                f" {seconds:.0f} s in {len(windows)} windows"
                for (name, value), seconds, windows in zip(
                    rates.items(),
                    (pause_seconds, pruning_seconds),
                    (without, with_pruning),
                    strict=True,
                )
            ),
            f"with pruning / without: {rates['with pruning'] / rates['without pruning']:.2f}",
        ]
    )
    print(figures)
    assert waiting > 0, f"the backlog ran out: the rates are not maximal\n{figures}"
    assert report["jobs"] == FINISHED_JOBS, figures
    assert (report["succeeded"], report["failed"]) == (700_000, 200_000)
    assert (left, left_rows, audit) == (0, 0, FINISHED_JOBS // 1000)
    assert rates["with pruning"] >= (1 - MAX_SLOWDOWN) * rates["without pruning"], figures
