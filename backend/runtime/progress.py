"""Progress a task reports, written to taskhub.job_progress at most every ``interval`` seconds.

``report`` never blocks and may be called from the task's thread (sync tasks) or the event
loop (async tasks); a tight loop costs one row update per interval, not one per call. The
last report not yet written is handed to the statement that finishes the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable

from pydantic import BaseModel, Field


class Progress(BaseModel):
    """What a task said about how far it got."""

    done: int | None = Field(default=None, ge=0, le=2**63 - 1, examples=[1500])
    total: int | None = Field(default=None, ge=0, le=2**63 - 1, examples=[3000])
    message: str | None = Field(default=None, examples=["Processing 1500/3000 assets"])
    counters: dict[str, int] = Field(default_factory=dict, examples=[{"created": 12}])


class ProgressReporter:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        write: Callable[[Progress], Awaitable[None]],
        interval: float = 0.5,
    ) -> None:
        self._loop = loop
        self._write = write
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: Progress | None = None
        self._flush_scheduled = False
        self._last_write = 0.0
        self._flush_task: asyncio.Task[None] | None = None
        self._closed = False
        self._writing = False

    def report(self, progress: Progress) -> None:
        with self._lock:
            if self._closed:
                return
            self._pending = progress
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        delay = max(0.0, self._last_write + self._interval - time.monotonic())
        if _running_loop() is self._loop:
            self._start_flush(delay)
        else:
            self._loop.call_soon_threadsafe(self._start_flush, delay)

    def _start_flush(self, delay: float) -> None:
        self._flush_task = self._loop.create_task(self._flush_after(delay))

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        with self._lock:
            progress, self._pending = self._pending, None
            self._flush_scheduled = False
            self._last_write = time.monotonic()
            self._writing = progress is not None
        if progress is not None:
            try:
                await self._write(progress)
            finally:
                self._writing = False

    def close_if_idle(self) -> tuple[bool, Progress | None]:
        """``close`` at once when no write is in flight: ``(True, the report not yet
        written)``; otherwise ``(False, None)``, nothing changes, and ``close`` must be
        awaited. Most jobs never report progress: their finish needs no await for it."""
        task = self._flush_task
        if task is not None and not task.done():
            return False, None
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, None
        return True, pending

    async def close(self) -> Progress | None:
        """Stop writing; return the report not yet written, for the finishing statement."""
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, None
            writing = self._writing
        task = self._flush_task
        if task is not None and not task.done():
            if not writing:  # never cancel a query half-way: the connection would be lost
                task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                # A lost intermediate report is not a job failure: the final one follows.
                await task
        return pending


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
