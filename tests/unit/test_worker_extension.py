"""What backend/runtime/ relies on in procrastinate's (private) worker and periodic deferrer.

Each test runs procrastinate's own code (on its ``InMemoryConnector``) with taskhub's
overrides in place and checks that procrastinate still calls them as they expect: if a
procrastinate release changes these, this fails first, with a clear reason, before any
integration test shows lost results or errors. tests/integration/test_runtime_procrastinate.py
runs the whole worker on PostgreSQL; docs/worker.md lists which test pins which override.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import types
import zoneinfo
from collections.abc import AsyncIterator, Iterable

import procrastinate
import pytest
from procrastinate import jobs
from procrastinate.periodic import PeriodicDeferrer, TaskAtTime
from procrastinate.testing import InMemoryConnector

from backend.runtime.periodic import ZonedDeferrer
from backend.runtime.worker import RoutineJobLines, Signal, TaskhubWorker, WakeEvent, wait_first

RAN: list[str] = []  # the tasks' own runs, by job token
STARTED = asyncio.Event()  # a run of pins.sleep has begun


def in_memory_app() -> procrastinate.App:
    app = procrastinate.App(connector=InMemoryConnector())

    @app.task(name="pins.sleep", queue="pins", pass_context=True)
    async def sleep(context: procrastinate.JobContext, token: str) -> None:
        RAN.append(token)
        STARTED.set()
        await asyncio.sleep(60)

    return app


@pytest.fixture
async def worker() -> AsyncIterator[TaskhubWorker]:
    """A TaskhubWorker on procrastinate's in-memory connector, registered, not running.

    ``delete_jobs="successful"`` sends outcomes through procrastinate's own
    ``_persist_job_status`` (there is no finish batch without PostgreSQL).
    """
    global STARTED
    RAN.clear()
    STARTED = asyncio.Event()  # on this test's event loop
    app = in_memory_app()
    async with app.open_async():
        taskhub_worker = TaskhubWorker(
            app=app, install_signal_handlers=False, delete_jobs="successful"
        )
        taskhub_worker.worker_id = await app.job_manager.register_worker()
        yield taskhub_worker
        for task in list(taskhub_worker._running_jobs):
            task.cancel()


async def fetch(worker: TaskhubWorker, token: str) -> jobs.Job:
    """A job of pins.sleep, now ``doing`` for ``worker`` as a fetch leaves it."""
    await worker.app.tasks["pins.sleep"].defer_async(token=token)
    assert worker.worker_id is not None
    job = await worker.app.job_manager.fetch_job(queues=None, worker_id=worker.worker_id)
    assert job is not None
    return job


def status(worker: TaskhubWorker, job: jobs.Job) -> str:
    connector = worker.app.connector
    assert isinstance(connector, InMemoryConnector)
    assert job.id is not None
    return str(connector.jobs[job.id]["status"])


async def test_a_job_inserted_notification_wakes_our_fetch_loop_and_survives_its_clear(
    worker: TaskhubWorker,
) -> None:
    """procrastinate's ``_handle_notification`` sets ``self._new_job_event``: ours, which
    :func:`wait_first` waits on and which keeps a wake-up that lands during a fetch."""
    waiting = asyncio.create_task(wait_first(worker._new_job_event, worker._stop_event, timeout=60))
    await asyncio.sleep(0)
    assert not waiting.done()
    notification: jobs.Notification = {"type": "job_inserted", "job_id": 1}
    await worker._handle_notification(
        channel="procrastinate_any_queue_v1", notification=notification
    )
    await asyncio.wait_for(waiting, timeout=1)
    worker._new_job_event.woke()  # the loop is awake and fetches; another NOTIFY lands
    await worker._handle_notification(
        channel="procrastinate_any_queue_v1", notification=notification
    )
    worker._new_job_event.clear()  # after the fetch, which was too early to see that job
    assert worker._new_job_event.is_set(), "the late notification calls for another fetch"


async def test_an_abort_notification_reaches_our_abort_hooks(worker: TaskhubWorker) -> None:
    """procrastinate's ``_handle_notification`` hands an abort request to
    ``_handle_abort_jobs_requested``, whose ``super()`` calls ``_abort_job`` for each running
    job; procrastinate's ``_abort_job`` cancels an async one and records the reason that
    ``JobContext.should_abort`` reads."""
    running, fetched = await fetch(worker, "running"), await fetch(worker, "fetched")
    worker._start_job(running)
    await asyncio.wait_for(STARTED.wait(), timeout=5)
    worker._start_job(fetched)  # fetched, but its task has not begun yet
    overtaken_id = await worker.app.tasks["pins.sleep"].defer_async(token="overtaken")
    assert running.id is not None
    assert fetched.id is not None
    for job_id in (running.id, fetched.id, overtaken_id):
        request: jobs.AbortJobRequested = {"type": "abort_job_requested", "job_id": job_id}
        await worker._handle_notification(
            channel="procrastinate_any_queue_v1", notification=request
        )
    assert worker.worker_id is not None
    overtaken = await worker.app.job_manager.fetch_job(queues=None, worker_id=worker.worker_id)
    assert overtaken is not None
    assert overtaken.id == overtaken_id
    worker._start_job(overtaken)
    await asyncio.wait_for(asyncio.gather(*worker._running_jobs), timeout=5)

    assert [status(worker, job) for job in (running, fetched, overtaken)] == ["aborted"] * 3
    assert RAN == ["running"], "a job aborted before it started never runs"


async def test_stop_sets_the_signal_our_fetch_loop_waits_on(worker: TaskhubWorker) -> None:
    """procrastinate's ``stop`` sets ``self._stop_event``: ours, a :class:`Signal`."""
    waiting = asyncio.create_task(wait_first(worker._new_job_event, worker._stop_event, timeout=60))
    await asyncio.sleep(0)
    assert not worker.stopping()
    worker.stop()
    await asyncio.wait_for(waiting, timeout=1)
    assert worker.stopping()


class Stop(Exception):
    """Ends the deferrer's endless loop in a test."""


async def test_procrastinate_s_deferrer_loop_runs_our_ticks_and_keeps_last_defers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """procrastinate's ``PeriodicDeferrer.worker`` asks ``get_previous_tasks(at=now)`` what to
    defer and sleeps ``get_next_tick(at=now)``: ZonedDeferrer's, in the timezone, within
    ``catch_up`` (procrastinate's ``max_delay``), remembering ticks in ``last_defers``."""
    app = procrastinate.App(connector=InMemoryConnector())

    @app.periodic(cron="0 * * * *", periodic_id="hourly")
    @app.task(name="pins.tick", queue="pins")
    def tick(timestamp: int) -> None: ...

    def utc(hour: int, minute: int) -> int:
        return int(datetime.datetime(2026, 1, 10, hour, minute, tzinfo=datetime.UTC).timestamp())

    # Kolkata is UTC+5:30: its hourly ticks fall at half past, UTC.
    nows = iter([utc(12, 10), utc(12, 20), utc(12, 31)])
    monkeypatch.setattr(
        "procrastinate.periodic.time", types.SimpleNamespace(time=lambda: next(nows))
    )
    kolkata = zoneinfo.ZoneInfo("Asia/Kolkata")
    deferrer = ZonedDeferrer(app.periodic_registry, timezone=kolkata, catch_up=3600)
    deferred: list[list[int]] = []
    waits: list[float] = []

    async def defer_jobs(jobs_to_defer: Iterable[TaskAtTime]) -> None:
        due = list(jobs_to_defer)
        deferred.append([timestamp for _, timestamp in due])
        await PeriodicDeferrer.defer_jobs(deferrer, due)

    async def wait(next_tick: float) -> None:
        waits.append(next_tick)
        if len(waits) == 3:
            raise Stop

    monkeypatch.setattr(deferrer, "defer_jobs", defer_jobs)
    monkeypatch.setattr(deferrer, "wait", wait)
    async with app.open_async():
        with pytest.raises(Stop):
            await asyncio.wait_for(deferrer.worker(), timeout=5)

    # 12:10: the 11:30 tick, 40 min late, within the catch-up (procrastinate's default max_delay
    # of 10 min would skip it); 12:20: nothing new (last_defers); 12:31: the 12:30 tick.
    assert deferred == [[utc(11, 30)], [], [utc(12, 30)]]
    assert waits == [20 * 60, 10 * 60, 59 * 60]
    assert deferrer.last_defers == {("pins.tick", "hourly"): utc(12, 30)}
    connector = app.connector
    assert isinstance(connector, InMemoryConnector)
    assert len(connector.jobs) == 2, "procrastinate deferred both ticks"
    assert connector.periodic_defers == {("pins.tick", "hourly"): utc(12, 30)}


async def test_wait_first_returns_when_any_signal_is_set_and_forgets_its_waiter() -> None:
    new_job, stop = WakeEvent(), Signal()
    waiting = asyncio.create_task(wait_first(new_job, stop, timeout=60))
    await asyncio.sleep(0)
    assert not waiting.done()
    stop.set()
    await asyncio.wait_for(waiting, timeout=1)
    assert not new_job._watchers, "the waiter is forgotten"
    assert not stop._watchers
    await asyncio.wait_for(wait_first(new_job, stop), timeout=1)  # already set: at once


async def test_wait_first_times_out_like_the_polling_interval() -> None:
    started = asyncio.get_running_loop().time()
    await wait_first(WakeEvent(), Signal(), timeout=0.05)
    assert asyncio.get_running_loop().time() - started >= 0.05


async def test_a_wake_up_after_wait_first_survives_the_clear_after_the_fetch() -> None:
    event = WakeEvent()
    event.set()
    await wait_first(event, timeout=1)
    event.woke()  # the loop is awake and fetches; a NOTIFY lands meanwhile
    event.set()
    event.clear()  # procrastinate clears after the fetch
    assert event.is_set(), "the late wake-up must trigger another fetch"
    await wait_first(event, timeout=1)
    event.woke()
    event.clear()  # that fetch saw everything: now it may clear
    assert not event.is_set()


def test_routine_job_lines_show_at_debug_only() -> None:
    routine = RoutineJobLines()
    logger = logging.getLogger("procrastinate.worker.worker")
    start = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "Starting job", (), None)
    start.action = "start_job"
    failure = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "Job failed", (), None)
    failure.action = "job_error"
    previous = logger.level
    try:
        logger.setLevel(logging.INFO)
        assert not routine.filter(start)
        assert routine.filter(failure)
        logger.setLevel(logging.DEBUG)
        assert routine.filter(start)
    finally:
        logger.setLevel(previous)
