"""Pins what backend/runtime/worker.py relies on in procrastinate's (private) worker API.

If a procrastinate release changes these, this fails first, with a clear reason, before
any integration test shows lost results or errors.
"""

from __future__ import annotations

import asyncio
import inspect
import logging

from procrastinate import JobContext
from procrastinate.periodic import PeriodicDeferrer
from procrastinate.worker import Worker

from backend.runtime.worker import RoutineJobLines, Signal, TaskhubWorker, WakeEvent, wait_first


def test_persist_job_status_signature_is_the_one_we_override() -> None:
    ours = list(inspect.signature(TaskhubWorker._persist_job_status).parameters)
    theirs = list(inspect.signature(Worker._persist_job_status).parameters)
    assert ours == theirs == ["self", "job", "status", "retry_decision", "context", "job_result"]


def test_process_job_is_the_one_our_copy_follows() -> None:
    """TaskhubWorker._process_job is a copy of procrastinate 3.10's: on an upgrade that
    changes it, compare the two and copy the change."""
    source = inspect.getsource(Worker._process_job)
    for step in (
        "self._persist_job_status(",
        "self.worker_middleware",  # track_job is a worker middleware
        "self._resolve_task_middlewares(task, task_is_async)",
        "task.get_retry_exception(exception=e, job=job)",
        "context.abort_reason() == job_context.AbortReason.SHUTDOWN",
        "self._log_job_outcome(",
        "asyncio.shield(persist_job_status_task)",
    ):
        assert step in source, step
    parameters = list(inspect.signature(Worker._resolve_task_middlewares).parameters)
    assert parameters == ["self", "task", "task_is_async"]


def test_the_listener_is_started_through_the_method_we_override() -> None:
    source = inspect.getsource(Worker._start_side_tasks)
    assert "self.app.job_manager.listen_for_jobs(" in source
    assert "on_notification=self._handle_notification" in source
    parameters = inspect.signature(Worker._handle_notification).parameters
    assert list(parameters) == ["self", "channel", "notification"]


def test_worker_options_we_pass_exist() -> None:
    parameters = inspect.signature(Worker.__init__).parameters
    for name in ("worker_middleware", "additional_context", "install_signal_handlers"):
        assert name in parameters


def test_job_context_carries_a_per_job_dict() -> None:
    assert "additional_context" in {field.name for field in JobContext.__attrs_attrs__}


def test_the_new_job_event_is_the_one_the_loop_waits_on() -> None:
    for method in (Worker._run_loop, Worker._fetch_and_process_jobs, Worker._handle_notification):
        assert "self._new_job_event" in inspect.getsource(method)


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


def test_the_periodic_deferrer_is_started_through_the_method_we_override() -> None:
    assert "self._periodic_deferrer()" in inspect.getsource(Worker._start_side_tasks)
    assert inspect.iscoroutinefunction(Worker._periodic_deferrer)


def test_the_deferrer_methods_we_override_are_the_ones_its_loop_calls() -> None:
    source = inspect.getsource(PeriodicDeferrer.worker)
    assert "self.get_previous_tasks(at=now)" in source
    assert "self.get_next_tick(at=now)" in source
    assert "self.last_defers" in inspect.getsource(PeriodicDeferrer.__init__)


def test_the_batching_loop_replaces_the_methods_procrastinate_calls() -> None:
    run_loop = inspect.getsource(Worker._run_loop)
    assert "await self._fetch_and_process_jobs()" in run_loop
    assert "await self._shutdown(" in run_loop, "shutdown waits for _running_jobs"
    assert "self._running_jobs" in inspect.getsource(Worker._shutdown)
    run = inspect.getsource(Worker.run)
    assert run.index("register_worker") < run.index("self._run_loop()"), "worker_id set first"
    for name in ("_abort_job", "_handle_abort_jobs_requested", "_log_extra", "_log_job_outcome"):
        ours = list(inspect.signature(getattr(TaskhubWorker, name)).parameters)
        theirs = list(inspect.signature(getattr(Worker, name)).parameters)
        assert ours == theirs, name
    assert "self._abort_job(" in inspect.getsource(Worker._handle_abort_jobs_requested)
    assert "self._log_extra(" in inspect.getsource(Worker._process_job)
    assert "self._job_ids_to_abort" in inspect.getsource(Worker._abort_job)


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
