"""SIGTERM: stop fetching, let running jobs finish within the grace period, hand back the rest."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from backend import defer
from backend.tasks.builtin import ping
from tests.e2e.conftest import TaskhubProcess, clean_env, job_row, wait_status

pytestmark = pytest.mark.e2e


def test_sigterm_finishes_short_jobs_and_hands_back_long_ones(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        short = defer.defer_sync(conn, ping, {"message": "short", "sleep": 1})
        long = defer.defer_sync(conn, ping, {"message": "long", "sleep": 4})
        conn.commit()
    env = clean_env(DATABASE_URL=db_url, TASKHUB_SHUTDOWN_GRACE_PERIOD="2")
    worker = spawn(["worker", "--concurrency", "2"], tmp_path, env)
    wait_status(db_url, short, "doing")
    wait_status(db_url, long, "doing")

    began = time.monotonic()
    assert worker.stop(signal.SIGTERM, timeout=30) == 0, worker.output
    assert time.monotonic() - began < 10
    assert job_row(db_url, short)["status"] == "succeeded"
    handed_back = job_row(db_url, long)
    assert (handed_back["status"], handed_back["attempts"]) == ("todo", 0)
    assert handed_back["events"] == ["deferred", "started", "deferred_for_retry"]

    # Another worker takes it up at once and runs it to the end.
    successor = spawn(["worker"], tmp_path, env)
    finished = wait_status(db_url, long, "succeeded", timeout=30)
    assert finished["attempts"] == 1
    assert successor.stop(signal.SIGINT) == 0
