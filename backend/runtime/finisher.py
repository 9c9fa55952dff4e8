"""Finishing jobs in batches: one statement, one transaction and one fsync for many jobs.

procrastinate finishes every job in a transaction of its own (a pool check, BEGIN, the call,
a COMMIT waiting for the disk). :class:`FinishBatcher` collects the outcomes of the jobs a
worker runs and writes them with one ``finish_jobs`` statement (backend/sql/queries.sql) on
a connection of its own: at once when every running job has finished (the usual case for
short jobs), otherwise after ``delay`` seconds, so a long job never holds back the others.
A job keeps its slot until its outcome is committed, so the next job of its lock, and
shutdown, see it finished.

Who waits for a job (``GET /jobs/{id}?wait=N``) is woken after the batch commits, by one more
statement (``notify_finished_waiters``): on this connection the per-row trigger that does it
for every other way a job ends stays quiet (``FINISH_CONNECTION_SETTINGS``), a tenth of
PostgreSQL's time per no-op job.

A statement that fails for a reason of its own (a result PostgreSQL refuses, say) is retried
job by job, so one bad outcome does not roll back the others; the job it belongs to is then
finished as failed with a ``ResultNotStored`` error. A lost connection (or a read-only server,
a failover under way) is retried, batch and all, on a new one: the fence (``status = 'doing'
AND worker_id = ...``) makes that safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, LiteralString

import psycopg
from psycopg.types.json import Jsonb

from backend.runtime.connection import DedicatedConnection
from backend.runtime.outages import is_transient

logger = logging.getLogger(__name__)

Entry = dict[str, Any]  # one element of finish_jobs' JSON array

MAX_BATCH = 100  # outcomes per statement; bigger batches gained nothing when measured
# The finish connection's session: taskhub_notify_job_finished leaves its jobs' waiters to
# notify_finished_waiters (migration 0009).
FINISH_CONNECTION_SETTINGS = {"taskhub.finish_notifies": "after_commit"}
RECONNECT_FOR = 30.0  # seconds a batch keeps trying to reach the database before giving up


def _clean_text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters; an error message sometimes does."""
    return value.replace("\x00", "\\x00") if value else value


def finish_entry(job_id: int, outcome: str, attempt: int, **fields: Any) -> Entry:
    """One job's outcome: ``succeeded``, ``failed``, ``aborted`` or ``retry`` with its fields."""
    entry: Entry = {"job_id": job_id, "outcome": outcome, "attempt": attempt, **fields}
    for key in ("error_message", "traceback", "message"):
        if key in entry:
            entry[key] = _clean_text(entry[key])
    return entry


def not_stored(entry: Entry, error: BaseException) -> Entry:
    """What is stored when a job's own outcome cannot be: a failure saying why."""
    return finish_entry(
        entry["job_id"],
        "failed" if entry["outcome"] != "aborted" else "aborted",
        entry["attempt"],
        error_type="ResultNotStored",
        error_message=f"taskhub could not store this job's outcome: {error}",
        run_failure_hook=entry.get("run_failure_hook", False),
    )


@dataclass
class _Pending:
    entry: Entry
    done: asyncio.Future[bool]
    since: float = field(default_factory=time.monotonic)


class FinishBatcher:
    """Collects finished jobs and writes their outcomes in batches (see the module's doc)."""

    def __init__(
        self,
        connection: DedicatedConnection,
        query: LiteralString,
        notify_query: LiteralString,
        *,
        worker_id: int,
        jobs_still_running: Callable[[], int],
        delay: float,
    ) -> None:
        self._connection = connection
        self._query = query
        self._notify_query = notify_query
        self._worker_id = worker_id
        self._jobs_still_running = jobs_still_running  # started, outcome not yet submitted
        self._delay = delay
        self._pending: list[_Pending] = []
        self._flushing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._retry_until: float | None = None  # set when the worker stops (give_up_after)

    def reassign(self, worker_id: int) -> None:
        """Fence the finishes from now on on ``worker_id``: the worker registered again."""
        self._worker_id = worker_id

    def give_up_after(self, seconds: float) -> None:
        """The worker is stopping: an unreachable database is retried ``seconds`` more at
        most (the grace period), so that the stop is not held up by it. Outcomes not stored
        leave their jobs ``doing``, for the rescue."""
        self._retry_until = time.monotonic() + seconds

    def submit(self, entry: Entry) -> asyncio.Future[bool]:
        """Store one job's outcome with the next batch: the future says if it was stored
        (False: the job was fenced off)."""
        pending = _Pending(entry, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        self._consider()
        return pending.done

    def _consider(self) -> None:
        """Flush now if every running job is waiting for it, else within ``delay``."""
        if self._flushing is not None or not self._pending:
            return
        everyone_waits = self._jobs_still_running() == 0
        overdue = time.monotonic() - self._pending[0].since >= self._delay
        if everyone_waits or overdue or len(self._pending) >= MAX_BATCH:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._flushing = asyncio.create_task(self._flush(), name="finish batch")
        elif self._timer is None:
            wait = self._delay - (time.monotonic() - self._pending[0].since)
            self._timer = asyncio.get_running_loop().call_later(max(wait, 0), self._on_timer)

    async def drain(self) -> None:
        """Wait for the batch in flight, if any: its jobs may have their outcomes already (a
        stopping worker no longer waits for them) while their waiters are still to be woken."""
        while self._flushing is not None:
            await asyncio.wait([self._flushing])

    def _on_timer(self) -> None:
        self._timer = None
        self._consider()

    async def _flush(self) -> None:
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        try:
            finished = await self._write([item.entry for item in batch])
            for item in batch:
                if not item.done.done():
                    item.done.set_result(item.entry["job_id"] in finished)
            await self._notify_waiters(finished)
        except BaseException as exc:
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._flushing = None
            self._consider()

    async def _notify_waiters(self, finished: set[int]) -> None:
        """Wake the long polls of the jobs just committed. If this fails, they see the outcome
        when their wait ends (they read the job again then): late, never wrong."""
        if not finished:
            return
        try:
            await self._connection.fetch_all(self._notify_query, {"job_ids": sorted(finished)})
        except psycopg.Error as exc:
            logger.warning("waking the waiters of %d finished jobs: %s", len(finished), exc)

    async def _write(self, entries: list[Entry]) -> set[int]:
        """The ids stored; a lost connection is retried, a failing batch split job by job."""
        deadline = time.monotonic() + RECONNECT_FOR
        pause = 0.05
        while True:
            try:
                return await self._statement(entries)
            except psycopg.Error as exc:
                if not self._connection.is_broken() and not is_transient(exc):
                    return await self._one_by_one(entries, exc)
                if time.monotonic() + pause > min(deadline, self._retry_until or deadline):
                    raise
                logger.warning("finishing %d jobs: %s; retrying in %.2fs", len(entries), exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def _statement(self, entries: list[Entry]) -> set[int]:
        rows = await self._connection.fetch_all(
            self._query, {"batch": Jsonb(entries), "worker_id": self._worker_id}
        )
        return {row["job_id"] for row in rows}

    async def _one_by_one(self, entries: list[Entry], batch_error: psycopg.Error) -> set[int]:
        if len(entries) > 1:
            logger.warning("%d finishes failed together (%s)", len(entries), batch_error)
        stored: set[int] = set()
        for entry in entries:
            try:
                stored |= await self._statement([entry])
                continue
            except psycopg.Error as exc:
                if self._connection.is_broken():
                    raise
                logger.error("job %s: its outcome cannot be stored: %s", entry["job_id"], exc)
                fallback = not_stored(entry, exc)
            stored |= await self._statement([fallback])
        return stored
