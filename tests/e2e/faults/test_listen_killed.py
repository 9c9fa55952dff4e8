"""The LISTEN connection killed (issue 20, fault 2): ``pg_terminate_backend`` on the worker's
listening session. The worker logs a WARNING, listens again, and a deferred job is picked up
within 1 s again (without LISTEN it would wait for the next poll, 5 s by default) within 30 s.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from backend.defer import defer_sync
from backend.tasks.builtin import ping
from tests.e2e.conftest import TaskhubProcess, clean_env, wait_status
from tests.e2e.faults.server import ThrowawayServer

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

PICKUP_BOUND = 1.0
RECOVERY_BOUND = 30.0


def pickup_latency(url: str) -> float:
    """Seconds from a job's defer to its start, by the database's own clock."""
    with psycopg.connect(url) as conn:
        job_id = defer_sync(conn, ping, {"message": "latency"})
        conn.commit()
    wait_status(url, job_id, "succeeded", timeout=15)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'started')"
            "                       - min(at) FILTER (WHERE type = 'deferred'))"
            "  FROM procrastinate_events WHERE job_id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None
    return float(row[0])


def kill_listener(url: str) -> int:
    """Terminate every session that sits in LISTEN (the worker's only one); how many."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            "   AND (query LIKE 'LISTEN %%' OR query = 'SELECT 1')"
        ).fetchall()
    return len(rows)


def test_a_killed_listen_connection_is_back_within_thirty_seconds(
    spawn: type[TaskhubProcess], tmp_path: Path, pg_server: ThrowawayServer
) -> None:
    url = pg_server.url
    # Polls 10 s apart: a job picked up within 1 s was woken by a NOTIFY.
    env = clean_env(DATABASE_URL=url, TASKHUB_FETCH_POLLING_INTERVAL="10")
    worker = spawn(["worker", "--processes", "1", "--queues", "default"], tmp_path, env)
    worker.wait_for_line("Starting worker")
    time.sleep(1)
    before = [pickup_latency(url) for _ in range(3)]
    assert max(before) < PICKUP_BOUND, f"pickup before the kill: {before}"

    assert kill_listener(url) >= 1, "the worker's LISTEN session was found"
    killed = time.monotonic()
    after: list[float] = []
    while True:
        latency = pickup_latency(url)
        after.append(latency)
        if latency < PICKUP_BOUND:
            break
        assert time.monotonic() - killed < RECOVERY_BOUND, f"pickup latencies {after}"
    back = time.monotonic() - killed
    steady = [pickup_latency(url) for _ in range(3)]
    print(
        f"pickup before the kill {[round(x, 3) for x in before]} s; after it"
        f" {[round(x, 3) for x in after]} s, under {PICKUP_BOUND} s again {back:.2f} s after"
        f" the kill; then {[round(x, 3) for x in steady]} s"
    )
    assert max(steady) < PICKUP_BOUND
    assert worker.process.poll() is None, worker.output
    warnings = [line for line in worker.lines if "WARNING" in line and "LISTEN" in line]
    assert warnings, worker.output
    print(f"logged: {warnings[0]}")
    assert worker.stop() == 0, worker.output
