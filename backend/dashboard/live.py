"""Live updates: one LISTEN connection per dashboard process, fanned out to page streams.

Channels: ``taskhub_job_progress`` (a watched job reported progress), ``taskhub_job_finished``
(a watched job finished; migration 0002's trigger and the worker's batched finish) and
procrastinate's ``procrastinate_any_queue_v1`` (a job was deferred or became due). Pages hear
them as server-sent events; each wake-up costs one read bounded by the active jobs, at most
once a second per stream, and a stream re-reads every ``RECHECK`` seconds without one (a
job starting, or a finish nobody watched, sends no NOTIFY).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import psycopg

logger = logging.getLogger(__name__)

JOB_CHANNELS = ("taskhub_job_progress", "taskhub_job_finished")
ACTIVITY_CHANNEL = "procrastinate_any_queue_v1"
RECHECK = 5.0
MIN_INTERVAL = 1.0


class LiveHub:
    def __init__(self, url: str) -> None:
        self._url = url
        self._jobs: dict[int, set[asyncio.Event]] = defaultdict(set)
        self._activity: set[asyncio.Event] = set()
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="dashboard live hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True
                ) as conn:
                    for channel in (*JOB_CHANNELS, ACTIVITY_CHANNEL):
                        await conn.execute(f'LISTEN "{channel}"')
                    self.listening.set()
                    self._wake_all()
                    async for notify in conn.notifies():
                        self._dispatch(notify.channel, notify.payload)
            except psycopg.OperationalError as exc:
                logger.warning("dashboard live updates lost their connection (%s)", exc)
            self.listening.clear()
            self._wake_all()
            await asyncio.sleep(1)

    def _dispatch(self, channel: str, payload: str) -> None:
        for event in self._activity:
            event.set()
        job_id: object = None
        if channel in JOB_CHANNELS:
            job_id = payload
        else:
            with contextlib.suppress(ValueError):
                job_id = json.loads(payload).get("job_id")
        with contextlib.suppress(TypeError, ValueError):
            for event in self._jobs.get(int(str(job_id)), ()):
                event.set()

    def _wake_all(self) -> None:
        for event in self._activity:
            event.set()
        for events in self._jobs.values():
            for event in events:
                event.set()

    @contextlib.asynccontextmanager
    async def watch_job(self, job_id: int) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._jobs[job_id].add(event)
        try:
            yield event
        finally:
            self._jobs[job_id].discard(event)
            if not self._jobs[job_id]:
                del self._jobs[job_id]

    @contextlib.asynccontextmanager
    async def watch_activity(self) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._activity.add(event)
        try:
            yield event
        finally:
            self._activity.discard(event)


async def wait_or_recheck(event: asyncio.Event, timeout: float = RECHECK) -> bool:
    """Wait for ``event``; False when ``timeout`` passed without it."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


def sse(event: str, data: object) -> str:
    """One server-sent event (``data`` as JSON, which never contains a raw newline)."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


KEEPALIVE = ": keep-alive\n\n"
