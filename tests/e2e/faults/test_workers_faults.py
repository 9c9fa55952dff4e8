"""Workers frozen and killed (issue 20, faults 7 and 8): a zombie's late outcome is discarded
and the rescuer's stands; a rescuer killed in the middle of a rescue is followed by the next
cycle. Worker faults only: the shared server serves (no server is restarted here)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from backend import defer as deferring
from tests.e2e.conftest import TaskhubProcess, clean_env, job_row, wait_status
from tests.e2e.faults import tasks
from tests.e2e.test_rescue import rescue

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

APP = "tests.e2e.faults.tasks"
HEARTBEAT = 0.5
RESCUE_AFTER = 2.0
FAST = {"TASKHUB_HEARTBEAT_INTERVAL": str(HEARTBEAT), "TASKHUB_RESCUE_AFTER": str(RESCUE_AFTER)}
RESCUE = "taskhub.rescue_stalled_jobs"
CYCLE = 3  # seconds between rescue ticks in test 8 (a sixth cron field counts seconds)


def defer(url: str, task: Any, args: dict[str, Any]) -> int:
    with psycopg.connect(url) as conn:
        job_id = deferring.defer_sync(conn, task, args)
        conn.commit()
    return job_id


def worker(
    spawn: type[TaskhubProcess], tmp_path: Path, env: dict[str, str], queues: str
) -> TaskhubProcess:
    """One worker process, no supervisor: a signal reaches the worker itself."""
    process = spawn(["worker", "--app", APP, "--queues", queues, "--processes", "1"], tmp_path, env)
    process.wait_for_line("Stop with Ctrl-C.")
    return process


def test_a_thawed_zombies_outcome_is_discarded_and_the_rescuers_stands(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    env = clean_env(DATABASE_URL=db_url, **FAST)
    job_id = defer(db_url, tasks.whoami, {"sleep": 1.5})
    zombie = worker(spawn, tmp_path, env, "faults")
    wait_status(db_url, job_id, "doing")
    zombie.process.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        time.sleep(RESCUE_AFTER + 1)  # past the rescue bound, heartbeats frozen too
        successor = worker(spawn, tmp_path, env, "faults,maintenance")
        rescue(db_url)
        done = wait_status(db_url, job_id, "succeeded", timeout=15)
    finally:
        zombie.process.send_signal(signal.SIGCONT)
        thawed = time.monotonic()
    zombie.wait_for_line("this outcome is discarded", timeout=30)
    after = job_row(db_url, job_id)
    print(
        f"\nfrozen {thawed - frozen:.1f} s (rescue after {RESCUE_AFTER} s); row after the thaw:"
        f" {after}"
    )

    assert after == done, "the zombie changed nothing"
    assert after["result"] == {"pid": successor.process.pid, "attempt": 2}
    assert zombie.process.pid != successor.process.pid
    assert after["attempts"] == 2
    assert after["errors"] == ["WorkerLost@1"]
    assert after["events"].count("started") == 2
    assert after["events"].count("succeeded") == 1
    assert f"Task faults.whoami[{job_id}] succeeded" in zombie.output, "it ran to its end"

    # The zombie is a worker again: it runs a new job to the end and keeps it.
    assert successor.stop() == 0, successor.output
    again = defer(db_url, tasks.whoami, {})
    assert wait_status(db_url, again, "succeeded")["result"]["pid"] == zombie.process.pid
    # Its row was pruned as dead (by the successor's start): it registered again.
    assert "was presumed dead" in zombie.output, zombie.output
    assert zombie.stop() == 0, zombie.output


def rescuer_waiting(url: str) -> tuple[int, int] | None:
    """(rescue job id, its worker's id) once a rescue's statement waits for a lock."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        waiting = conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            "   AND query LIKE '%%WorkerLost%%'"
        ).fetchone()
        job = conn.execute(
            "SELECT id, worker_id FROM procrastinate_jobs"
            " WHERE task_name = %s AND status = 'doing' ORDER BY id LIMIT 1",
            (RESCUE,),
        ).fetchone()
    if waiting and waiting["n"] and job:
        return job["id"], job["worker_id"]
    return None


def test_a_rescuer_killed_mid_rescue_is_followed_by_the_next_cycle(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    env = clean_env(DATABASE_URL=db_url, TASKHUB_SCHEDULES=f"{RESCUE}=* * * * * */{CYCLE}", **FAST)
    lost = defer(db_url, tasks.whoami, {"first_sleep": 600})
    owner = worker(spawn, tmp_path, env, "faults")
    wait_status(db_url, lost, "doing")
    owner.kill()  # kill -9: its job stays 'doing' until a rescue

    with psycopg.connect(db_url) as locker:
        # The rescue statement records a WorkerLost error per job: it waits for this lock.
        locker.execute("LOCK TABLE taskhub.job_errors IN EXCLUSIVE MODE")
        rescuer = worker(spawn, tmp_path, env, "maintenance")
        deadline = time.monotonic() + 30
        while (found := rescuer_waiting(db_url)) is None:
            assert time.monotonic() < deadline, f"no rescue started:\n{rescuer.output}"
            time.sleep(0.1)
        rescuer.kill()  # mid-rescue: its transaction never commits
        killed = time.monotonic()
        locker.rollback()
    interrupted, _ = found
    time.sleep(0.5)
    assert job_row(db_url, lost)["status"] == "doing", "the killed rescue changed nothing"
    assert job_row(db_url, lost)["errors"] == []

    successor = worker(spawn, tmp_path, env, "maintenance,faults")
    wait_status(db_url, lost, "succeeded", timeout=30)
    recovered = time.monotonic() - killed
    deadline = time.monotonic() + 30
    while (ended := job_row(db_url, interrupted))["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, ended
        time.sleep(0.1)
    assert successor.stop() == 0, successor.output
    with psycopg.connect(db_url) as conn:  # the successor's own jobs ended with its stop
        left = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'"
        ).fetchone()
    row = job_row(db_url, lost)
    print(
        f"\nrescuer killed mid-rescue; the next cycle (every {CYCLE} s) rescued the lost job and"
        f" it succeeded {recovered:.1f} s after the kill; the interrupted rescue job"
        f" {ended['status']}, {ended['errors']}"
    )
    assert row["errors"] == ["WorkerLost@1"]
    assert row["result"] == {"pid": successor.process.pid, "attempt": 2}
    # Rescued in turn: run again, or failed if the next tick's rescue job was waiting already.
    assert ended["errors"] == ["WorkerLost@1"], ended
    assert left == (0,), "no job left doing"
    # The successor starts (~3 s here), the next tick comes within CYCLE s, then one job runs.
    assert recovered < RESCUE_AFTER + CYCLE + 15


def test_a_job_that_kills_its_worker_fails_after_three_losses_without_a_crash_loop(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    env = clean_env(DATABASE_URL=db_url, TASKHUB_SCHEDULES=f"{RESCUE}=* * * * * */{CYCLE}", **FAST)
    with psycopg.connect(db_url) as conn:
        steady = deferring.batch_defer_sync(conn, tasks.work, [{"n": n} for n in range(300)])
        conn.commit()
    poison = defer(db_url, tasks.oom, {})
    began = time.monotonic()
    workers = spawn(
        [
            "worker",
            "--app",
            APP,
            "--queues",
            "oom,steady,maintenance",
            "--processes",
            "2",
            "--concurrency",
            "5",
        ],
        tmp_path,
        env,
    )
    deadline = began + 90
    while (row := job_row(db_url, poison))["status"] != "failed":
        crashes = workers.output.count("exited unexpectedly")
        assert time.monotonic() < deadline, f"{row}, {crashes} worker crashes:\n{workers.output}"
        time.sleep(0.2)
    took = time.monotonic() - began
    crashes = workers.output.count("exited unexpectedly")
    time.sleep(3 * CYCLE)  # no more crashes: the poison runs no more
    for job_id in steady:
        wait_status(db_url, job_id, "succeeded", timeout=30)
    later = workers.output.count("exited unexpectedly")
    assert workers.stop() == 0, workers.output
    print(f"\npoison job failed after {took:.1f} s, {crashes} worker crashes: {row}")
    assert row["errors"] == ["WorkerLost@1", "WorkerLost@2", "WorkerLost@3"]
    assert row["attempts"] == 3
    assert (crashes, later) == (3, 3), workers.output
