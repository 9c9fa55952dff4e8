"""taskhub's extension of procrastinate's worker: it stores what each job produced.

procrastinate finishes a job with one call to its finish (or retry) function and keeps
nothing of what the task returned or raised. ``TaskhubWorker`` replaces that one call with
one statement that also writes the job's last progress report, its JSON result and the
attempt's error (type, message, traceback), so the outcome and the status commit together.

It also keeps a NOTIFY that arrives during a fetch (:class:`WakeEvent`) and runs the periodic
deferrer in TASKHUB_TIMEZONE (``_periodic_deferrer``). These touch private
parts of procrastinate's worker (``_persist_job_status``, ``_new_job_event``):
tests/unit/test_worker_extension.py pins them to the procrastinate version range in
pyproject.toml, and the integration tests pin the behaviour.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import traceback
from typing import Any, Literal

from procrastinate import JobContext, exceptions, jobs, periodic, retry
from procrastinate.job_context import AbortReason, JobResult
from procrastinate.worker import Worker
from psycopg.types.json import Jsonb

from backend.queries import QUERIES
from backend.registry import definition_of
from backend.runtime.context import SETTINGS_KEY, runtime_of
from backend.runtime.isolation import ChildTaskError, TimeLimitExceeded
from backend.runtime.progress import Progress, ProgressReporter
from backend.schedules import ZonedDeferrer

logger = logging.getLogger(__name__)

TRACEBACK_LIMIT = 20_000  # characters kept per error


class RateLimited(Exception):
    """The task's rate limit is used up: the job waits until ``retry_at``."""

    def __init__(self, retry_at: datetime.datetime) -> None:
        super().__init__(f"rate limit reached; next run at {retry_at.isoformat()}")
        self.retry_at = retry_at


async def track_job(call_next: Any, context: JobContext, worker: Worker) -> Any:
    """Worker middleware: admit the job under its rate limit, give it a progress reporter,
    and remember what it raised."""
    runtime = runtime_of(context)
    job_id = context.job.id
    connector = worker.app.connector
    definition = definition_of(worker.app, context.job.task_name)
    limit = definition.rate_limit if definition else None
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


class WakeEvent(asyncio.Event):
    """The worker's "new job" event, keeping a wake-up that lands during a fetch.

    procrastinate clears this event after every fetch. A NOTIFY that arrives while a fetch is
    in flight (too late for its snapshot) was cleared with it, and the job waited for the next
    poll. Here ``clear`` keeps a ``set`` that came after the loop last woke up.
    """

    def __init__(self) -> None:
        super().__init__()
        self._unseen = False

    def set(self) -> None:
        self._unseen = True
        super().set()

    async def wait(self) -> Literal[True]:
        await super().wait()
        self._unseen = False
        return True

    def clear(self) -> None:
        if not self._unseen:
            super().clear()


class TaskhubWorker(Worker):
    """procrastinate's worker, persisting each job's outcome with its status."""

    def __init__(self, **options: Any) -> None:
        options["worker_middleware"] = [track_job, *(options.get("worker_middleware") or [])]
        super().__init__(**options)
        self._new_job_event = WakeEvent()

    async def _periodic_deferrer(self) -> None:
        """procrastinate's periodic deferrer, with cron in TASKHUB_TIMEZONE (see schedules)."""
        settings = (self.additional_context or {}).get(SETTINGS_KEY)
        timezone = settings.tzinfo() if settings else datetime.UTC
        catch_up = settings.schedule_catch_up if settings else periodic.MAX_DELAY
        deferrer = ZonedDeferrer(self.app.periodic_registry, timezone=timezone, catch_up=catch_up)
        await deferrer.worker()

    async def _persist_job_status(
        self,
        job: jobs.Job,
        status: jobs.Status,
        retry_decision: retry.RetryDecision | None,
        context: JobContext,
        job_result: JobResult | None,
    ) -> None:
        if self.delete_jobs != jobs.DeleteJobCondition.NEVER:
            # Deleted jobs keep nothing; procrastinate's own path is all there is to do.
            await super()._persist_job_status(job, status, retry_decision, context, job_result)
            return
        assert job.id is not None
        runtime = runtime_of(context)
        reporter = runtime.reporter
        progress = await reporter.close() if isinstance(reporter, ProgressReporter) else None
        connector = self.app.connector
        if isinstance(runtime.error, RateLimited):
            # Over the rate limit: not a failure, and no attempt used up.
            rows = await connector.execute_query_all_async(
                QUERIES["postpone_job"],
                job_id=job.id,
                worker_id=self.worker_id,
                retry_at=runtime.error.retry_at,
            )
            self._forget(job, fenced=not rows)
            return
        if status == jobs.Status.ABORTED and context.abort_reason() == AbortReason.SHUTDOWN:
            # Not the job's fault: it runs again, on another worker, as if never started.
            rows = await connector.execute_query_all_async(
                QUERIES["requeue_job"], job_id=job.id, worker_id=self.worker_id
            )
            self._forget(job, fenced=not rows)
            return
        params: dict[str, Any] = {
            "job_id": job.id,
            "worker_id": self.worker_id,
            "attempt": job.attempts + 1,
            **_progress_params(progress),
            **_error_params(runtime.error if status != jobs.Status.SUCCEEDED else None),
        }
        if retry_decision:
            rows = await connector.execute_query_all_async(
                QUERIES["retry_job"],
                **params,
                retry_at=retry_decision.retry_at,
                priority=retry_decision.priority,
                queue=retry_decision.queue,
                lock=retry_decision.lock,
            )
        else:
            result = job_result.result if job_result else None
            has_result = status == jobs.Status.SUCCEEDED and result is not None
            definition = definition_of(self.app, job.task_name)
            rows = await connector.execute_query_all_async(
                QUERIES["finish_job"],
                **params,
                status=status.value,
                run_failure_hook=bool(
                    status == jobs.Status.FAILED and definition and definition.on_failure
                ),
                has_result=has_result,
                result=Jsonb(result) if has_result else None,
            )
        self._forget(job, fenced=not rows)

    def _forget(self, job: jobs.Job, *, fenced: bool) -> None:
        assert job.id is not None
        self._job_ids_to_abort.pop(job.id, None)
        if fenced:
            logger.warning(
                "job %s was rescued while this worker (%s) ran it: this outcome is discarded",
                job.id,
                self.worker_id,
            )
