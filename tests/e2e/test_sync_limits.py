"""A sync task stopped at its hard limit or aborted leaves its worker process, and the jobs
running beside it, untouched: with one worker process and with several, and under `up`."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import OPERATE_TOKEN, bearer
from tests.e2e.conftest import TaskhubProcess, clean_env, free_port, wait_status
from tests.e2e.test_processes import run_cli

pytestmark = pytest.mark.e2e

LIMITS_APP = """
import asyncio
import os

from pydantic import BaseModel

from backend.declare.apps import TaskhubApp
from backend.declare.registry import TaskBlueprint

blueprint = TaskBlueprint()


class Pause(BaseModel):
    seconds: float


@blueprint.task(name="limits.spin", time_limit=2)
def spin() -> None:
    while True:  # checks nothing: only stopping its process ends it
        pass


@blueprint.task(name="limits.spin_long", time_limit=600)
def spin_long() -> None:
    while True:
        pass


@blueprint.task(name="limits.neighbour")
async def neighbour(args: Pause) -> int:
    await asyncio.sleep(args.seconds)
    return os.getpid()


app = TaskhubApp(name="limits", blueprints=[blueprint])
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A team's project directory with its app, ``limits_app``."""
    (tmp_path / "limits_app.py").write_text(textwrap.dedent(LIMITS_APP))
    return tmp_path


def cli(args: list[str], project: Path, db_url: str) -> dict[str, object]:
    done = run_cli([*args, "--app", "limits_app"], project, clean_env(DATABASE_URL=db_url))
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def defer(project: Path, db_url: str, task: str, args: str = "{}") -> int:
    return int(str(cli(["defer", task, "--args", args], project, db_url)["id"]))


def worker_pids(process: TaskhubProcess, processes: int) -> list[int]:
    """The worker processes: the command itself, or its supervisor's children."""
    if processes == 1:
        return [process.process.pid]
    return sorted(child.pid for child in psutil.Process(process.process.pid).children())


def start_worker(
    spawn: type[TaskhubProcess], project: Path, db_url: str, processes: int
) -> tuple[TaskhubProcess, list[int]]:
    env = clean_env(DATABASE_URL=db_url, TASKHUB_FETCH_POLLING_INTERVAL="0.1")
    worker = spawn(
        ["worker", "--app", "limits_app", "--processes", str(processes), "--concurrency", "4"],
        project,
        env,
    )
    worker.wait_for_line("taskhub is up", timeout=60)
    deadline = time.monotonic() + 60
    while len(pids := worker_pids(worker, processes)) < processes:
        assert time.monotonic() < deadline, worker.output
        time.sleep(0.1)
    return worker, pids


def assert_untouched(worker: TaskhubProcess, pids: list[int], processes: int) -> None:
    assert worker.process.poll() is None, worker.output
    assert worker_pids(worker, processes) == pids, "no worker process was restarted"
    assert "exited unexpectedly" not in worker.output
    assert "stopping" not in worker.output


@pytest.mark.parametrize("processes", [1, 2])
def test_hard_limit_leaves_the_worker_and_its_neighbour(
    spawn: type[TaskhubProcess], project: Path, db_url: str, processes: int
) -> None:
    worker, pids = start_worker(spawn, project, db_url, processes)
    neighbour = defer(project, db_url, "limits.neighbour", '{"seconds": 5}')
    wait_status(db_url, neighbour, "doing")
    stopped = defer(project, db_url, "limits.spin")
    failed = wait_status(db_url, stopped, "failed", timeout=30)
    assert failed["errors"] == ["TimeLimitExceeded@1"]
    done = wait_status(db_url, neighbour, "succeeded", timeout=30)
    assert done["result"] in pids, "the neighbour finished in a worker that never restarted"
    assert_untouched(worker, pids, processes)
    after = defer(project, db_url, "limits.neighbour", '{"seconds": 0}')
    wait_status(db_url, after, "succeeded")
    assert worker.stop() == 0


@pytest.mark.parametrize("processes", [1, 2])
def test_abort_leaves_the_worker_and_its_neighbour(
    spawn: type[TaskhubProcess], project: Path, db_url: str, processes: int
) -> None:
    worker, pids = start_worker(spawn, project, db_url, processes)
    neighbour = defer(project, db_url, "limits.neighbour", '{"seconds": 5}')
    spinning = defer(project, db_url, "limits.spin_long")
    wait_status(db_url, spinning, "doing")
    wait_status(db_url, neighbour, "doing")
    cli(["jobs", "cancel", str(spinning), "--json"], project, db_url)
    wait_status(db_url, spinning, "aborted", timeout=30)
    done = wait_status(db_url, neighbour, "succeeded", timeout=30)
    assert done["result"] in pids
    assert_untouched(worker, pids, processes)
    assert worker.stop() == 0


def test_up_with_one_process_keeps_serving_after_a_hard_limit(
    spawn: type[TaskhubProcess], project: Path, db_url: str
) -> None:
    port = free_port()
    env = clean_env(
        DATABASE_URL=db_url,
        TASKHUB_FETCH_POLLING_INTERVAL="0.1",
        TASKHUB_TOKENS=f"operate:{OPERATE_TOKEN}",
    )
    up = spawn(["up", "--app", "limits_app", "--processes", "1", "--port", str(port)], project, env)
    up.wait_for_line("taskhub is up", timeout=90)
    base, headers = f"http://127.0.0.1:{port}", bearer(OPERATE_TOKEN)
    response = httpx.post(f"{base}/jobs", json={"task": "limits.spin"}, headers=headers)
    assert response.status_code == 201, response.text
    wait_status(db_url, response.json()["id"], "failed", timeout=30)
    time.sleep(0.5)  # a stop set off by the limit would be under way by now
    assert up.process.poll() is None, up.output
    assert "taskhub stopped" not in up.output
    assert httpx.get(f"{base}/health").json() == {"status": "ok", "database": "ok"}
    ping = httpx.post(f"{base}/jobs", json={"task": "taskhub.ping"}, headers=headers)
    wait_status(db_url, ping.json()["id"], "succeeded")
    assert up.stop() == 0
