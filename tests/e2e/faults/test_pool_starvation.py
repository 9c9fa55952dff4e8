"""A pool smaller than the work (issue 20, fault 5): a worker whose tasks all want one of its
pooled connections keeps heart-beating and finishes everything, and an API with a tiny pool
under load answers 503 with Retry-After instead of making callers wait for ever."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from backend.defer import batch_defer_sync, defer_sync
from backend.tasks.builtin import ping
from tests.e2e.conftest import TaskhubProcess, clean_env, free_port
from tests.e2e.faults import tasks

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

HEARTBEAT = 0.5
RESCUE_AFTER = 2.0
JOBS = 30
HOLD = 0.3  # seconds each job keeps the pool's only connection


def heartbeats(url: str, stop: threading.Event, seen: list[tuple[float, float]]) -> None:
    """(when polled, the worker's last heartbeat as an epoch) every 0.1 s until ``stop``."""
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            row = conn.execute(
                "SELECT extract(epoch FROM max(last_heartbeat))::float FROM procrastinate_workers"
            ).fetchone()
            if row and row[0] is not None:
                seen.append((time.time(), row[0]))
            time.sleep(0.1)


def test_a_pool_smaller_than_the_concurrency_keeps_heartbeats_and_loses_nothing(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    env = clean_env(
        DATABASE_URL=db_url,
        TASKHUB_POOL_MAX_SIZE="1",
        TASKHUB_HEARTBEAT_INTERVAL=str(HEARTBEAT),
        TASKHUB_RESCUE_AFTER=str(RESCUE_AFTER),
    )
    args = ["--app", "tests.e2e.faults.tasks", "--queues", "held", "--concurrency", "10"]
    worker = spawn(["worker", *args, "--processes", "1"], tmp_path, env)
    worker.wait_for_line("Stop with Ctrl-C.")
    stop = threading.Event()
    seen: list[tuple[float, float]] = []
    poller = threading.Thread(target=heartbeats, args=(db_url, stop, seen), daemon=True)
    poller.start()
    began = time.monotonic()
    with psycopg.connect(db_url) as conn:
        job_ids = batch_defer_sync(conn, tasks.hold, [{"seconds": HOLD}] * JOBS)
        conn.commit()
    deadline = began + 60
    while True:
        with psycopg.connect(db_url) as conn:
            rows = conn.execute(
                "SELECT status::text, attempts, (SELECT count(*) FROM procrastinate_events event"
                "  WHERE event.job_id = job.id AND event.type = 'started')"
                " FROM procrastinate_jobs job WHERE id = ANY(%s)",
                (job_ids,),
            ).fetchall()
        if all(status == "succeeded" for status, _, _ in rows):
            break
        assert time.monotonic() < deadline, f"not all done after 60 s: {rows}\n{worker.output}"
        time.sleep(0.2)
    took = time.monotonic() - began
    stop.set()
    poller.join(timeout=5)
    assert worker.stop() == 0, worker.output

    # The oldest a heartbeat ever looked, while 10 jobs queued for the one connection.
    staleness = max(polled - beat for polled, beat in seen)
    print(
        f"\npool 1, concurrency 10: {JOBS} jobs holding the connection {HOLD} s each done in"
        f" {took:.1f} s; heartbeat at most {staleness:.2f} s old (interval {HEARTBEAT} s,"
        f" rescue after {RESCUE_AFTER} s)"
    )
    assert rows == [("succeeded", 1, 1)] * JOBS, "each job ran once"
    assert took < JOBS * HOLD + 15, "the jobs shared the connection, no deadlock"
    assert staleness < RESCUE_AFTER * 0.75, "heartbeats did not wait behind the tasks"


def test_an_api_with_a_tiny_pool_answers_503_rather_than_waiting(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    port = free_port()
    env = clean_env(
        DATABASE_URL=db_url,
        TASKHUB_API_PORT=str(port),
        TASKHUB_POOL_MIN_SIZE="1",
        TASKHUB_POOL_MAX_SIZE="2",
        TASKHUB_DATABASE_TIMEOUT="1",
        TASKHUB_TOKENS="reader=read:fault-suite-token",
    )
    with psycopg.connect(db_url) as conn:
        job_id = defer_sync(conn, ping, {"message": "x"})
        conn.commit()
    api = spawn(["api"], tmp_path, env)
    api.wait_for_line("Stop with Ctrl-C.")
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": "Bearer fault-suite-token"}
    assert httpx.get(f"{base}/jobs/{job_id}", headers=headers).status_code == 200

    def get() -> tuple[int, float, str | None]:
        started = time.monotonic()
        response = httpx.get(f"{base}/jobs/{job_id}", headers=headers, timeout=60)
        return response.status_code, time.monotonic() - started, response.headers.get("Retry-After")

    # Both pooled connections get stuck behind a lock; 40 more callers queue for them.
    with psycopg.connect(db_url) as locker:
        locker.execute("LOCK TABLE procrastinate_jobs IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(max_workers=42) as pool:
            futures = [pool.submit(get) for _ in range(42)]
            time.sleep(4)
            answered = [future.result() for future in futures if future.done()]
            locker.rollback()
            answers = [future.result() for future in futures]
    after = httpx.get(f"{base}/jobs/{job_id}", headers=headers)
    assert api.stop() == 0, api.output

    refused = [(took, retry) for status, took, retry in answers if status == 503]
    served = [took for status, took, _ in answers if status == 200]
    slowest_refusal = max(took for took, _ in refused)
    print(
        f"\npool 2, timeout 1 s, 42 callers behind a lock: {len(refused)} answered 503 within"
        f" {slowest_refusal:.2f} s, {len(served)} served once the lock went"
        f" ({max(served, default=0):.2f} s)"
    )
    assert len(answered) >= 38, "callers got an answer while the pool was stuck"
    assert {status for status, _, _ in answers} <= {200, 503}, answers
    assert len(refused) >= 38, answers
    assert all(retry is not None and int(retry) >= 1 for _, retry in refused), refused
    assert slowest_refusal < 1 + 4, "a 503 within the pool timeout, plus a loaded machine's margin"
    assert after.status_code == 200, "the API recovered when the lock went"
