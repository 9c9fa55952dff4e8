"""A rate limit holds across three worker processes (TASKHUB_RATE_LIMITS set by an operator)."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from backend import defer
from backend.tasks.builtin import ping
from tests.e2e.conftest import TaskhubProcess, clean_env

pytestmark = pytest.mark.e2e


def test_five_per_second_across_three_workers(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        ids = [defer.defer_sync(conn, ping, {"message": n}) for n in range(20)]
        conn.commit()
    env = clean_env(
        DATABASE_URL=db_url,
        TASKHUB_RATE_LIMITS="taskhub.ping=5/s",
        TASKHUB_FETCH_POLLING_INTERVAL="0.05",
    )
    workers = [spawn(["worker", "--concurrency", "4"], tmp_path, env) for _ in range(3)]
    deadline = time.monotonic() + 60
    with psycopg.connect(db_url, row_factory=dict_row, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) AS n FROM procrastinate_jobs"
                " WHERE id = ANY(%s) AND status = 'succeeded'",
                (ids,),
            ).fetchone()
            if row and row["n"] == len(ids):
                break
            assert time.monotonic() < deadline, "the limited jobs did not all run"
            time.sleep(0.1)
        runs = conn.execute(
            "SELECT job.attempts, job.worker_id,"
            " (SELECT max(at) FROM procrastinate_events"
            "   WHERE job_id = job.id AND type = 'started') AS started"
            " FROM procrastinate_jobs job WHERE id = ANY(%s)",
            (ids,),
        ).fetchall()
    for worker in workers:
        assert worker.stop() == 0
    assert {run["attempts"] for run in runs} == {1}, "waiting for the limit uses no attempt"
    assert len({run["worker_id"] for run in runs}) >= 2, "several workers shared the work"
    starts = sorted(run["started"].timestamp() for run in runs)
    # At most five in any second: any six consecutive runs span about a second or more.
    for first, sixth in zip(starts, starts[5:], strict=False):
        assert sixth - first >= 0.8, [round(start - starts[0], 2) for start in starts]
