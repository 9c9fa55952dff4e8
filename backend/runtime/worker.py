"""taskhub's extension of procrastinate's worker: batches, and what each job produced.

procrastinate fetches one job per transaction and finishes each in another, through a pool,
and keeps nothing of what the task returned or raised. ``TaskhubWorker`` keeps procrastinate's
job processing (middlewares, retries, aborts, heartbeat, shutdown) and changes how jobs come
and go:

- it fetches as many jobs as it has free slots in one statement (``fetch_jobs``), on a
  connection of its own, woken by procrastinate's LISTEN/NOTIFY;
- it finishes them in batches (backend/runtime/finisher.py), each job through procrastinate's
  finish or retry function, in one statement that also writes the job's last progress
  report, its JSON result and the attempt's error, so the outcome and the status commit
  together;
- a fetched job that has not started yet when an abort or the shutdown arrives never runs:
  it ends aborted, or goes back to the queue.

It also keeps a NOTIFY that arrives during a fetch (:class:`WakeEvent`) and runs the periodic
deferrer in TASKHUB_TIMEZONE (``_periodic_deferrer``). These touch private parts of
procrastinate's worker, checked against the minor version pinned in pyproject.toml; each is
listed in docs/worker.md with the behaviour test that pins it.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import logging
import time
import traceback
from collections.abc import Iterable
from typing import Any, Literal

import psycopg
from procrastinate import JobContext, exceptions, jobs, periodic, retry, utils
from procrastinate import middleware as procrastinate_middleware
from procrastinate import tasks as procrastinate_tasks
from procrastinate.job_context import AbortReason, JobResult
from procrastinate.worker import Worker
from psycopg.types.json import Jsonb

from backend.queries import QUERIES
from backend.runtime import registration
from backend.runtime.app import definition_of
from backend.runtime.connection import DedicatedConnection
from backend.runtime.context import SETTINGS_KEY, JobRuntime, runtime_of
from backend.runtime.finisher import (
    FINISH_CONNECTION_SETTINGS,
    Entry,
    FinishBatcher,
    finish_entry,
)
from backend.runtime.isolation import ChildTaskError, TimeLimitExceeded
from backend.runtime.manager import TaskhubJobManager
from backend.runtime.outages import Outage, is_transient, keep_going
from backend.runtime.periodic import ZonedDeferrer
from backend.runtime.progress import Progress, ProgressReporter
from backend.runtime.recycling import Recycling, ResidentMemory

logger = logging.getLogger(__name__)

TRACEBACK_LIMIT = 20_000  # characters kept per error
FINISH_DELAY = 0.01  # seconds a finished job waits for others to share its finish statement
#: Jobs held per slot, running or waiting for their finish to commit (_fetch_and_process_jobs).
JOBS_HELD_PER_SLOT = 3
#: Fetching under the id of a worker row pruned as dead breaks this foreign key.
PRUNED_WORKER_CONSTRAINT = "procrastinate_jobs_worker_id_fkey"
EARLY_ABORTS_KEPT = 60.0  # seconds an abort request for a job not (yet) running is remembered
# procrastinate's routine per-job lines (loading, starting): DEBUG only. Each finished job gets
# taskhub's own single line instead (_log_job_outcome).
ROUTINE_ACTIONS = frozenset({"loaded_job_info", "finish_task", "start_job"})


class RoutineJobLines(logging.Filter):
    """Drops procrastinate's per-job loading and start lines unless DEBUG is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "action", None) not in ROUTINE_ACTIONS:
            return True
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_routine_job_lines() -> None:
    for name in ("procrastinate.worker", "procrastinate.worker.worker"):
        target = logging.getLogger(name)
        if not any(isinstance(known, RoutineJobLines) for known in target.filters):
            target.addFilter(RoutineJobLines())


class RateLimited(Exception):
    """The task's rate limit is used up: the job waits until ``retry_at``."""

    def __init__(self, retry_at: datetime.datetime) -> None:
        super().__init__(f"rate limit reached; next run at {retry_at.isoformat()}")
        self.retry_at = retry_at


def _outcome_line(
    status: jobs.Status, job_retry: exceptions.JobRetry | None
) -> tuple[str, str, int]:
    """procrastinate's action name, the word the line says, and the line's level."""
    if status == jobs.Status.SUCCEEDED:
        return "job_success", "succeeded", logging.INFO
    if status == jobs.Status.ABORTED:
        if job_retry:
            return "job_aborted_retry", "aborted, to run again", logging.WARNING
        return "job_aborted", "aborted", logging.WARNING
    if job_retry:
        return "job_error_retry", "failed, to retry", logging.WARNING
    return "job_error", "failed", logging.ERROR


def _job_fields(job: jobs.Job) -> dict[str, Any]:
    """What a job's line says of it, without its arguments (they may hold secrets)."""
    return {
        "task": job.task_name,
        "job_id": job.id,
        "queue": job.queue,
        "attempt": job.attempts + 1,
    }


async def track_job(call_next: Any, context: JobContext, worker: Worker) -> Any:
    """Worker middleware: admit the job under its rate limit, give it a progress reporter,
    and remember what it raised."""
    runtime = runtime_of(context)
    job_id = context.job.id
    connector = worker.app.connector
    definition = definition_of(worker.app, context.job.task_name)
    limit = definition.rate_limit if definition else None
    _refuse_if_aborted(worker, context)
    if limit is not None:
        row = await connector.execute_query_one_async(
            QUERIES["take_rate_limit"],
            key=limit.key or context.job.task_name,
            max_runs=limit.runs,
            seconds=limit.seconds,
        )
        if row["next_at"] is not None:
            runtime.error = RateLimited(row["next_at"])
            raise runtime.error

    async def write(progress: Progress) -> None:
        await connector.execute_query_async(
            QUERIES["write_progress"], job_id=job_id, **_progress_params(progress)
        )

    runtime.reporter = ProgressReporter(asyncio.get_running_loop(), write)
    if definition and definition.soft_time_limit:
        runtime.soft_deadline = time.monotonic() + definition.soft_time_limit
    try:
        _refuse_if_aborted(worker, context)  # again: the rate limit query took a while
        runtime.started = True
        if definition and definition.time_limit and definition.is_async:
            # Async tasks stop at the hard limit here; sync ones in their child process.
            try:
                async with asyncio.timeout(definition.time_limit) as deadline:
                    return await call_next()
            except TimeoutError:
                if deadline.expired():
                    raise TimeLimitExceeded(
                        f"stopped after its hard time limit of {definition.time_limit:g} s"
                    ) from None
                raise
        return await call_next()
    except BaseException as exc:
        runtime.error = exc
        raise


def _refuse_if_aborted(worker: Worker, context: JobContext) -> None:
    """A fetched job that has not started ends here if it was aborted or the worker stops."""
    if isinstance(worker, TaskhubWorker) and worker.stopping():
        assert context.job.id is not None
        worker._job_ids_to_abort.setdefault(context.job.id, AbortReason.SHUTDOWN)
    if context.should_abort():
        aborted = exceptions.JobAborted()
        runtime_of(context).error = aborted
        raise aborted


def _progress_params(progress: Progress | None) -> dict[str, Any]:
    if progress is None:
        return {"has_progress": False, "done": None, "total": None, "message": None,
                "counters": None}  # fmt: skip
    return {
        "has_progress": True,
        "done": progress.done,
        "total": progress.total,
        "message": progress.message,
        "counters": Jsonb(progress.counters),
    }


def _error_params(error: BaseException | None) -> dict[str, Any]:
    if error is None:
        return {"error_type": None, "error_message": None, "traceback": None}
    if isinstance(error, asyncio.CancelledError | exceptions.JobAborted):
        return {"error_type": "JobAborted", "error_message": "the job was aborted",
                "traceback": None}  # fmt: skip
    if isinstance(error, ChildTaskError):
        return {
            "error_type": error.type_name,
            "error_message": str(error),
            "traceback": error.trace[-TRACEBACK_LIMIT:],
        }
    trace = "".join(traceback.format_exception(error))
    return {
        "error_type": type(error).__qualname__,
        "error_message": str(error) or repr(error),
        "traceback": trace[-TRACEBACK_LIMIT:],
    }


class Signal(asyncio.Event):
    """An ``asyncio.Event`` that :func:`wait_first` can wait on next to others."""

    def __init__(self) -> None:
        super().__init__()
        self._watchers: set[asyncio.Future[None]] = set()

    def set(self) -> None:
        super().set()
        for watcher in self._watchers:
            if not watcher.done():
                watcher.set_result(None)

    def watch(self, watcher: asyncio.Future[None]) -> None:
        """``set`` resolves ``watcher`` too, until ``unwatch``."""
        self._watchers.add(watcher)

    def unwatch(self, watcher: asyncio.Future[None]) -> None:
        self._watchers.discard(watcher)


async def wait_first(*signals: Signal, timeout: float | None = None) -> None:
    """Until one of ``signals`` is set, or ``timeout`` seconds pass.

    procrastinate's ``utils.wait_any`` starts an asyncio task per awaitable and cancels and
    gathers the others once one is done: four passes of the event loop between a NOTIFY and
    the fetch it calls for. Here one future is resolved by whichever comes first.
    """
    if any(event.is_set() for event in signals):
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def time_out() -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(timeout, time_out) if timeout is not None else None
    for event in signals:
        event.watch(waiter)
    try:
        await waiter
    finally:
        for event in signals:
            event.unwatch(waiter)
        if timer is not None:
            timer.cancel()


class WakeEvent(Signal):
    """The worker's "new job" event, keeping a wake-up that lands during a fetch.

    procrastinate clears this event after every fetch. A NOTIFY that arrives while a fetch is
    in flight (too late for its snapshot) was cleared with it, and the job waited for the next
    poll. Here ``clear`` keeps a ``set`` that came after the loop last woke up (``woke``, after
    :func:`wait_first`).
    """

    def __init__(self) -> None:
        super().__init__()
        self._unseen = False

    def set(self) -> None:
        self._unseen = True
        super().set()

    def woke(self) -> None:
        """The loop is awake: a ``set`` before this is served by the coming fetch."""
        self._unseen = False

    def clear(self) -> None:
        if not self._unseen:
            super().clear()


class TaskhubWorker(Worker):
    """procrastinate's worker, fetching and finishing in batches (see the module's doc)."""

    _new_job_event: WakeEvent
    _stop_event: Signal

    def __init__(
        self,
        *,
        finish_delay: float = FINISH_DELAY,
        recycling: Recycling | None = None,
        **options: Any,
    ) -> None:
        options["worker_middleware"] = [track_job, *(options.get("worker_middleware") or [])]
        super().__init__(**options)
        quiet_routine_job_lines()
        self._new_job_event = WakeEvent()
        self._stop_event = Signal()
        self.finish_delay = finish_delay
        self._slot_freed = Signal()
        self._still_running = 0  # started jobs whose outcome is not submitted yet
        self._early_aborts: dict[int, float] = {}  # abort requests for jobs not running yet
        self._fetch_connection: DedicatedConnection | None = None
        self._heartbeat_connection: DedicatedConnection | None = None
        self._registering = asyncio.Lock()
        self._finisher: FinishBatcher | None = None
        # Per task: whether it is async, and its task middlewares (fixed once the worker runs).
        self._task_plans: dict[str, tuple[bool, list[Any]]] = {}
        self.jobs_done = 0  # written with each heartbeat (taskhub.workers), never per job
        self.recycling = recycling if recycling is not None and recycling.enabled else None
        self._memory = ResidentMemory() if self.recycling and self.recycling.max_memory_mb else None
        self._jobs_taken = 0  # counted per fetch, for TASKHUB_WORKER_MAX_JOBS
        self.recycled: str | None = None  # why the worker stopped to be recycled

    def check_recycling(self) -> None:
        """Before the start: a memory limit the process is over already is refused."""
        if self.recycling is not None and self._memory is not None:
            self.recycling.check_start(self._memory)

    async def _recycle(self, reason: str) -> None:
        """Take no more jobs, let the running ones finish, then stop: jobs still running after
        the grace period (TASKHUB_SHUTDOWN_GRACE_PERIOD in all) go back to the queue, as on
        SIGTERM. Stopping at once would hand back the jobs just fetched, before they start."""
        assert self.recycling is not None
        self.recycled = reason
        setting = (
            f"TASKHUB_WORKER_MAX_JOBS={self.recycling.max_jobs}"
            if reason.startswith("after")
            else f"TASKHUB_WORKER_MAX_MEMORY_MB={self.recycling.max_memory_mb}"
        )
        logger.info(
            "%s recycled %s (%s): it takes no new job, finishes the %d it holds and exits "
            "for a fresh process",
            self.recycling.name,
            reason,
            setting,
            len(self._running_jobs),
            extra={"action": "recycle_worker", "reason": reason},
        )
        grace = self.shutdown_graceful_timeout
        deadline = None if grace is None else time.monotonic() + grace
        while self._running_jobs and not self._stop_event.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self._slot_freed.clear()
            await wait_first(self._slot_freed, self._stop_event, timeout=left)
        if deadline is not None and not self._stop_event.is_set():
            self.shutdown_graceful_timeout = max(0.0, deadline - time.monotonic())
        self.stop()

    async def run(self) -> None:
        await super().run()  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        super().stop()  # type: ignore[no-untyped-call]
        if self._finisher is not None and self.shutdown_graceful_timeout is not None:
            self._finisher.give_up_after(self.shutdown_graceful_timeout)

    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def _log_extra(
        self, action: str, context: JobContext | None, job_result: JobResult | None, **kwargs: Any
    ) -> dict[str, Any]:
        """procrastinate builds a job's whole log context for each line, logged or not: not
        for a routine line that is dropped (a third of the worker's CPU per no-op job)."""
        if action in ROUTINE_ACTIONS and not self.logger.isEnabledFor(logging.DEBUG):
            return {"action": action}  # the line is dropped (RoutineJobLines)
        extra: dict[str, Any] = super()._log_extra(action, context, job_result, **kwargs)
        job = extra.get("job")
        if context is not None and isinstance(job, dict):
            # procrastinate's job context quotes the arguments: secrets masked.
            definition = definition_of(self.app, context.job.task_name)
            if definition is not None:
                args = definition.mask(context.job.task_kwargs)
                extra["job"] = {**job, "task_kwargs": args}
                extra["job"]["call_string"] = self._call_string(context.job)
        return extra

    def _call_string(self, job: jobs.Job) -> str:
        """procrastinate's ``task[id](a=1, ...)``, with secret arguments masked."""
        definition = definition_of(self.app, job.task_name)
        args = definition.mask(job.task_kwargs) if definition else job.task_kwargs
        listed = ", ".join(f"{key}={value!r}" for key, value in args.items())
        return f"{job.task_name}[{job.id}]({listed})"

    def _log_job_outcome(
        self,
        status: jobs.Status,
        context: JobContext,
        job_result: JobResult | None,
        job_retry: exceptions.JobRetry | None,
        exc_info: bool | BaseException = False,
    ) -> None:
        """One line per finished job, as Celery's worker prints it ("succeeded in 0.012s"):
        INFO for a success, WARNING for a retry or an abort, ERROR with the traceback for a
        final failure. A rate-limit postponement is not an outcome (DEBUG)."""
        job = context.job
        if isinstance(exc_info, RateLimited):
            # Not an error: the job waits for its rate limit, with no attempt used up.
            if self.logger.isEnabledFor(logging.DEBUG):
                self.logger.debug(
                    "Task %s[%s] postponed by its rate limit until %s",
                    job.task_name,
                    job.id,
                    exc_info.retry_at.isoformat(),
                    extra={"action": "job_rate_limited", **_job_fields(job)},
                )
            return
        action, outcome, level = _outcome_line(status, job_retry)
        if not self.logger.isEnabledFor(level):
            return
        duration = (
            job_result.end_timestamp - job_result.start_timestamp
            if job_result and job_result.start_timestamp and job_result.end_timestamp
            else 0.0
        )
        fields = {**_job_fields(job), "duration": round(duration, 6), "outcome": outcome}
        if status == jobs.Status.SUCCEEDED:
            # The whole job context is built for lines that need it, not for each success.
            extra: dict[str, Any] = {"action": action, **fields}
        else:
            extra = {**self._log_extra(context=context, action=action, job_result=job_result)}
            extra.update(fields)
        reason = (
            f": {type(exc_info).__name__}: {exc_info}" if isinstance(exc_info, Exception) else ""
        )
        self.logger.log(
            level,
            "Task %s[%s] %s in %.3fs%s",
            job.task_name,
            job.id,
            outcome,
            duration,
            reason,
            extra=extra,
            exc_info=exc_info if level >= logging.ERROR else None,
        )

    async def _update_heartbeat(self) -> None:
        """procrastinate's heartbeat loop, on the worker's own connection (see
        ``registration.heartbeat``); each beat also writes the worker's row."""
        outage = Outage("heartbeat")
        while True:
            await asyncio.sleep(self.update_heartbeat_interval)
            assert self.worker_id is not None
            assert self._heartbeat_connection is not None
            worker_id = self.worker_id
            try:
                registered = await registration.heartbeat(
                    self._heartbeat_connection, worker_id, self.jobs_done
                )
            except Exception as exc:
                if not is_transient(exc):
                    raise
                outage.failed(exc)  # the next beat is the next try
                await self._heartbeat_connection.close()
                continue
            outage.recovered()
            if not registered:  # pruned as dead while frozen or cut off; idle since
                await self._register_again(worker_id)

    async def _poll_jobs_to_abort(self) -> None:
        """procrastinate's polling for abort requests, tried again after a database outage."""
        await keep_going("abort polling", super()._poll_jobs_to_abort)

    async def _shutdown(self, side_tasks: list[asyncio.Task[Any]]) -> None:
        """procrastinate's graceful stop (it unregisters the worker), then the row says so."""
        worker_id = self.worker_id
        await super()._shutdown(side_tasks)
        if worker_id is not None:
            await registration.stopped(self.app, worker_id, self.jobs_done)

    async def _periodic_deferrer(self) -> None:
        """procrastinate's periodic deferrer, with cron in TASKHUB_TIMEZONE (see schedules)."""
        settings = (self.additional_context or {}).get(SETTINGS_KEY)
        timezone = settings.tzinfo() if settings else datetime.UTC
        catch_up = settings.schedule_catch_up if settings else periodic.MAX_DELAY
        deferrer = ZonedDeferrer(self.app.periodic_registry, timezone=timezone, catch_up=catch_up)
        await keep_going("periodic deferrer", deferrer.worker)

    async def _run_loop(self) -> None:
        """procrastinate's loop, with the worker's own fetch and finish connections around it."""
        assert self.worker_id is not None
        await registration.register(self.app, self.worker_id, self.queues, self.concurrency)
        connector = self.app.connector
        # A lost fetch commit leaves the job to run again, as a crash after it would (the
        # rescue): the fetch need not wait for the disk. Finishes do.
        # The fetch must walk the priority index and stop after N rows. Planned from stale
        # statistics (a table that was empty at the last ANALYZE, then got 20,000 jobs in one
        # commit), PostgreSQL chose to scan and sort every queued job instead: 10 ms per
        # fetch, not 2. Nothing else runs on this connection.
        # A statement unanswered for a quarter of TASKHUB_RESCUE_AFTER breaks its connection
        # (a cut network path): the worker says so and tries again well before its jobs
        # would be rescued.
        answer_within = max(1.0, self.stalled_worker_timeout / 4)
        self._fetch_connection = DedicatedConnection.like_pool_of(
            connector,
            settings={"synchronous_commit": "off", "enable_seqscan": "off", "enable_sort": "off"},
            timeout=answer_within,
        )
        finish_connection = DedicatedConnection.like_pool_of(
            connector, settings=FINISH_CONNECTION_SETTINGS, timeout=answer_within
        )
        self._heartbeat_connection = DedicatedConnection.like_pool_of(
            connector, timeout=answer_within
        )
        self._finisher = FinishBatcher(
            finish_connection,
            QUERIES["finish_jobs"],
            QUERIES["notify_finished_waiters"],
            worker_id=self.worker_id,
            jobs_still_running=lambda: self._still_running,
            delay=self.finish_delay,
        )
        self._still_running = 0
        try:
            await super()._run_loop()  # type: ignore[no-untyped-call]
        finally:
            await self._finisher.drain()  # the last batch's wake-ups for its waiters
            await self._fetch_connection.close()
            await finish_connection.close()
            await self._heartbeat_connection.close()
            if self._memory is not None:
                self._memory.close()

    async def _fetch_and_process_jobs(self) -> None:
        """Fetch as many jobs as there are free slots, in one statement, and when none is
        left, wait for a NOTIFY or the next poll here, until the worker stops.

        procrastinate's ``_run_loop`` calls this once, then again after each wake-up, which it
        waits for with ``utils.wait_any``; returning only at the stop keeps the wait cheap
        (``wait_first``). With ``wait=False`` it returns when nothing is left, as procrastinate.
        """
        manager = self.app.job_manager
        assert isinstance(manager, TaskhubJobManager)
        assert self.worker_id is not None
        assert self._fetch_connection is not None
        fetch_outage = Outage("fetching jobs")
        while not self._stop_event.is_set():
            # A slot frees when its job's outcome is submitted: the next batch is fetched and
            # run while the last one's finish statement is in flight. The worker holds at most
            # 3 x concurrency jobs whose outcome is not committed yet: the running ones, and
            # two batches of outcomes, one in that statement and one filling up behind it. With
            # room for one batch only, a worker of short jobs stopped fetching until each
            # finish committed (6% fewer jobs/s for one process).
            free = min(
                self.concurrency - self._still_running,
                JOBS_HELD_PER_SLOT * self.concurrency - len(self._running_jobs),
            )
            if free > 0 and self.recycling is not None:
                # Before each fetch, never per job: the jobs taken so far, and the memory.
                reason = self.recycling.due(self._jobs_taken, self._memory)
                if reason is not None:
                    await self._recycle(reason)
                    return
                left = self.recycling.jobs_left(self._jobs_taken)
                free = free if left is None else min(free, left)
            if free <= 0:
                self._slot_freed.clear()
                await wait_first(self._slot_freed, self._stop_event)
                continue
            try:
                fetched = await manager.fetch_jobs(
                    self._fetch_connection, queues=self.queues, worker_id=self.worker_id, count=free
                )
            except psycopg.errors.ForeignKeyViolation as exc:
                if exc.diag.constraint_name != PRUNED_WORKER_CONSTRAINT:
                    raise
                await self._register_again(self.worker_id)
                continue
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # The jobs held go on; new ones come when the database is back.
                await self._fetch_connection.close()
                await wait_first(self._stop_event, timeout=fetch_outage.failed(exc))
                continue
            fetch_outage.recovered()
            self._jobs_taken += len(fetched)
            self._new_job_event.clear()
            if self._stop_event.is_set():
                await self._hand_back(fetched)
                return
            for job in fetched:
                self._start_job(job)
            if len(fetched) < free:
                # Nothing else is due: wait for a NOTIFY or the next poll.
                if not self.wait:
                    return
                await wait_first(
                    self._new_job_event,
                    self._stop_event,
                    timeout=self.fetch_job_polling_interval,
                )
                self._new_job_event.woke()

    async def _process_job(self, context: JobContext) -> None:
        """procrastinate's ``_process_job`` (3.10): the same outcome for every job, without
        what it spent on each one whether needed or not. It formatted its start lines (the
        job's call string) even when they were dropped, resolved the task's middlewares
        again, and persisted every outcome in a second asyncio task; a batched outcome is now
        the finish statement's future, shielded from cancellation alike."""
        job = context.job
        task = self.app.tasks.get(job.task_name)
        job_retry: exceptions.JobRetry | None = None
        retry_decision: retry.RetryDecision | None = None
        exc_info: bool | BaseException = False
        job_result = JobResult(start_timestamp=context.start_timestamp)
        try:
            if not task:
                raise exceptions.TaskNotFound
            if self.logger.isEnabledFor(logging.DEBUG):
                self.logger.debug(
                    f"Loaded job info, about to start job {self._call_string(job)}",
                    extra=self._log_extra(
                        context=context, action="loaded_job_info", job_result=job_result
                    ),
                )
                self.logger.info(
                    f"Starting job {self._call_string(job)}",
                    extra=self._log_extra(
                        context=context, action="start_job", job_result=job_result
                    ),
                )

            async def run_job() -> Any:
                return await self._run_task(task, context)

            job_result.result = await procrastinate_middleware.compose(
                self.worker_middleware, run_job, context, self
            )()
        except BaseException as e:
            exc_info = e
            # An aborted job can be retried if a shutdown caused it.
            if not isinstance(e, exceptions.JobAborted) or (
                context.abort_reason() == AbortReason.SHUTDOWN
            ):
                job_retry = task.get_retry_exception(exception=e, job=job) if task else None
                retry_decision = job_retry.retry_decision if job_retry else None
                if isinstance(e, exceptions.TaskNotFound):
                    self.logger.exception(
                        "Task was not found",
                        extra=self._log_extra(
                            context=context,
                            action="task_not_found",
                            exception=str(e),
                            job_result=job_result,
                        ),
                    )
        finally:
            job_result.end_timestamp = time.time()
            if isinstance(exc_info, exceptions.JobAborted | asyncio.CancelledError):
                status = jobs.Status.ABORTED
            elif exc_info:
                status = jobs.Status.FAILED
            else:
                status = jobs.Status.SUCCEEDED
            self._log_job_outcome(
                status=status,
                context=context,
                job_result=job_result,
                job_retry=job_retry,
                exc_info=exc_info,
            )
            persisted = self._persist(job, status, retry_decision, context, job_result)
            try:
                await asyncio.shield(persisted)
            except asyncio.CancelledError:
                await persisted
                raise

    async def _run_task(
        self, task: procrastinate_tasks.Task[Any, Any, Any], context: JobContext
    ) -> Any:
        """procrastinate's ``ensure_async``, with the task's nature and middlewares looked up
        once per task rather than once per job."""
        plan = self._task_plans.get(task.name)
        if plan is None:
            is_async = inspect.iscoroutinefunction(task.func)
            plan = (is_async, self._resolve_task_middlewares(task, is_async))
            self._task_plans[task.name] = plan
        is_async, middlewares = plan
        job_args = [context] if task.pass_context else []
        kwargs = context.job.task_kwargs
        if is_async and not middlewares:
            result = await task(*job_args, **kwargs)
        elif is_async:

            async def run_async_task() -> Any:
                return await task(*job_args, **kwargs)

            result = await procrastinate_middleware.compose(
                middlewares, run_async_task, context, self
            )()
        else:

            def run_sync_task() -> Any:
                return task(*job_args, **kwargs)

            result = await utils.sync_to_async(
                procrastinate_middleware.compose(middlewares, run_sync_task, context, self)
            )
        # A sync function may return an awaitable: as procrastinate, await it here.
        if inspect.isawaitable(result):
            result = await result
        return result

    def _persist(
        self,
        job: jobs.Job,
        status: jobs.Status,
        retry_decision: retry.RetryDecision | None,
        context: JobContext,
        job_result: JobResult | None,
    ) -> asyncio.Future[Any]:
        """The outcome on its way to the database: for the usual job, its place in the next
        finish batch, at once (no task of its own); otherwise ``_persist_job_status`` in a
        task (a special outcome, or a progress write still in flight)."""
        runtime = runtime_of(context)
        reporter = runtime.reporter
        closed, progress = (
            reporter.close_if_idle() if isinstance(reporter, ProgressReporter) else (True, None)
        )
        if closed and self._special_outcome(status, runtime, context) is None:
            return self._submit(job, status, retry_decision, runtime, job_result, progress)
        return asyncio.ensure_future(
            self._persist_job_status(job, status, retry_decision, context, job_result)
        )

    def _special_outcome(
        self, status: jobs.Status, runtime: JobRuntime, context: JobContext
    ) -> Literal["deleted", "postponed", "requeued"] | None:
        """How an outcome is stored when not through a finish batch."""
        if self.delete_jobs != jobs.DeleteJobCondition.NEVER:
            return "deleted"  # deleted jobs keep nothing: procrastinate's own path
        if isinstance(runtime.error, RateLimited):
            return "postponed"  # over the rate limit: not a failure, no attempt used up
        if status == jobs.Status.ABORTED and context.abort_reason() == AbortReason.SHUTDOWN:
            return "requeued"  # not the job's fault: it runs again, as if never started
        return None

    def _submit(
        self,
        job: jobs.Job,
        status: jobs.Status,
        retry_decision: retry.RetryDecision | None,
        runtime: JobRuntime,
        job_result: JobResult | None,
        progress: Progress | None,
    ) -> asyncio.Future[bool]:
        """The job's outcome joins the next finish batch; the future says if it was stored."""
        assert self._finisher is not None
        self._outcome_submitted(runtime)
        entry = self._outcome(job, status, retry_decision, runtime, job_result, progress)
        stored = self._finisher.submit(entry)

        def forget(done: asyncio.Future[bool]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._forget(job, fenced=not done.result())

        stored.add_done_callback(forget)
        return stored

    def _start_job(self, job: jobs.Job) -> None:
        job_id = job.id
        assert job_id is not None
        if self._early_aborts.pop(job_id, None) is not None:
            self._job_ids_to_abort[job_id] = AbortReason.USER_REQUEST
        context = JobContext(
            app=self.app,
            worker_name=self.worker_name,
            worker_queues=self.queues,
            additional_context=self.additional_context.copy() if self.additional_context else {},
            job=job,
            abort_reason=lambda: self._job_ids_to_abort.get(job_id),
            start_timestamp=time.time(),
        )
        task = asyncio.create_task(
            self._process_job(context),
            name=f"process job {job.task_name}[{job_id}]",
        )
        self._running_jobs[task] = context
        self._still_running += 1
        task.add_done_callback(self._on_job_done)

    def _on_job_done(self, task: asyncio.Task[Any]) -> None:
        context = self._running_jobs.pop(task)
        self.jobs_done += 1
        self._outcome_submitted(runtime_of(context))  # in case it ended before its finish
        self._slot_freed.set()

    def _outcome_submitted(self, runtime: JobRuntime) -> None:
        if not runtime.submitted:
            runtime.submitted = True
            self._still_running -= 1
            self._slot_freed.set()

    async def _register_again(self, old: int) -> None:
        """Register under a new id after the old row was pruned: a worker frozen or cut off
        for longer than TASKHUB_RESCUE_AFTER is presumed dead, its row deleted by the next
        worker to start and its jobs rescued. Fetching under the old id then broke the foreign
        key and the worker exited. Outcomes of jobs taken under the old id stay fenced.

        The fetch loop and the heartbeat may both find out: one registers, once per old id
        (two new ids would fence the jobs fetched under the first)."""
        assert self._finisher is not None
        async with self._registering:
            if self.worker_id != old:
                return
            self.worker_id = await self.app.job_manager.register_worker()
            await registration.register(self.app, self.worker_id, self.queues, self.concurrency)
            self._finisher.reassign(self.worker_id)
        logger.warning(
            "worker %s was presumed dead (no heartbeat for TASKHUB_RESCUE_AFTER) and its jobs "
            "rescued: it goes on as worker %s",
            old,
            self.worker_id,
        )

    async def _hand_back(self, fetched: list[jobs.Job]) -> None:
        """Jobs fetched as the worker stops never start: they wait for another worker."""
        if fetched and self._fetch_connection is not None:
            await self._fetch_connection.fetch_all(
                QUERIES["requeue_jobs"],
                {"job_ids": [job.id for job in fetched], "worker_id": self.worker_id},
            )

    def _handle_abort_jobs_requested(self, job_ids: Iterable[int]) -> None:
        """procrastinate's handler, remembering requests for jobs not running here yet.

        A request can overtake the fetch that took its job; the job then ends aborted when it
        would start (``_start_job``).
        """
        requested = set(job_ids)
        super()._handle_abort_jobs_requested(requested)
        now = time.monotonic()
        running = {context.job.id for context in self._running_jobs.values()}
        for job_id in requested - running:
            self._early_aborts[job_id] = now
        if len(self._early_aborts) > 1000:
            self._early_aborts = {
                job_id: at
                for job_id, at in self._early_aborts.items()
                if now - at < EARLY_ABORTS_KEPT
            }

    def _abort_job(
        self, process_job_task: asyncio.Task[Any], context: JobContext, reason: AbortReason
    ) -> None:
        runtime = runtime_of(context)
        if runtime.submitted:
            return  # it has finished; its outcome is on its way
        if not runtime.started:
            # Cancelling a task before its first step would skip its finish: the job stops
            # itself when it would start (track_job).
            assert context.job.id is not None
            self._job_ids_to_abort[context.job.id] = reason
            return
        super()._abort_job(process_job_task, context, reason)

    async def _persist_job_status(
        self,
        job: jobs.Job,
        status: jobs.Status,
        retry_decision: retry.RetryDecision | None,
        context: JobContext,
        job_result: JobResult | None,
    ) -> None:
        """The outcomes ``_persist`` cannot submit at once (see ``_special_outcome``)."""
        runtime = runtime_of(context)
        special = self._special_outcome(status, runtime, context)
        if special == "deleted":
            self._outcome_submitted(runtime)
            await super()._persist_job_status(job, status, retry_decision, context, job_result)
            return
        assert job.id is not None
        reporter = runtime.reporter
        progress = await reporter.close() if isinstance(reporter, ProgressReporter) else None
        if special is None:
            await self._submit(job, status, retry_decision, runtime, job_result, progress)
            return
        self._outcome_submitted(runtime)
        if isinstance(runtime.error, RateLimited):
            rows = await self.app.connector.execute_query_all_async(
                QUERIES["postpone_job"],
                job_id=job.id,
                worker_id=self.worker_id,
                retry_at=runtime.error.retry_at,
            )
        else:
            rows = await self.app.connector.execute_query_all_async(
                QUERIES["requeue_jobs"], job_ids=[job.id], worker_id=self.worker_id
            )
        self._forget(job, fenced=not rows)

    def _outcome(
        self,
        job: jobs.Job,
        status: jobs.Status,
        retry_decision: retry.RetryDecision | None,
        runtime: JobRuntime,
        job_result: JobResult | None,
        progress: Progress | None,
    ) -> Entry:
        assert job.id is not None
        fields: dict[str, Any] = {}
        if progress is not None:
            fields.update(
                has_progress=True,
                done=progress.done,
                total=progress.total,
                message=progress.message,
                counters=progress.counters,
            )
        if status != jobs.Status.SUCCEEDED:
            fields.update(_error_params(runtime.error))
        if retry_decision:
            retry_at = retry_decision.retry_at
            fields.update(
                retry_at=retry_at.isoformat() if retry_at else None,
                priority=retry_decision.priority,
                queue=retry_decision.queue,
                lock=retry_decision.lock,
            )
            return finish_entry(job.id, "retry", job.attempts + 1, **fields)
        result = job_result.result if job_result else None
        if status == jobs.Status.SUCCEEDED and result is not None:
            fields.update(has_result=True, result=result)
        if status == jobs.Status.FAILED:
            definition = definition_of(self.app, job.task_name)
            fields["run_failure_hook"] = bool(definition and definition.on_failure)
        return finish_entry(job.id, status.value, job.attempts + 1, **fields)

    def _forget(self, job: jobs.Job, *, fenced: bool) -> None:
        assert job.id is not None
        self._job_ids_to_abort.pop(job.id, None)
        if fenced:
            logger.warning(
                "job %s was rescued while this worker (%s) ran it: this outcome is discarded",
                job.id,
                self.worker_id,
            )
