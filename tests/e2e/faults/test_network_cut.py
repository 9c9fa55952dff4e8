"""The database unreachable without a reset (issue 20, fault 3): packets dropped, nothing
closed (tests/e2e/faults/proxy.py stands between the worker and the server and blackholes).

What must hold: the worker notices within its heartbeat bound (a WARNING, well before
TASKHUB_RESCUE_AFTER), runs jobs again by itself once the path is back, and a SIGTERM during a
cut exits within the grace period plus 10 s; its jobs are then rescued, none left ``doing``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg
import pytest

from backend.defer import batch_defer_sync
from backend.tasks.builtin import ping
from tests.e2e.conftest import TaskhubProcess, clean_env
from tests.e2e.faults.proxy import blackhole_proxy
from tests.e2e.faults.server import ThrowawayServer
from tests.e2e.test_rescue import rescue

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

JOBS = 600
HEARTBEAT = 1.0
RESCUE_AFTER = 10.0
GRACE = 5.0
CUT_FOR = 12.0
RECOVERY_BOUND = 30.0


def succeeded(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs"
            " WHERE task_name = 'taskhub.ping' AND status = 'succeeded'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def noticed(worker: TaskhubProcess, since: int) -> bool:
    return any("WARNING" in line for line in worker.lines[since:])


@pytest.mark.timeout(240)
def test_a_cut_network_is_noticed_survived_and_does_not_block_shutdown(
    spawn: type[TaskhubProcess], tmp_path: Path, pg_server: ThrowawayServer
) -> None:
    url = pg_server.url
    with psycopg.connect(url) as conn:
        batch_defer_sync(conn, ping, [{"message": n, "sleep": 0.1} for n in range(JOBS)])
        conn.commit()
    with blackhole_proxy(pg_server) as proxy:
        env = clean_env(
            DATABASE_URL=proxy.url_for(pg_server),
            TASKHUB_HEARTBEAT_INTERVAL=str(HEARTBEAT),
            TASKHUB_RESCUE_AFTER=str(RESCUE_AFTER),
            TASKHUB_SHUTDOWN_GRACE_PERIOD=str(GRACE),
        )
        worker = spawn(["worker", "--processes", "1", "--concurrency", "10"], tmp_path, env)
        worker.wait_for_line("Starting worker")
        while succeeded(url) < 50:
            time.sleep(0.1)

        # A cut, then the path back: noticed, survived.
        seen = len(worker.lines)
        proxy.blackhole()
        cut = time.monotonic()
        while not noticed(worker, seen):
            assert time.monotonic() - cut < RESCUE_AFTER, f"unnoticed:\n{worker.output[-4000:]}"
            time.sleep(0.1)
        notice = time.monotonic() - cut
        time.sleep(max(0.0, CUT_FOR - notice))
        stalled = succeeded(url)
        proxy.heal()
        healed = time.monotonic()
        while succeeded(url) <= stalled:
            assert worker.process.poll() is None, worker.output[-4000:]
            assert time.monotonic() - healed < RECOVERY_BOUND, (
                f"no job done {RECOVERY_BOUND}s after the path came back\n{worker.output[-6000:]}"
            )
            time.sleep(0.1)
        moving = time.monotonic() - healed
        first_warning = next(line for line in worker.lines[seen:] if "WARNING" in line)

        # A cut, then SIGTERM: the worker exits all the same.
        proxy.blackhole()
        time.sleep(2 * HEARTBEAT)
        stopping = time.monotonic()
        code = worker.stop(signal.SIGTERM, timeout=GRACE + 10 + 20)
        stopped = time.monotonic() - stopping
        print(
            f"cut noticed after {notice:.2f}s ({first_warning[24:140]}); {CUT_FOR}s cut, jobs"
            f" moving {moving:.2f}s after the path came back; SIGTERM during a cut: exit code"
            f" {code} after {stopped:.2f}s (grace {GRACE}s)"
        )
        assert stopped < GRACE + 10, worker.output[-6000:]
        proxy.heal()

    # What the stopped worker held is rescued and run by another.
    time.sleep(RESCUE_AFTER)
    rescuer = spawn(
        ["worker", "--processes", "1", "--concurrency", "10"],
        tmp_path,
        clean_env(
            DATABASE_URL=url,
            TASKHUB_HEARTBEAT_INTERVAL=str(HEARTBEAT),
            TASKHUB_RESCUE_AFTER=str(RESCUE_AFTER),
        ),
    )
    rescuer.wait_for_line("Starting worker")
    rescue(url)
    deadline = time.monotonic() + 60
    while succeeded(url) < JOBS:
        assert time.monotonic() < deadline, f"{succeeded(url)}/{JOBS}\n{rescuer.output}"
        time.sleep(0.2)
    assert rescuer.stop() == 0
    with psycopg.connect(url) as conn:
        per_job = conn.execute(
            "SELECT count(*) FILTER (WHERE event.type = 'succeeded')"
            "  FROM procrastinate_jobs job JOIN procrastinate_events event ON event.job_id = job.id"
            " WHERE job.task_name = 'taskhub.ping' GROUP BY job.id"
        ).fetchall()
        doing = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'"
        ).fetchone()
    assert doing == (0,)
    assert {row[0] for row in per_job} == {1}, "one succeeded event per job"
