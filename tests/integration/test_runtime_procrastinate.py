"""procrastinate's worker still drives taskhub's overrides (backend/runtime/) on PostgreSQL.

``TaskhubWorker`` replaces private parts of procrastinate's ``Worker`` and relies on the rest
of it: ``run`` registers the worker and starts ``_run_loop``; ``_run_loop`` starts the side
tasks (listener, periodic deferrer, abort poll) and calls ``_fetch_and_process_jobs``, then
``_shutdown``, which waits for ``_running_jobs`` and aborts what is left through
``_abort_job``; notifications reach ``_handle_notification``. Each test runs a real worker
and checks one of these, so a procrastinate release that changes them fails here.
docs/worker.md lists which test pins which override.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import procrastinate
import pytest
from procrastinate import JobContext, jobs
from psycopg.conninfo import conninfo_to_dict

from backend.db import DictConnection
from backend.runtime.app import build_task_app
from backend.runtime.connection import DedicatedConnection
from backend.runtime.context import RUNTIME_KEY, SETTINGS_KEY
from backend.runtime.manager import TaskhubJobManager
from backend.runtime.periodic import ZonedDeferrer
from backend.runtime.worker import TaskhubWorker
from backend.settings import Settings
from tests.conftest import eventually
from tests.integration.conftest import wait_until_listening

RUNS: list[str] = []  # "start <text>" and "end <text>" of every pins.echo run
CALLS: list[str] = []  # middleware and task calls, outermost first
SEEN: list[dict[str, Any]] = []  # what the worker middleware saw of each job

FetchHook = Callable[[list[jobs.Job]], Awaitable[None]]


class SpyJobManager(TaskhubJobManager):
    """taskhub's job manager, recording its fetches and the notifications it hands over."""

    def __init__(self, connector: procrastinate.BaseConnector) -> None:
        super().__init__(connector)
        self.fetches: list[tuple[int, int, list[int | None]]] = []  # (worker, count, job ids)
        self.notifications: list[tuple[str, jobs.Notification]] = []
        self.during_fetch: FetchHook | None = None  # runs once, before a fetch returns

    async def listen_for_jobs(self, *, on_notification: Any, queues: Any = None) -> None:
        async def heard(*, channel: str, notification: jobs.Notification) -> None:
            await on_notification(channel=channel, notification=notification)
            self.notifications.append((channel, notification))

        await super().listen_for_jobs(on_notification=heard, queues=queues)

    async def fetch_jobs(
        self, connection: DedicatedConnection, *, queues: Any, worker_id: int, count: int
    ) -> list[jobs.Job]:
        fetched = await super().fetch_jobs(
            connection, queues=queues, worker_id=worker_id, count=count
        )
        self.fetches.append((worker_id, count, [job.id for job in fetched]))
        hook, self.during_fetch = self.during_fetch, None
        if hook is not None:
            await hook(fetched)
        return fetched


async def wide_async(call_next: Any, context: JobContext, worker: Any) -> Any:
    CALLS.append("wide async")
    return await call_next()


def wide_sync(call_next: Any, context: JobContext, worker: Any) -> Any:
    CALLS.append("wide sync")
    return call_next()


async def own_async(call_next: Any, context: JobContext, worker: Any) -> Any:
    CALLS.append("own async")
    return await call_next()


def own_sync(call_next: Any, context: JobContext, worker: Any) -> Any:
    CALLS.append("own sync")
    return call_next()


async def outer(call_next: Any, context: JobContext, worker: Any) -> Any:
    """A worker middleware of the test's own, after taskhub's ``track_job``."""
    CALLS.append(f"worker {context.job.task_name}")
    SEEN.append(
        {
            "worker": worker,
            "context": context.additional_context,
            "keys": set(context.additional_context),
            "sigterm": signal.getsignal(signal.SIGTERM),
        }
    )
    return await call_next()


def pins_app(db_url: str, settings: Settings) -> procrastinate.App:
    """taskhub's procrastinate App (no declared task) with plain procrastinate tasks."""
    RUNS.clear()
    CALLS.clear()
    SEEN.clear()
    app = build_task_app(db_url, settings, [])
    app.job_manager = SpyJobManager(app.connector)

    @app.task(name="pins.echo", queue="pins", task_middleware=[own_async])
    async def echo(text: str, pause: float = 0.0, fail: bool = False) -> str:
        CALLS.append("task pins.echo")
        RUNS.append(f"start {text}")
        await asyncio.sleep(pause)
        if fail:
            raise ValueError(f"{text} failed")
        RUNS.append(f"end {text}")
        return text

    @app.task(name="pins.sync_echo", queue="pins", task_middleware=[own_sync])
    def sync_echo(text: str) -> str:
        CALLS.append("task pins.sync_echo")
        return text

    @app.task(name="pins.flaky", queue="pins", retry=1, pass_context=True)
    async def flaky(context: JobContext, text: str) -> str:
        if context.job.attempts == 0:
            raise ValueError("first attempt")
        return text

    @app.periodic(cron="* * * * * *", periodic_id="every second")  # 6th field: seconds
    @app.task(name="pins.tick", queue="ticks")
    async def tick(timestamp: int) -> None: ...

    return app


def spy(app: procrastinate.App) -> SpyJobManager:
    assert isinstance(app.job_manager, SpyJobManager)
    return app.job_manager


@contextlib.asynccontextmanager
async def running(
    app: procrastinate.App, settings: Settings, db_url: str, **options: Any
) -> AsyncIterator[tuple[TaskhubWorker, asyncio.Task[None]]]:
    """A TaskhubWorker on queue "pins" of the open ``app``, polling once a minute: only a
    NOTIFY wakes it unless a test says otherwise."""
    worker = TaskhubWorker(
        app=app,
        **{
            "queues": ["pins"],
            "concurrency": 4,
            "install_signal_handlers": False,
            "fetch_job_polling_interval": 60.0,
            "shutdown_graceful_timeout": 5.0,  # a test that fails stops soon all the same
            "additional_context": {SETTINGS_KEY: settings},
            **options,
        },
    )
    task = asyncio.create_task(worker.run())
    if worker.listen_notify:
        await wait_until_listening(db_url, task)
    try:
        yield worker, task
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=30)


async def defer(app: procrastinate.App, task_name: str, **kwargs: Any) -> int:
    return await app.tasks[task_name].defer_async(**kwargs)


async def job_row(conn: DictConnection, job_id: int) -> dict[str, Any] | None:
    await conn.commit()
    cursor = await conn.execute(
        "SELECT status::text AS status, attempts FROM procrastinate_jobs WHERE id = %s", [job_id]
    )
    return await cursor.fetchone()


def has_status(conn: DictConnection, job_id: int, *wanted: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        row = await job_row(conn, job_id)
        return row is not None and row["status"] in wanted

    return check


async def results(conn: DictConnection, job_ids: list[int]) -> dict[int, Any]:
    await conn.commit()
    cursor = await conn.execute(
        "SELECT job_id, result FROM taskhub.job_results WHERE job_id = ANY(%s)", [job_ids]
    )
    return {row["job_id"]: row["result"] for row in await cursor.fetchall()}


async def results_for(conn: DictConnection, ids: list[int]) -> bool:
    return len(await results(conn, ids)) == len(ids)


async def errors(conn: DictConnection, job_id: int) -> list[tuple[int, str]]:
    await conn.commit()
    cursor = await conn.execute(
        "SELECT attempt, type FROM taskhub.job_errors WHERE job_id = %s ORDER BY attempt",
        [job_id],
    )
    return [(row["attempt"], row["type"]) for row in await cursor.fetchall()]


async def test_run_registers_the_worker_then_runs_our_batching_loop(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """``Worker.run`` registers the worker before ``_run_loop``, which calls our
    ``_fetch_and_process_jobs``: one statement takes the queued jobs, and their outcomes
    (results included) go through our ``_process_job`` and finish batches."""
    app = pins_app(db_url, settings)
    async with app.open_async():
        ids = [await defer(app, "pins.echo", text=f"job {n}") for n in range(3)]
        registered: list[bool] = []

        async def check_registration(fetched: list[jobs.Job]) -> None:
            worker_id, _, _ = spy(app).fetches[-1]
            cursor = await conn.execute(
                "SELECT count(*) AS n FROM procrastinate_workers WHERE id = %s", [worker_id]
            )
            row = await cursor.fetchone()
            registered.append(row is not None and row["n"] == 1)

        spy(app).during_fetch = check_registration
        async with running(app, settings, db_url):
            await eventually(lambda: results_for(conn, ids), within=15)

    _, count, fetched = spy(app).fetches[0]
    assert (count, fetched) == (4, ids), "one fetch took every queued job"
    assert registered == [True]
    assert await results(conn, ids) == {job_id: f"job {n}" for n, job_id in enumerate(ids)}


async def test_a_notify_wakes_our_fetch_loop_and_one_during_a_fetch_calls_for_another(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """procrastinate starts ``app.job_manager.listen_for_jobs(on_notification=
    self._handle_notification)``; the handler sets ``_new_job_event``, which our loop waits
    on, and which keeps a NOTIFY that lands while a fetch is in flight (no poll for a
    minute here)."""
    app = pins_app(db_url, settings)
    async with app.open_async(), running(app, settings, db_url):
        late: list[int] = []

        async def defer_during_the_fetch(fetched: list[jobs.Job]) -> None:
            # The fetch has taken its snapshot: this job is for the next fetch.
            late.append(await defer(app, "pins.echo", text="late"))

            async def heard() -> bool:
                return any(note["job_id"] == late[0] for _, note in spy(app).notifications)

            await eventually(heard, within=10)

        spy(app).during_fetch = defer_during_the_fetch
        first = await defer(app, "pins.echo", text="first")
        await eventually(has_status(conn, first, "succeeded"), within=10)
        await eventually(has_status(conn, late[0], "succeeded"), within=10)

    assert [fetched for _, _, fetched in spy(app).fetches[-2:]] == [[first], [late[0]]]
    assert ("procrastinate_queue_v1#pins", {"type": "job_inserted", "job_id": first}) in (
        spy(app).notifications
    )


async def test_our_periodic_deferrer_runs_in_the_worker_with_the_settings(
    settings: Settings, db_url: str, conn: DictConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """procrastinate's ``_start_side_tasks`` runs ``self._periodic_deferrer()``: ours, a
    ZonedDeferrer in TASKHUB_TIMEZONE with TASKHUB_SCHEDULE_CATCH_UP, deferring through
    procrastinate's ``defer_periodic_job``."""
    started: list[ZonedDeferrer] = []

    class Recording(ZonedDeferrer):
        async def worker(self) -> None:
            started.append(self)
            await super().worker()

    monkeypatch.setattr("backend.runtime.worker.ZonedDeferrer", Recording)
    zoned = settings.model_copy(update={"timezone": "Asia/Kolkata", "schedule_catch_up": 123.0})
    app = pins_app(db_url, zoned)
    async with app.open_async(), running(app, zoned, db_url):

        async def ticked() -> bool:
            await conn.commit()
            cursor = await conn.execute(
                "SELECT count(*) AS n FROM procrastinate_periodic_defers"
                " WHERE task_name = 'pins.tick' AND job_id IS NOT NULL"
            )
            row = await cursor.fetchone()
            return row is not None and row["n"] > 0

        await eventually(ticked, within=10)

    (deferrer,) = started
    assert deferrer.timezone == zoneinfo.ZoneInfo("Asia/Kolkata")
    assert deferrer.max_delay == 123.0
    assert deferrer.registry is app.periodic_registry


async def test_shutdown_waits_for_a_running_job_and_its_finish_then_unregisters(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """procrastinate's ``_shutdown`` waits for ``_running_jobs`` (which our loop fills) up to
    the grace period; the job's outcome commits before the worker is unregistered."""
    app = pins_app(db_url, settings)
    async with app.open_async():
        job_id = await defer(app, "pins.echo", text="slow", pause=0.5)
        async with running(app, settings, db_url, shutdown_graceful_timeout=10) as (worker, task):

            async def started() -> bool:
                return RUNS == ["start slow"]

            await eventually(started, within=10)
            worker.stop()
            await asyncio.wait_for(task, timeout=10)
            assert RUNS == ["start slow", "end slow"], "the job ran to its end"

    assert await job_row(conn, job_id) == {"status": "succeeded", "attempts": 1}
    assert await results(conn, [job_id]) == {job_id: "slow"}
    cursor = await conn.execute("SELECT count(*) AS n FROM procrastinate_workers")
    assert await cursor.fetchone() == {"n": 0}, "unregistered"


async def test_a_job_still_running_after_the_grace_period_is_aborted_and_requeued(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """After the grace period procrastinate aborts running jobs through ``_abort_job`` with
    ``AbortReason.SHUTDOWN``: the job goes back to the queue, its attempt not counted."""
    app = pins_app(db_url, settings)
    async with app.open_async():
        job_id = await defer(app, "pins.echo", text="endless", pause=60)
        async with running(app, settings, db_url, shutdown_graceful_timeout=0.2) as (
            worker,
            task,
        ):

            async def started() -> bool:
                return RUNS == ["start endless"]

            await eventually(started, within=10)
            stopped_at = time.monotonic()
            worker.stop()
            await asyncio.wait_for(task, timeout=10)
            assert time.monotonic() - stopped_at < 5

    assert RUNS == ["start endless"]
    assert await job_row(conn, job_id) == {"status": "todo", "attempts": 0}


@pytest.mark.parametrize("via", ["notify", "poll"])
async def test_an_abort_request_cancels_a_running_async_job(
    settings: Settings, db_url: str, conn: DictConnection, via: str
) -> None:
    """An abort request reaches ``_handle_abort_jobs_requested`` (from a NOTIFY through
    ``_handle_notification``, or from procrastinate's poll), whose ``super()`` calls our
    ``_abort_job``, whose ``super()`` cancels the job's asyncio task."""
    options: dict[str, Any] = (
        {"abort_job_polling_interval": 60.0}
        if via == "notify"
        else {
            "listen_notify": False,
            "abort_job_polling_interval": 0.1,
            "fetch_job_polling_interval": 0.1,
        }
    )
    app = pins_app(db_url, settings)
    async with app.open_async(), running(app, settings, db_url, **options):
        job_id = await defer(app, "pins.echo", text="endless", pause=60)

        async def started() -> bool:
            return RUNS == ["start endless"]

        await eventually(started, within=10)
        await conn.execute("SELECT procrastinate_cancel_job_v1(%s, true, false)", [job_id])
        await conn.commit()
        await eventually(has_status(conn, job_id, "aborted"), within=10)

    assert RUNS == ["start endless"]
    assert await errors(conn, job_id) == [(1, "JobAborted")]


async def test_task_and_worker_middlewares_wrap_our_process_job_as_procrastinate_s(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """Our ``_process_job`` composes procrastinate's worker middlewares (``track_job`` and
    the worker's own) and, per task, ``_resolve_task_middlewares``: worker-wide ones of the
    task's kind, then the task's own. Each job gets its own copy of ``additional_context``,
    and ``install_signal_handlers=False`` leaves the signals alone."""
    app = pins_app(db_url, settings)
    sigterm = signal.getsignal(signal.SIGTERM)
    async with app.open_async():
        ids = [
            await defer(app, "pins.echo", text="async"),
            await defer(app, "pins.sync_echo", text="sync"),
        ]
        async with running(
            app,
            settings,
            db_url,
            concurrency=1,  # one job at a time: CALLS in order
            task_middleware=[wide_async, wide_sync],
            worker_middleware=[outer],
        ) as (worker, _):
            await eventually(lambda: results_for(conn, ids), within=15)

    assert CALLS == [
        "worker pins.echo",
        "wide async",
        "own async",
        "task pins.echo",
        "worker pins.sync_echo",
        "wide sync",
        "own sync",
        "task pins.sync_echo",
    ]
    assert all(seen["worker"] is worker for seen in SEEN)
    assert all({SETTINGS_KEY, RUNTIME_KEY} <= seen["keys"] for seen in SEEN), "track_job ran first"
    assert SEEN[0]["context"] is not SEEN[1]["context"], "a dict per job"
    assert worker.additional_context is not None
    assert RUNTIME_KEY not in worker.additional_context
    assert all(seen["sigterm"] == sigterm for seen in SEEN)
    assert await results(conn, ids) == {ids[0]: "async", ids[1]: "sync"}


async def test_a_failed_attempt_is_retried_by_the_task_s_retry_strategy(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """Our ``_process_job`` asks procrastinate's ``task.get_retry_exception`` for the retry
    decision, and the finish batch retries the job through ``procrastinate_retry_job_v2``."""
    app = pins_app(db_url, settings)
    async with app.open_async():
        job_id = await defer(app, "pins.flaky", text="second time")
        async with running(app, settings, db_url, fetch_job_polling_interval=0.1):
            await eventually(has_status(conn, job_id, "succeeded"), within=15)

    assert await job_row(conn, job_id) == {"status": "succeeded", "attempts": 2}
    assert await errors(conn, job_id) == [(1, "ValueError")]
    assert await results(conn, [job_id]) == {job_id: "second time"}


def job_lines(caplog: pytest.LogCaptureFixture) -> dict[str, list[logging.LogRecord]]:
    lines: dict[str, list[logging.LogRecord]] = {}
    for record in caplog.records:
        if record.name.startswith("procrastinate.worker") and (
            hasattr(record, "job") or hasattr(record, "job_id")
        ):
            lines.setdefault(getattr(record, "action", ""), []).append(record)
    return lines


async def test_procrastinate_logs_job_outcomes_through_our_log_hooks(
    settings: Settings, db_url: str, conn: DictConnection, caplog: pytest.LogCaptureFixture
) -> None:
    """procrastinate's ``_log_job_outcome`` and ``_log_extra`` build the job's lines through
    our overrides: one line per finished job, failures with the job's context; procrastinate's
    routine start lines at DEBUG only."""
    caplog.set_level(logging.INFO, logger="procrastinate.worker")
    app = pins_app(db_url, settings)
    async with app.open_async(), running(app, settings, db_url) as (worker, _):
        ok = await defer(app, "pins.echo", text="ok")
        failing = await defer(app, "pins.echo", text="bad", fail=True)
        await eventually(has_status(conn, ok, "succeeded"), within=10)
        await eventually(has_status(conn, failing, "failed"), within=10)
        quiet = job_lines(caplog)
        caplog.clear()
        caplog.set_level(logging.DEBUG, logger="procrastinate.worker")
        verbose_id = await defer(app, "pins.echo", text="verbose")
        await eventually(has_status(conn, verbose_id, "succeeded"), within=10)
        verbose = job_lines(caplog)
        worker_id = worker.worker_id

    assert set(quiet) == {"job_success", "job_error"}, "one line per finished job at INFO"
    assert [r.levelno for r in quiet["job_success"]] == [logging.INFO]
    (error,) = quiet["job_error"]
    assert error.levelno == logging.ERROR
    assert error.job["id"] == failing  # type: ignore[attr-defined]
    assert error.worker["worker_id"] == worker_id  # type: ignore[attr-defined]
    assert isinstance(error.exc_info and error.exc_info[1], ValueError)
    assert {"start_job", "job_success"} <= set(verbose)
    assert all(r.job_id == verbose_id for r in verbose["job_success"])  # type: ignore[attr-defined]


async def test_deleting_jobs_goes_through_procrastinate_s_persist_job_status(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """With procrastinate's ``delete_jobs``, our ``_persist_job_status`` hands the outcome
    to procrastinate's own (``super()``, same parameters)."""
    app = pins_app(db_url, settings)
    async with app.open_async():
        ok = await defer(app, "pins.echo", text="ok")
        failing = await defer(app, "pins.echo", text="bad", fail=True)
        async with running(app, settings, db_url, delete_jobs="successful"):
            await eventually(has_status(conn, failing, "failed"), within=10)

            async def deleted() -> bool:
                return await job_row(conn, ok) is None

            await eventually(deleted, within=10)


async def test_procrastinate_s_own_worker_fetches_through_our_fetch_job(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    """procrastinate's ``Worker`` fetches with ``app.job_manager.fetch_job(queues=,
    worker_id=)``: ours, which leaves the jobs of a paused queue waiting."""
    app = pins_app(db_url, settings)
    async with app.open_async():
        paused = await app.tasks["pins.echo"].configure(queue="paused").defer_async(text="held")
        runs = await defer(app, "pins.echo", text="runs")
        await conn.execute(
            "INSERT INTO taskhub.paused_queues (queue_name, paused_by) VALUES ('paused', 'test')"
        )
        await conn.commit()
        await asyncio.wait_for(
            app.run_worker_async(wait=False, install_signal_handlers=False, listen_notify=False),
            timeout=15,
        )

    assert await job_row(conn, runs) == {"status": "succeeded", "attempts": 1}
    assert await job_row(conn, paused) == {"status": "todo", "attempts": 0}


async def test_dedicated_connections_connect_like_the_connector_s_pool(
    settings: Settings, db_url: str
) -> None:
    """``DedicatedConnection.like_pool_of`` reads the conninfo and kwargs of procrastinate's
    ``PsycopgConnector.pool``: the same database, the same row factory (dict rows)."""
    app = pins_app(db_url, settings)
    async with app.open_async():
        connection = DedicatedConnection.like_pool_of(app.connector)
        try:
            rows = await connection.fetch_all(
                "SELECT current_database() AS db, current_setting('jit') AS jit", {}
            )
        finally:
            await connection.close()
    assert rows == [{"db": conninfo_to_dict(db_url)["dbname"], "jit": "off"}]
