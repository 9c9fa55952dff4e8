"""Dead workers' jobs are rescued; a worker presumed dead cannot overwrite what replaced it."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from backend import defer as deferring
from backend.errors import AlreadyQueued
from backend.tasks.builtin import ping
from backend.tasks.maintenance import rescue_stalled_jobs
from tests.e2e.conftest import TaskhubProcess, clean_env, job_row, wait_status

pytestmark = pytest.mark.e2e

FAST_HEARTBEATS = {"TASKHUB_HEARTBEAT_INTERVAL": "0.5", "TASKHUB_RESCUE_AFTER": "2"}


def defer(url: str, task: Any, args: dict[str, Any]) -> int:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        job_id = deferring.defer_sync(conn, task, args)
        conn.commit()
    return job_id


def rescue(url: str) -> None:
    """Run the periodic rescuer now rather than at the next minute (or wait for the one a
    starting worker's deferrer has just queued: its queueing lock allows one waiting)."""
    deadline = time.monotonic() + 15
    while True:
        assert time.monotonic() < deadline, "no rescue job could be deferred or found"
        try:
            job_id = defer(url, rescue_stalled_jobs, {})
            break
        except AlreadyQueued:
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT max(id) FROM procrastinate_jobs"
                    " WHERE task_name = %s AND status IN ('todo', 'doing')",
                    (rescue_stalled_jobs.name,),
                ).fetchone()
            if row and row[0] is not None:
                job_id = row[0]
                break
    wait_status(url, job_id, "succeeded")


def test_a_killed_workers_job_completes_on_another_worker(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    env = clean_env(DATABASE_URL=db_url, **FAST_HEARTBEATS)
    job_id = defer(db_url, ping, {"message": "survivor", "sleep": 1})
    doomed = spawn(["worker", "--processes", "1"], tmp_path, env)  # the worker itself
    wait_status(db_url, job_id, "doing")
    doomed.kill()  # kill -9, mid-job
    time.sleep(2.5)  # longer than TASKHUB_RESCUE_AFTER without a heartbeat

    successor = spawn(["worker"], tmp_path, env)
    rescue(db_url)
    row = wait_status(db_url, job_id, "succeeded", timeout=15)
    assert successor.stop() == 0
    assert row["result"] == "survivor"
    assert row["attempts"] == 2, "the lost attempt counts"
    assert row["errors"] == ["WorkerLost@1"]
    assert row["events"].count("started") == 2
    assert row["events"].count("succeeded") == 1


def test_a_frozen_worker_that_wakes_up_is_fenced(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    env = clean_env(DATABASE_URL=db_url, **FAST_HEARTBEATS)
    job_id = defer(db_url, ping, {"message": "exactly once", "sleep": 1})
    zombie = spawn(["worker", "--processes", "1"], tmp_path, env)
    wait_status(db_url, job_id, "doing")
    zombie.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(2.5)
        successor = spawn(["worker"], tmp_path, env)
        rescue(db_url)
        done = wait_status(db_url, job_id, "succeeded", timeout=15)
    finally:
        zombie.process.send_signal(signal.SIGCONT)
    zombie.wait_for_line("this outcome is discarded", timeout=30)

    after = job_row(db_url, job_id)
    assert after == done, "the zombie changed nothing"
    assert after["attempts"] == 2
    assert after["events"].count("succeeded") == 1
    assert zombie.stop() == 0
    assert successor.stop() == 0
