"""`taskhub worker --max-jobs N / --max-memory-mb M`: worker processes recycled by their
supervisor, every job run exactly once, with a task that leaks memory."""

from __future__ import annotations

import importlib
import re
import signal
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from backend import defer as deferring
from tests.e2e.conftest import TaskhubProcess, clean_env, free_port
from tests.e2e.test_worker_processes import children_of, gone, wait_until

pytestmark = pytest.mark.e2e

JOBS = 40
LEAKY = '''
    """A task that holds on to memory, as a leaking library would."""

    import asyncio
    import os

    from pydantic import BaseModel

    from backend.declare.apps import TaskhubApp
    from backend.declare.registry import TaskBlueprint

    blueprint = TaskBlueprint()
    HELD: list[bytes] = []


    class LeakArgs(BaseModel):
        n: int
        mb: int = 0
        sleep: float = 0.05


    @blueprint.task(name="leaky.leak", queue="leaky")
    async def leak(args: LeakArgs) -> dict[str, int]:
        HELD.append(b"x" * (args.mb * 1024 * 1024))  # written, so resident
        await asyncio.sleep(args.sleep)
        return {"n": args.n, "pid": os.getpid()}


    app = TaskhubApp(name="leaky", blueprints=[blueprint])
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "leaky"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(textwrap.dedent(LEAKY))
    monkeypatch.syspath_prepend(str(tmp_path))  # to defer with the task's own declaration
    importlib.invalidate_caches()
    return tmp_path


def defer_leaks(url: str, mb: int, sleep: float = 0.05, count: int = JOBS) -> list[int]:
    task = importlib.import_module("leaky.jobs").leak
    with psycopg.connect(url) as conn:
        job_ids = deferring.batch_defer_sync(
            conn, task, [{"n": n, "mb": mb, "sleep": sleep} for n in range(count)]
        )
        conn.commit()
    return job_ids


def finished(url: str, job_ids: list[int]) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT job.id, job.status::text, job.attempts, result.result,"
            " ARRAY(SELECT type::text FROM procrastinate_events"
            "       WHERE job_id = job.id ORDER BY id) AS events"
            " FROM procrastinate_jobs job"
            " LEFT JOIN taskhub.job_results result ON result.job_id = job.id"
            " WHERE job.id = ANY(%s) ORDER BY job.id",
            (job_ids,),
        ).fetchall()


def all_succeeded_once(url: str, job_ids: list[int], timeout: float = 120) -> Counter[int]:
    """Every job succeeded at its first and only attempt; the jobs each process ran."""
    wait_until(
        lambda: all(row["status"] == "succeeded" for row in finished(url, job_ids)),
        f"{len(job_ids)} jobs succeeded",
        timeout=timeout,
    )
    rows = finished(url, job_ids)
    assert len(rows) == len(job_ids)
    for row in rows:
        assert (row["attempts"], row["events"]) == (1, ["deferred", "started", "succeeded"]), row
    return Counter(row["result"]["pid"] for row in rows)


def worker(project: Path, spawn: type[TaskhubProcess], db_url: str, *args: str) -> TaskhubProcess:
    env = clean_env(DATABASE_URL=db_url, TASKHUB_FETCH_POLLING_INTERVAL="0.5")
    process = spawn(["worker", "--app", "leaky.jobs", "--queues", "leaky", *args], project, env)
    process.wait_for_line("Stop with Ctrl-C.")
    return process


def test_worker_processes_are_recycled_after_max_jobs(
    spawn: type[TaskhubProcess], project: Path, db_url: str
) -> None:
    workers = worker(
        project, spawn, db_url, "--processes", "2", "--concurrency", "2", "--max-jobs", "5"
    )
    assert "            each process recycled after 5 jobs" in workers.lines
    wait_until(lambda: len(children_of(workers)) == 2, "two worker processes")
    first = children_of(workers)

    job_ids = defer_leaks(db_url, mb=0)
    per_process = all_succeeded_once(db_url, job_ids)

    assert max(per_process.values()) <= 5, per_process
    assert len(per_process) >= JOBS // 5, per_process
    assert all(gone(pid) for pid in first), "both first processes were recycled"
    recycled = re.findall(r"\[worker ([12])\] \S+: worker \1 recycled after 5 jobs", workers.output)
    assert len(recycled) >= JOBS // 5 - 2, workers.output  # the last two may still be running
    assert "exited to be recycled (it ran " in workers.output
    assert "; starting a fresh one" in workers.output
    assert "exited unexpectedly" not in workers.output, "a recycle is no crash"
    wait_until(lambda: len(children_of(workers)) == 2, "two fresh worker processes")
    assert workers.stop(signal.SIGTERM, timeout=30) == 0, workers.output


def test_a_worker_process_leaking_memory_is_recycled_and_loses_no_job(
    spawn: type[TaskhubProcess], project: Path, db_url: str
) -> None:
    # A worker process holds about 100 MB before its first job; each job keeps 30 MB more.
    workers = worker(
        project, spawn, db_url, "--processes", "2", "--concurrency", "2", "--max-memory-mb", "300"
    )
    wait_until(lambda: len(children_of(workers)) == 2, "two worker processes")
    first = children_of(workers)

    job_ids = defer_leaks(db_url, mb=30, sleep=0.1)
    per_process = all_succeeded_once(db_url, job_ids)

    assert all(gone(pid) for pid in first), "both first processes were recycled"
    assert len(per_process) >= 4, per_process
    # Checked before each fetch: at most one fetch of 2 jobs beyond the limit.
    assert max(per_process.values()) <= 300 // 30 + 2, per_process
    sizes = [
        int(mb)
        for mb in re.findall(
            r"\[worker [12]\] \S+: worker [12] recycled at (\d+) MB", workers.output
        )
    ]
    assert sizes, workers.output
    assert all(300 <= mb < 300 + 3 * 30 for mb in sizes), sizes
    assert "exited unexpectedly" not in workers.output, "a recycle is no crash"
    assert workers.stop(signal.SIGTERM, timeout=30) == 0, workers.output


def test_with_one_process_the_worker_runs_in_a_supervised_child_to_be_recycled(
    spawn: type[TaskhubProcess], project: Path, db_url: str
) -> None:
    """Recycling needs a parent to start the fresh process: `--processes 1` gets one too."""
    workers = worker(
        project, spawn, db_url, "--processes", "1", "--concurrency", "1", "--max-jobs", "3"
    )
    assert "  worker:   leaky, concurrency 1 in 1 process" in workers.lines
    wait_until(lambda: len(children_of(workers)) == 1, "one worker process")

    job_ids = defer_leaks(db_url, mb=0, count=9)
    per_process = all_succeeded_once(db_url, job_ids)

    assert sorted(per_process.values()) == [3, 3, 3], per_process
    assert workers.process.pid not in per_process, "the jobs ran in children"
    assert workers.stop(signal.SIGTERM, timeout=30) == 0, workers.output


def test_up_with_one_process_serves_the_api_and_recycles_its_worker_child(
    spawn: type[TaskhubProcess], project: Path, db_url: str
) -> None:
    port = free_port()
    env = clean_env(DATABASE_URL=db_url, TASKHUB_API_PORT=str(port))
    up = spawn(
        ["up", "--app", "leaky.jobs", "--queues", "leaky", "--processes", "1", "--max-jobs", "2"],
        project,
        env,
    )
    up.wait_for_line("Stop with Ctrl-C.")
    assert "            each process recycled after 2 jobs" in up.lines
    wait_until(lambda: len(children_of(up)) == 1, "one worker process")

    per_process = all_succeeded_once(db_url, defer_leaks(db_url, mb=0, count=4))

    assert sorted(per_process.values()) == [2, 2], per_process
    assert up.process.pid not in per_process, "the API's process runs no job"
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    assert up.stop(signal.SIGINT, timeout=30) == 0, up.output
