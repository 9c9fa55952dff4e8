"""Waiting for jobs to finish, woken by PostgreSQL (LISTEN taskhub_job_finished), not by polling.

A trigger on procrastinate_jobs NOTIFYs the job id when a job reaches a final status. One
:class:`JobWatcher` per process holds one listening connection and wakes every waiter of
that job. Waiters re-read the job every ``RECHECK`` seconds as a fallback, so a lost
connection delays an answer but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import psycopg
from psycopg.rows import dict_row

from backend.control.jobs import FINISHED, JobView, get_job
from backend.db import DictConnection
from backend.queries import QUERIES

logger = logging.getLogger(__name__)

CHANNEL = "taskhub_job_finished"
RECHECK = 5.0  # seconds between fallback re-reads while waiting
MAX_WAIT = 60.0  # longest a request may wait


class JobWatcher:
    def __init__(self, url: str) -> None:
        self._url = url
        self._waiters: dict[int, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="job watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self._wake_all()  # anything that finished while we were away
                    async for notify in conn.notifies():
                        self._wake(int(notify.payload))
            except (psycopg.OperationalError, ValueError) as exc:
                logger.warning("job watcher lost its connection (%s); reconnecting", exc)
            self.listening.clear()
            self._wake_all()
            await asyncio.sleep(1)

    def _wake(self, job_id: int) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    @contextlib.asynccontextmanager
    async def watch(self, job_id: int) -> AsyncIterator[asyncio.Event]:
        """Register interest before reading the job, so a finish in between is not missed."""
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            yield event
        finally:
            self._waiters[job_id].discard(event)
            if not self._waiters[job_id]:
                del self._waiters[job_id]


Connect = Callable[[], contextlib.AbstractAsyncContextManager[DictConnection]]


def reuse(conn: DictConnection) -> Connect:
    """A ``Connect`` that hands out the same (autocommit) connection every time."""

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[DictConnection]:
        yield conn

    return connect


async def wait_until_finished(
    watcher: JobWatcher, job_id: int, timeout: float, connect: Connect
) -> JobView:
    """Return the job once it is finished, or as it is after ``timeout`` seconds.

    Each read registers this waiter in taskhub.job_waiters in the same short transaction, so
    the finishing statement knows to NOTIFY; no connection is held while waiting.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waiter = uuid.uuid4()
    params = {"job_id": job_id, "waiter": waiter}
    if not watcher.listening.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher.listening.wait(), min(timeout, RECHECK))
    async with watcher.watch(job_id) as finished:
        try:
            while True:
                finished.clear()
                async with connect() as conn, conn.transaction():
                    await conn.execute(QUERIES["watch_job"], params)
                    job = await get_job(conn, job_id)
                remaining = deadline - loop.time()
                if job.status in FINISHED or remaining <= 0:
                    return job
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), min(remaining, RECHECK))
        finally:
            async with connect() as conn, conn.transaction():
                await conn.execute(QUERIES["unwatch_job"], params)


async def wait_for_job(url: str, job_id: int, timeout: float = 30.0) -> JobView:
    """For application code: wait until a job is finished (or ``timeout``), then return it.

    ``JobNotFound`` if there is no such job.
    """
    watcher = JobWatcher(url)
    await watcher.start()
    try:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row
        ) as conn:
            return await wait_until_finished(watcher, job_id, timeout, reuse(conn))
    finally:
        await watcher.stop()
