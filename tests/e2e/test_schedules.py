"""Schedules with real processes: three workers, one job per tick; `taskhub schedules`."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import psycopg
import pytest

from tests.e2e.conftest import TaskhubProcess, clean_env
from tests.e2e.test_processes import run_cli

pytestmark = pytest.mark.e2e

RESCUE = "taskhub.rescue_stalled_jobs"


def rescue_ticks(db_url: str) -> list[int]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT (args->>'timestamp')::bigint FROM procrastinate_jobs"
            " WHERE task_name = %s ORDER BY 1",
            (RESCUE,),
        ).fetchall()
    return [row[0] for row in rows]


def test_three_workers_run_each_tick_once(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    # Every two seconds (a sixth cron field counts seconds), so the test takes seconds.
    env = clean_env(
        DATABASE_URL=db_url,
        TASKHUB_SCHEDULES=f"{RESCUE}=* * * * * */2",
        TASKHUB_TIMEZONE="Asia/Riyadh",
    )
    workers = [spawn(["worker", "--queues", "maintenance"], tmp_path, env) for _ in range(3)]
    for worker in workers:
        worker.wait_for_line("worker:")
    deadline = time.monotonic() + 60
    while len(rescue_ticks(db_url)) < 5:
        assert time.monotonic() < deadline, "the schedule did not tick five times"
        time.sleep(0.2)
    for worker in workers:
        assert worker.stop() == 0
    ticks = rescue_ticks(db_url)
    assert len(ticks) == len(set(ticks)), f"a tick ran twice: {ticks}"
    # None missed either: consecutive ticks, two seconds apart.
    assert [later - earlier for earlier, later in itertools.pairwise(ticks)] == [2] * (
        len(ticks) - 1
    )
    with psycopg.connect(db_url) as conn:
        statuses = conn.execute(
            "SELECT DISTINCT status::text FROM procrastinate_jobs WHERE task_name = %s"
            " AND (args->>'timestamp')::bigint < %s",
            (RESCUE, ticks[-1]),
        ).fetchall()
    assert statuses == [("succeeded",)]


def test_schedules_command(tmp_path: Path, db_url: str) -> None:
    env = clean_env(
        DATABASE_URL=db_url,
        TASKHUB_TIMEZONE="Asia/Riyadh",
        TASKHUB_SCHEDULES=f"{RESCUE}=off",
    )
    listing = run_cli(["schedules"], tmp_path, env)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0] == "timezone Asia/Riyadh"
    [rescue] = [line for line in lines if line.startswith(RESCUE)]
    assert rescue.split()[1:] == ["off", "never"]
    [prune] = [line for line in lines if line.startswith("taskhub.prune")]
    assert "+03" in prune, prune

    bad = run_cli(["schedules"], tmp_path, {**env, "TASKHUB_SCHEDULES": "nope.task=0 3 * * *"})
    assert bad.returncode == 2, bad.stderr
    assert "unknown task 'nope.task'" in bad.stderr
    assert bad.stdout == ""
