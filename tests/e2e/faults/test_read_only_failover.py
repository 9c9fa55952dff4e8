"""A failover to a read-only server and back (issue 20, fault 4, as a failover does it): every
session is cut and the ones that come back land on a server that refuses writes, then every
session is cut again and the new ones can write. ``ALTER DATABASE ... SET
default_transaction_read_only`` applies to new sessions only, and ``pg_terminate_backend``
makes every connection of the workers (pool, fetch, finish, heartbeat, LISTEN) a new one.

(test_read_only.py keeps the sessions and reloads a server-wide setting instead.)

What must hold: no worker process exits or is restarted, jobs move again within 60 s of the
writable failover, every job succeeds once, none is left ``doing``. The API keeps reading, and
refuses a defer with 503 and ``Retry-After`` within seconds (it answered 500 before), enqueues
nothing it refused, and accepts defers again once writable.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from backend.defer import batch_defer_sync
from backend.tasks.builtin import ping
from tests.conftest import OPERATE_TOKEN, bearer
from tests.e2e.conftest import TaskhubProcess, clean_env, free_port
from tests.e2e.faults.server import DATABASE, ThrowawayServer

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

JOBS = 600
PROCESSES = 2
READ_ONLY_FOR = 8.0
RECOVERY_BOUND = 60.0
REQUEST_BOUND = 7.0  # TASKHUB_DATABASE_TIMEOUT (5 s) and some
DEFER = {"task": "taskhub.ping", "args": {"message": "through the API"}}


def fail_over(server: ThrowawayServer, *, read_only: bool) -> int:
    """New sessions read-only (or writable again), then every taskhub session cut; how many."""
    value = "on" if read_only else "off"
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {DATABASE} SET default_transaction_read_only = {value}")
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (DATABASE,),
        ).fetchall()
    return len(rows)


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs"
            " WHERE task_name = 'taskhub.ping' GROUP BY 1"
        ).fetchall()
    return dict(rows)


def ask(client: httpx.Client, method: str, path: str, body: object = None) -> httpx.Response:
    began = time.monotonic()
    response = client.request(method, path, json=body)
    took = time.monotonic() - began
    assert took < REQUEST_BOUND, f"{method} {path} took {took:.1f}s"
    return response


def worker_pids(worker: TaskhubProcess) -> list[int]:
    return sorted(child.pid for child in psutil.Process(worker.process.pid).children())


def test_a_failover_to_a_read_only_server_then_to_a_writable_one(
    spawn: type[TaskhubProcess], tmp_path: Path, pg_server: ThrowawayServer
) -> None:
    url = pg_server.url
    with psycopg.connect(url) as conn:
        batch_defer_sync(conn, ping, [{"message": n, "sleep": 0.1} for n in range(JOBS)])
        conn.commit()
    env = clean_env(
        DATABASE_URL=url,
        TASKHUB_HEARTBEAT_INTERVAL="1",
        TASKHUB_RESCUE_AFTER="30",
        TASKHUB_TOKENS=f"ops=operate:{OPERATE_TOKEN}",
    )
    port = free_port()
    api = spawn(["api", "--port", str(port)], tmp_path, env)
    args = ["worker", "--processes", str(PROCESSES), "--concurrency", "10"]
    worker = spawn(args, tmp_path, env)
    worker.wait_for_line("Starting worker")
    api.wait_for_line("Stop with Ctrl-C.")
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers=bearer(OPERATE_TOKEN), timeout=30
    )
    while counts(url).get("succeeded", 0) < JOBS // 5:
        time.sleep(0.1)
    pids = worker_pids(worker)
    assert len(pids) == PROCESSES, worker.output

    cut = fail_over(pg_server, read_only=True)
    time.sleep(1.5)  # what was in flight settles: its finish is refused, kept for later
    during = counts(url).get("succeeded", 0)
    time.sleep(READ_ONLY_FOR)
    stalled = counts(url).get("succeeded", 0)
    assert stalled == during, "nothing can finish on a read-only server"
    assert any("ReadOnlySqlTransaction" in line for line in worker.lines), worker.output[-5000:]
    # The API on the read-only server: reads answered, defers refused as unavailable.
    answers = [ask(client, "POST", "/jobs", DEFER) for _ in range(3)]
    assert [r.status_code for r in answers] == [503] * 3, [r.text for r in answers]
    assert all("retry-after" in r.headers for r in answers), [r.headers for r in answers]
    assert ask(client, "GET", "/jobs/1").status_code == 200
    assert sum(counts(url).values()) == JOBS, "a refused defer enqueued nothing"

    cut_again = fail_over(pg_server, read_only=False)
    writable = time.monotonic()
    moving = accepting = None
    accepted = 0
    while (done := counts(url).get("succeeded", 0)) < JOBS + accepted:
        if moving is None and done > stalled:
            moving = time.monotonic() - writable
        if accepting is None and ask(client, "POST", "/jobs", DEFER).status_code == 201:
            accepting = time.monotonic() - writable
            accepted = 1
        assert worker.process.poll() is None, worker.output[-5000:]
        assert time.monotonic() - writable < RECOVERY_BOUND, (
            f"{counts(url)} {RECOVERY_BOUND}s after the writable failover\n{worker.output[-5000:]}"
        )
        time.sleep(0.1)
    moving = moving if moving is not None else time.monotonic() - writable
    assert accepting is not None, "the API accepted a defer again"
    drained = time.monotonic() - writable
    assert worker_pids(worker) == pids, "no worker process exited or was restarted"
    slowest = max(r.elapsed.total_seconds() for r in answers)
    refused = sum("ReadOnlySqlTransaction" in line for line in worker.lines)
    print(
        f"failover to read-only ({cut} sessions cut) with {stalled}/{JOBS} jobs done, held"
        f" {READ_ONLY_FOR + 1.5:.1f}s; failover to writable ({cut_again} sessions cut): jobs"
        f" moving {moving:.2f}s after, all {JOBS} done {drained:.2f}s after, on the same"
        f" {PROCESSES} worker processes; {refused} log lines named the refusal; the API refused"
        f" defers with 503 + Retry-After (slowest {slowest:.2f}s)"
        f" and accepted them {accepting:.2f}s after the writable failover"
    )
    client.close()
    assert worker.stop() == 0, worker.output[-5000:]
    assert api.stop(timeout=15) == 0, api.output[-5000:]
    assert "exited unexpectedly" not in worker.output
    with psycopg.connect(url) as conn:
        per_job = conn.execute(
            "SELECT count(*) FILTER (WHERE event.type = 'succeeded'),"
            "       count(*) FILTER (WHERE event.type = 'started')"
            "  FROM procrastinate_jobs job JOIN procrastinate_events event ON event.job_id = job.id"
            " WHERE job.task_name = 'taskhub.ping' GROUP BY job.id"
        ).fetchall()
    assert counts(url) == {"succeeded": JOBS + accepted}, "none lost, none left doing"
    assert {row[0] for row in per_job} == {1}, "one succeeded event per job"
    print(f"started events per job: {sorted({row[1] for row in per_job})}")
