"""Recycling a worker process after N jobs or above M MB of resident memory (Celery's
``worker_max_tasks_per_child`` and ``worker_max_memory_per_child``).

The worker stops taking jobs, finishes its running ones as on SIGTERM, and its process exits
with :data:`RECYCLE_EXIT_CODE`; the supervisor (backend/process/supervisor.py) starts a fresh
one at once, as for no crash. Memory is read before each fetch, one ``pread`` of
``/proc/self/statm`` on a descriptor kept open (about 1 us), never per job.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from dataclasses import dataclass

from backend.errors import SettingsError

#: A recycled worker process exits with this (EX_TEMPFAIL): "start me again", not a crash.
RECYCLE_EXIT_CODE = 75
_MB = 1024 * 1024


class WorkerRecycled(Exception):
    """The worker stopped to be recycled; its process exits with :data:`RECYCLE_EXIT_CODE`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ResidentMemory:
    """This process's resident memory, read cheaply and as often as needed."""

    def __init__(self) -> None:
        self._fd: int | None = None
        with contextlib.suppress(OSError):
            self._fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def megabytes(self) -> int:
        if self._fd is not None:
            return int(os.pread(self._fd, 128, 0).split()[1]) * self._page // _MB
        # Elsewhere, the peak: it never falls, so the first excess recycles all the same.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // _MB if sys.platform == "darwin" else peak // 1024

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True)
class Recycling:
    """When a worker process is replaced by a fresh one; ``index`` names it in the log."""

    max_jobs: int | None = None
    max_memory_mb: int | None = None
    index: int | None = None

    @property
    def enabled(self) -> bool:
        return self.max_jobs is not None or self.max_memory_mb is not None

    @property
    def name(self) -> str:
        return f"worker {self.index}" if self.index is not None else "worker"

    def jobs_left(self, taken: int) -> int | None:
        """How many more jobs this process may take; None for no limit."""
        return None if self.max_jobs is None else self.max_jobs - taken

    def due(self, taken: int, memory: ResidentMemory | None) -> str | None:
        """Why the process is recycled now (``after 1000 jobs``, ``at 812 MB``), or None."""
        if self.max_jobs is not None and taken >= self.max_jobs:
            return f"after {taken} jobs"
        if self.max_memory_mb is not None and memory is not None:
            used = memory.megabytes()
            if used >= self.max_memory_mb:
                return f"at {used} MB"
        return None

    def check_start(self, memory: ResidentMemory) -> None:
        """A limit the process is already over before its first job would recycle it after
        every batch: refuse it at start instead."""
        if self.max_memory_mb is None:
            return
        used = memory.megabytes()
        if used >= self.max_memory_mb:
            raise SettingsError(
                f"TASKHUB_WORKER_MAX_MEMORY_MB={self.max_memory_mb} is below what a worker "
                f"process holds before its first job ({used} MB): raise it well above that, "
                "or unset it"
            )
