"""The batching worker keeps procrastinate's rules: lock order, aborts, shutdown, lost finishes.

Workers fetch as many jobs as they have free slots in one statement and finish them in
batches (backend/runtime/worker.py, backend/runtime/finisher.py). These tests put a real
worker in the moments batching creates: between a fetch and the jobs' start, and in a
finish statement shared by several jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest
from procrastinate import App, jobs
from psycopg.rows import dict_row
from pydantic import BaseModel

from backend import defer
from backend.db import DictConnection
from backend.declare.registry import TaskBlueprint
from backend.queries import QUERIES
from backend.runtime.app import build_task_app
from backend.runtime.connection import DedicatedConnection
from backend.runtime.context import SETTINGS_KEY
from backend.runtime.finisher import FINISH_CONNECTION_SETTINGS as FINISH_SETTINGS
from backend.runtime.finisher import FinishBatcher, finish_entry
from backend.runtime.manager import TaskhubJobManager
from backend.runtime.worker import TaskhubWorker
from backend.settings import Settings
from tests.conftest import BLUEPRINTS, eventually
from tests.integration.conftest import running_worker

blueprint = TaskBlueprint()
ALL = (*BLUEPRINTS, blueprint)

RUNS: list[tuple[str, float, float]] = []  # (token, start, end) of every run of tests.record


class Token(BaseModel):
    token: str
    pause: float = 0.0


@blueprint.task(name="tests.record")
async def record(args: Token) -> str:
    start = time.monotonic()
    await asyncio.sleep(args.pause)
    RUNS.append((args.token, start, time.monotonic()))
    return args.token


class Text(BaseModel):
    text: str
    nul: bool = False


@blueprint.task(name="tests.echo")
async def echo(args: Text) -> str:
    # PostgreSQL's jsonb refuses U+0000: a result no finish statement can store.
    return args.text + ("\x00" if args.nul else "")


AfterFetch = Callable[[TaskhubWorker, list[jobs.Job]], Awaitable[None]]


class HookedJobManager(TaskhubJobManager):
    """taskhub's job manager, calling ``after_fetch`` once, after the first non-empty fetch."""

    def __init__(self, app: App, after_fetch: AfterFetch) -> None:
        super().__init__(app.connector)
        self.after_fetch: AfterFetch | None = after_fetch
        self.worker: TaskhubWorker | None = None

    async def fetch_jobs(self, connection: DedicatedConnection, **options: Any) -> list[jobs.Job]:
        fetched = await super().fetch_jobs(connection, **options)
        hook, self.after_fetch = self.after_fetch, None
        if fetched and hook is not None:
            assert self.worker is not None
            await hook(self.worker, fetched)
        elif hook is not None:
            self.after_fetch = hook
        return fetched


@contextlib.asynccontextmanager
async def hooked_worker(
    settings: Settings, db_url: str, after_fetch: AfterFetch, *, concurrency: int = 5
) -> AsyncIterator[tuple[TaskhubWorker, asyncio.Task[None]]]:
    app = build_task_app(db_url, settings, ALL)
    manager = HookedJobManager(app, after_fetch)
    app.job_manager = manager
    worker = TaskhubWorker(
        app=app,
        queues=["default"],  # not the periodic maintenance jobs its deferrer adds
        concurrency=concurrency,
        install_signal_handlers=False,
        fetch_job_polling_interval=0.2,
        additional_context={SETTINGS_KEY: settings},
    )
    manager.worker = worker

    async def run() -> None:
        async with app.open_async():
            await worker.run()

    task = asyncio.create_task(run())
    try:
        yield worker, task
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=30)


async def defer_many(conn: DictConnection, name: str, many: list[dict[str, Any]]) -> list[int]:
    await conn.commit()
    async with conn.transaction():
        return await defer.batch_defer(conn, blueprint.tasks[name], many)


async def defer_one(conn: DictConnection, name: str, args: dict[str, Any], **options: Any) -> int:
    await conn.commit()
    async with conn.transaction():
        return await defer.defer(conn, blueprint.tasks[name], args, **options)


async def statuses(conn: DictConnection, job_ids: list[int]) -> dict[int, str]:
    await conn.commit()
    cursor = await conn.execute(
        "SELECT id, status FROM procrastinate_jobs WHERE id = ANY(%s)", [job_ids]
    )
    return {row["id"]: row["status"] for row in await cursor.fetchall()}


async def all_finished(conn: DictConnection, job_ids: list[int]) -> bool:
    found = await statuses(conn, job_ids)
    return all(status in ("succeeded", "failed", "aborted") for status in found.values())


async def test_an_abort_for_a_job_fetched_in_a_batch_ends_it_before_it_runs(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    RUNS.clear()
    ids = await defer_many(conn, "tests.record", [{"token": f"b{n}"} for n in range(3)])
    victim = ids[1]

    async def abort_the_second(worker: TaskhubWorker, fetched: list[jobs.Job]) -> None:
        assert [job.id for job in fetched] == ids, "one statement fetched the whole batch"
        # The user aborts the job now that it is `doing`; the request reaches this worker
        # (NOTIFY) before the batch it belongs to is dispatched.
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as other:
            await other.execute("SELECT procrastinate_cancel_job_v1(%s, true, false)", [victim])

        async def heard() -> bool:
            return victim in worker._early_aborts

        await eventually(heard, within=10)

    async with hooked_worker(settings, db_url, abort_the_second):
        await eventually(lambda: all_finished(conn, ids), within=20)

    assert await statuses(conn, ids) == {
        ids[0]: "succeeded",
        victim: "aborted",
        ids[2]: "succeeded",
    }
    assert sorted(token for token, _, _ in RUNS) == ["b0", "b2"], "the aborted job never ran"
    cursor = await conn.execute("SELECT type FROM taskhub.job_errors WHERE job_id = %s", [victim])
    assert [row["type"] for row in await cursor.fetchall()] == ["JobAborted"]


async def test_a_worker_stopping_hands_its_fetched_jobs_back_unstarted(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    RUNS.clear()
    ids = await defer_many(conn, "tests.record", [{"token": f"s{n}"} for n in range(4)])

    async def stop(worker: TaskhubWorker, fetched: list[jobs.Job]) -> None:
        assert len(fetched) == 4
        worker.stop()  # SIGTERM arrives while the batch is in the worker's hands

    async with hooked_worker(settings, db_url, stop) as (_, task):
        await asyncio.wait_for(task, timeout=15)

    assert RUNS == [], "no fetched job starts once the worker stops"
    cursor = await conn.execute(
        "SELECT id, status, attempts FROM procrastinate_jobs WHERE id = ANY(%s) ORDER BY id", [ids]
    )
    rows = await cursor.fetchall()
    assert [(row["status"], row["attempts"]) for row in rows] == [("todo", 0)] * 4

    # Another worker takes them, and each runs once.
    async with running_worker(settings, db_url, blueprints=ALL, concurrency=4):
        await eventually(lambda: all_finished(conn, ids), within=20)
    assert sorted(token for token, _, _ in RUNS) == ["s0", "s1", "s2", "s3"]
    assert set((await statuses(conn, ids)).values()) == {"succeeded"}


async def test_one_finish_that_fails_does_not_roll_back_its_batch(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    many = [{"text": f"row {n}", "nul": n == 3} for n in range(8)]
    ids = await defer_many(conn, "tests.echo", many)

    async with running_worker(settings, db_url, blueprints=ALL, concurrency=8):
        await eventually(lambda: all_finished(conn, ids), within=20)

    found = await statuses(conn, ids)
    assert [found[job_id] for job_id in ids] == ["succeeded"] * 3 + ["failed"] + ["succeeded"] * 4
    cursor = await conn.execute(
        "SELECT job_id, result FROM taskhub.job_results WHERE job_id = ANY(%s)", [ids]
    )
    results = {row["job_id"]: row["result"] for row in await cursor.fetchall()}
    assert results == {job_id: f"row {n}" for n, job_id in enumerate(ids) if n != 3}
    cursor = await conn.execute(
        "SELECT type, message FROM taskhub.job_errors WHERE job_id = %s", [ids[3]]
    )
    error = await cursor.fetchone()
    assert error is not None
    assert error["type"] == "ResultNotStored"
    assert "could not store this job's outcome" in error["message"]


@pytest.mark.parametrize("workers", [2])
async def test_jobs_sharing_a_lock_run_one_at_a_time_in_order(
    settings: Settings, db_url: str, conn: DictConnection, workers: int
) -> None:
    RUNS.clear()
    expected: dict[str, list[tuple[int, int, str]]] = {}
    for n in range(24):
        lock = f"account-{n % 3}"
        priority = 5 if n % 8 == 7 else 0  # a few urgent ones jump their lock's line
        token = f"{lock}/{n}"
        job_id = await defer_one(
            conn, "tests.record", {"token": token, "pause": 0.01}, lock=lock, priority=priority
        )
        expected.setdefault(lock, []).append((-priority, job_id, token))
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(workers):
            await stack.enter_async_context(
                running_worker(settings, db_url, blueprints=ALL, concurrency=8)
            )

        async def all_ran() -> bool:
            return len(RUNS) == 24

        await eventually(all_ran, within=30)

    for lock, queued in expected.items():
        runs = sorted((run for run in RUNS if run[0].startswith(lock + "/")), key=lambda r: r[1])
        order = [token for _, _, token in sorted(queued)]
        assert [token for token, _, _ in runs] == order
        for (_, _, end), (_, start, _) in itertools.pairwise(runs):
            assert start >= end, f"two jobs of {lock} ran at once"


async def test_a_fetch_takes_at_most_the_free_slots_in_priority_order(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    ids = [
        await defer_one(conn, "tests.record", {"token": str(n)}, priority=n % 3) for n in range(10)
    ]
    manager = TaskhubJobManager(build_task_app(db_url, settings, BLUEPRINTS).connector)
    fetch = DedicatedConnection(db_url, {"row_factory": dict_row})
    try:
        cursor = await conn.execute("SELECT procrastinate_register_worker_v1() AS id")
        row = await cursor.fetchone()
        assert row is not None
        await conn.commit()
        first = await manager.fetch_jobs(fetch, queues=None, worker_id=row["id"], count=4)
        rest = await manager.fetch_jobs(fetch, queues=None, worker_id=row["id"], count=100)
        none = await manager.fetch_jobs(fetch, queues=["elsewhere"], worker_id=row["id"], count=5)
    finally:
        await fetch.close()
    by_priority = sorted(ids, key=lambda job_id: (-(ids.index(job_id) % 3), job_id))
    assert [job.id for job in first] == by_priority[:4]
    assert [job.id for job in rest] == by_priority[4:]
    assert none == []
    assert {job.status for job in first + rest} == {"doing"}


async def listener_pids(conn: DictConnection) -> set[int]:
    await conn.commit()
    cursor = await conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND query LIKE 'LISTEN \"procrastinate%%' AND state = 'idle'"
    )
    return {row["pid"] for row in await cursor.fetchall()}


async def test_notifications_wake_the_worker_in_bursts_and_after_the_listen_connection_breaks(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """No poll can help here (one a minute): only NOTIFYs reach the worker."""
    patient = settings.model_copy(update={"fetch_polling_interval": 60.0})
    async with running_worker(patient, db_url, queues=["default"], blueprints=ALL):
        # A burst: one commit, 2,000 notifications, every job run.
        burst = await defer_many(conn, "tests.echo", [{"text": str(i)} for i in range(2000)])
        await eventually(lambda: all_finished(conn, burst), within=60)
        # The server drops the LISTEN connection (a restart, a network cut): the worker
        # listens again on a new one, and the next job still wakes it at once.
        (before,) = await listener_pids(conn)
        await conn.execute("SELECT pg_terminate_backend(%s)", [before])

        async def listening_again() -> bool:
            return bool(await listener_pids(conn) - {before})

        await eventually(listening_again, within=15)
        started = time.monotonic()
        job_id = await defer_one(conn, "tests.echo", {"text": "woken"})
        await eventually(lambda: all_finished(conn, [job_id]), within=15)
        assert time.monotonic() - started < 10, "woken by its NOTIFY, not by a poll"
    assert set((await statuses(conn, [*burst, job_id])).values()) == {"succeeded"}


async def test_draining_the_finisher_lets_the_last_batch_wake_its_waiters(
    settings: Settings, db_url: str, conn: DictConnection, caplog: pytest.LogCaptureFixture
) -> None:
    """A stopping worker closes its finish connection: the wake-ups its last batch sends
    after committing must have gone out by then (the worker drains the finisher first)."""
    job_id = await defer_one(conn, "tests.record", {"token": "last"})
    cursor = await conn.execute("SELECT procrastinate_register_worker_v1() AS id")
    row = await cursor.fetchone()
    assert row is not None
    await conn.execute(
        "INSERT INTO taskhub.job_waiters (job_id, waiter) VALUES (%s, gen_random_uuid())",
        (job_id,),
    )
    await conn.commit()
    manager = TaskhubJobManager(build_task_app(db_url, settings, BLUEPRINTS).connector)
    fetch = DedicatedConnection(db_url, {"row_factory": dict_row})
    finish = DedicatedConnection(db_url, {"row_factory": dict_row}, settings=FINISH_SETTINGS)
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await listener.execute("LISTEN taskhub_job_finished")
    try:
        (job,) = await manager.fetch_jobs(fetch, queues=None, worker_id=row["id"], count=1)
        batcher = FinishBatcher(
            finish,
            QUERIES["finish_jobs"],
            QUERIES["notify_finished_waiters"],
            worker_id=row["id"],
            jobs_still_running=lambda: 0,
            delay=0.01,
        )
        assert await batcher.submit(finish_entry(job_id, "succeeded", 1))
        await batcher.drain()
        await finish.close()  # as the worker does right after draining
        await asyncio.sleep(0.3)  # an undrained wake-up statement would fail meanwhile
        received = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                async for notify in listener.notifies():
                    received.append(int(notify.payload))
        assert received == [job.id]
        assert not [r for r in caplog.records if r.name == "backend.runtime.finisher"]
    finally:
        await listener.close()
        await fetch.close()
        await finish.close()


async def test_a_worker_runs_at_most_its_concurrency_and_holds_at_most_three_times_it(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """Fetches never exceed the free slots, and jobs whose outcome has not committed yet (the
    running ones and two batches of outcomes) stay within 3 x concurrency."""
    RUNS.clear()
    concurrency = 4
    sleepers = await defer_many(
        conn, "tests.record", [{"token": f"r{n}", "pause": 0.03} for n in range(24)]
    )
    quick = await defer_many(conn, "tests.echo", [{"text": f"e{n}"} for n in range(200)])
    fetches: list[tuple[int, int, int]] = []  # (running, held, fetched) as each fetch returns

    async def log_fetch(worker: TaskhubWorker, fetched: list[jobs.Job]) -> None:
        fetches.append((worker._still_running, len(worker._running_jobs), len(fetched)))
        manager = worker.app.job_manager
        assert isinstance(manager, HookedJobManager)
        manager.after_fetch = log_fetch  # every fetch, not just the first

    async with hooked_worker(settings, db_url, log_fetch, concurrency=concurrency):
        await eventually(lambda: all_finished(conn, sleepers + quick), within=30)

    assert len(fetches) > 1
    assert all(running + fetched <= concurrency for running, _, fetched in fetches), fetches
    assert all(held + fetched <= 3 * concurrency for _, held, fetched in fetches), fetches
    edges = sorted([(start, 1) for _, start, _ in RUNS] + [(end, -1) for _, _, end in RUNS])
    at_once = list(itertools.accumulate(step for _, step in edges))
    assert 2 <= max(at_once) <= concurrency
