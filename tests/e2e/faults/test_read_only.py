"""A read-only server, then a writable one (issue 20, fault 4): what a worker sees during a
failover, when its address still leads to the old primary, now a standby, for a while.
``default_transaction_read_only`` set server-wide and reloaded makes every session, the
worker's held ones included, refuse writes (``ReadOnlySqlTransaction``), as a hot standby does.

What must hold: the worker process stays up (no restart), and within 60 s of the server
being writable again it runs jobs; every job succeeds once, none is left ``doing``.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from backend.defer import batch_defer_sync
from backend.tasks.builtin import ping
from tests.e2e.conftest import TaskhubProcess, clean_env
from tests.e2e.faults.server import ThrowawayServer

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

JOBS = 400
READ_ONLY_FOR = 8.0
RECOVERY_BOUND = 60.0


def set_read_only(server: ThrowawayServer, on: bool) -> None:
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET default_transaction_read_only = {'on' if on else 'off'}")
        conn.execute("SELECT pg_reload_conf()")


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs"
            " WHERE task_name = 'taskhub.ping' GROUP BY 1"
        ).fetchall()
    return dict(rows)


def test_a_read_only_server_then_a_writable_one(
    spawn: type[TaskhubProcess], tmp_path: Path, pg_server: ThrowawayServer
) -> None:
    url = pg_server.url
    with psycopg.connect(url) as conn:
        batch_defer_sync(conn, ping, [{"message": n, "sleep": 0.1} for n in range(JOBS)])
        conn.commit()
    env = clean_env(DATABASE_URL=url, TASKHUB_HEARTBEAT_INTERVAL="1", TASKHUB_RESCUE_AFTER="30")
    worker = spawn(["worker", "--processes", "1", "--concurrency", "10"], tmp_path, env)
    worker.wait_for_line("Starting worker")
    while counts(url).get("succeeded", 0) < JOBS // 4:
        time.sleep(0.1)

    set_read_only(pg_server, True)
    time.sleep(1)  # what was in flight when the reload came settles
    during = counts(url).get("succeeded", 0)
    time.sleep(READ_ONLY_FOR)
    stalled = counts(url).get("succeeded", 0)
    assert stalled == during, "nothing can finish on a read-only server"
    set_read_only(pg_server, False)
    writable = time.monotonic()

    deadline = writable + RECOVERY_BOUND
    moving = None
    while (done := counts(url).get("succeeded", 0)) < JOBS:
        if moving is None and done > stalled:
            moving = time.monotonic() - writable
        assert worker.process.poll() is None, worker.output
        assert time.monotonic() < deadline, f"{counts(url)}\n{worker.output[-5000:]}"
        time.sleep(0.1)
    moving = moving if moving is not None else time.monotonic() - writable
    drained = time.monotonic() - writable
    assert worker.process.poll() is None, "the worker itself (--processes 1) never exited"
    refused = [line for line in worker.lines if "ReadOnlySqlTransaction" in line]
    print(
        f"read-only for {READ_ONLY_FOR + 1:.0f}s with {stalled}/{JOBS} jobs done: jobs moving"
        f" {moving:.2f}s after the server was writable again, all done {drained:.2f}s after;"
        f" {len(refused)} log lines named the refusal"
    )
    assert refused, "the worker said why it stalled"
    assert worker.stop() == 0, worker.output
    assert "exited unexpectedly" not in worker.output
    with psycopg.connect(url) as conn:
        per_job = conn.execute(
            "SELECT count(*) FILTER (WHERE event.type = 'succeeded'),"
            "       count(*) FILTER (WHERE event.type = 'started')"
            "  FROM procrastinate_jobs job JOIN procrastinate_events event ON event.job_id = job.id"
            " WHERE job.task_name = 'taskhub.ping' GROUP BY job.id"
        ).fetchall()
    assert counts(url) == {"succeeded": JOBS}
    assert {row[0] for row in per_job} == {1}, "one succeeded event per job"
    print(f"starts per job: {sorted({row[1] for row in per_job})}")
