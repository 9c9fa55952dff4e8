"""PostgreSQL restarted under load (issue 20, fault 1): a fast shutdown, then an immediate one
(a crash, WAL recovery), while 8 worker processes drain 10,000 jobs and an API serves.

What must hold: every job succeeds, none is left ``doing``, each stores one result and one
``succeeded`` event; the workers and the API come back by themselves within 60 s; while the
server is down the API answers 503 with ``Retry-After`` within a few seconds, never hangs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from backend.defer import batch_defer_sync
from backend.tasks.builtin import ping
from tests.conftest import OPERATE_TOKEN, bearer
from tests.e2e.conftest import TaskhubProcess, clean_env, free_port
from tests.e2e.faults.server import StopMode, ThrowawayServer

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

JOBS = 10_000
PROCESSES = 8
DOWN_FOR = 4.0  # seconds the server stays down at each restart
RECOVERY_BOUND = 60.0
# An API request while the database is down waits TASKHUB_DATABASE_TIMEOUT (5 s) for a
# connection at most, then answers 503 (4 s of margin: other suites load the machine in CI).
REQUEST_BOUND = 9.0
FAST_BEATS = {"TASKHUB_HEARTBEAT_INTERVAL": "1", "TASKHUB_RESCUE_AFTER": "10"}


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs"
            " WHERE task_name = 'taskhub.ping' GROUP BY 1"
        ).fetchall()
    return dict(rows)


def succeeded(url: str) -> int:
    return counts(url).get("succeeded", 0)


def live_workers_since(url: str, since: float) -> int:
    """Worker processes that have beaten since ``since`` (epoch seconds) and not stopped."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM taskhub.workers"
            " WHERE stopped_at IS NULL AND last_heartbeat >= to_timestamp(%s)",
            (since,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def api_answers(base: str, headers: dict[str, str]) -> bool:
    health = httpx.get(f"{base}/health", timeout=REQUEST_BOUND)
    return health.status_code == 200 and (
        httpx.get(f"{base}/jobs/1", headers=headers, timeout=REQUEST_BOUND).status_code == 200
    )


@dataclass
class Probe:
    """The API asked again and again while the database is down: what it answered."""

    base: str
    statuses: list[int] = field(default_factory=list)
    slowest: float = 0.0
    missing_retry_after: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, method: str, path: str, body: object) -> None:
        headers = bearer(OPERATE_TOKEN)
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as client:
            while not self.stop.is_set():
                began = time.monotonic()
                response = client.request(method, path, json=body)
                self.slowest = max(self.slowest, time.monotonic() - began)
                self.statuses.append(response.status_code)
                if response.status_code == 503 and "retry-after" not in response.headers:
                    self.missing_retry_after.append(f"{method} {path}")
                time.sleep(0.2)


REQUESTS = (
    ("GET", "/jobs/1", None),
    ("GET", "/health", None),
    ("POST", "/jobs", {"task": "taskhub.ping", "args": {"message": "down"}}),
)


def restart_under_load(
    server: ThrowawayServer, mode: StopMode, base: str, api: TaskhubProcess, workers: TaskhubProcess
) -> dict[str, float]:
    """Stop the server, probe the API while it is down, start it, time the recovery."""
    server.stop(mode)
    probe = Probe(base)
    threads = [
        threading.Thread(target=probe.run, args=request, daemon=True) for request in REQUESTS
    ]
    for thread in threads:
        thread.start()
    time.sleep(DOWN_FOR)
    probe.stop.set()
    for thread in threads:
        thread.join(timeout=2 * REQUEST_BOUND)
        assert not thread.is_alive(), f"an API request hung with the database down\n{api.output}"
    server.start()
    up = time.time()
    before = succeeded(server.url)
    assert probe.statuses, "the API was asked while the database was down"
    assert set(probe.statuses) == {503}, f"answers while down: {probe.statuses}"
    assert not probe.missing_retry_after, f"503 without Retry-After: {probe.missing_retry_after}"
    assert probe.slowest < REQUEST_BOUND, f"a request took {probe.slowest:.1f}s"

    # Recovery: jobs finish again, every worker process beats again, the API answers 200.
    deadline = time.monotonic() + RECOVERY_BOUND
    moving = beating = answering = None
    headers = bearer(OPERATE_TOKEN)
    while moving is None or beating is None or answering is None:
        assert time.monotonic() < deadline, (
            f"no recovery within {RECOVERY_BOUND}s after a {mode} restart: jobs moving"
            f" {moving}, workers beating {beating}, API answering {answering}, jobs"
            f" {counts(server.url)}\n{server.log[-3000:]}\n--- workers:\n{workers.output[-8000:]}"
        )
        now = time.time() - up
        with_db = succeeded(server.url)
        if moving is None and (with_db > before or with_db == JOBS):
            moving = now
        if beating is None and live_workers_since(server.url, up) >= PROCESSES:
            beating = now
        if answering is None and api_answers(base, headers):
            answering = now
        time.sleep(0.2)
    figures = {
        "api_requests_while_down": len(probe.statuses),
        "slowest_request_s": round(probe.slowest, 2),
        "jobs_moving_after_s": round(moving, 2),
        "all_workers_beating_after_s": round(beating, 2),
        "api_answering_after_s": round(answering, 2),
    }
    print(f"{mode} restart (down {DOWN_FOR}s+, {before} jobs done before): {figures}")
    return figures


@pytest.mark.timeout(420)
def test_restarts_under_load_lose_no_job(
    spawn: type[TaskhubProcess], tmp_path: Path, pg_server: ThrowawayServer
) -> None:
    url = pg_server.url
    with psycopg.connect(url) as conn:
        for start in range(0, JOBS, 5_000):
            batch_defer_sync(
                conn, ping, [{"message": n, "sleep": 0.02} for n in range(start, start + 5_000)]
            )
            conn.commit()
        conn.execute("ANALYZE procrastinate_jobs")
    env = clean_env(DATABASE_URL=url, TASKHUB_TOKENS=f"ops=operate:{OPERATE_TOKEN}", **FAST_BEATS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = spawn(["api", "--port", str(port)], tmp_path, env)
    began = time.monotonic()
    workers = spawn(["worker", "--processes", str(PROCESSES)], tmp_path, env)
    api.wait_for_line("Stop with Ctrl-C.")

    for mode, after in (("fast", JOBS // 5), ("immediate", JOBS // 2)):
        deadline = time.monotonic() + 120
        while succeeded(url) < after:
            assert workers.process.poll() is None, workers.output
            assert time.monotonic() < deadline, f"{counts(url)} after 2 minutes"
            time.sleep(0.2)
        restart_under_load(pg_server, mode, base, api, workers)  # type: ignore[arg-type]

    deadline = time.monotonic() + 180
    while succeeded(url) < JOBS:
        assert workers.process.poll() is None, workers.output
        assert time.monotonic() < deadline, f"{counts(url)} 3 minutes after the restarts"
        time.sleep(0.5)
    drained = time.monotonic() - began
    assert workers.process.poll() is None, "the workers recovered without a restart of theirs"
    assert api.process.poll() is None
    stopping = time.monotonic()
    assert workers.stop(timeout=45) == 0, workers.output
    stopped = time.monotonic() - stopping
    assert api.stop(timeout=15) == 0, api.output

    with psycopg.connect(url) as conn:
        per_job = conn.execute(
            "SELECT count(*) FILTER (WHERE event.type = 'succeeded') AS succeeded,"
            "       count(*) FILTER (WHERE event.type = 'started') AS started,"
            "       (SELECT count(*) FROM taskhub.job_results result"
            "         WHERE result.job_id = job.id AND result.result = job.args->'message')"
            "  FROM procrastinate_jobs job"
            "  JOIN procrastinate_events event ON event.job_id = job.id"
            " WHERE job.task_name = 'taskhub.ping' AND job.args ? 'sleep'"
            " GROUP BY job.id"
        ).fetchall()
    runs = sorted({started for _, started, _ in per_job})
    ran_again = sum(1 for _, started, _ in per_job if started > 1)
    print(
        f"{JOBS} jobs on {PROCESSES} processes drained in {drained:.1f}s across both restarts;"
        f" {ran_again} ran more than once (starts per job: {runs}); workers stopped in"
        f" {stopped:.1f}s"
    )
    assert counts(url).get("doing", 0) == 0
    assert len(per_job) == JOBS, "every job is there"
    assert {(ok, result) for ok, _, result in per_job} == {(1, 1)}, (
        "one succeeded event and one stored result per job"
    )
