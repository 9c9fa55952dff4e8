"""Riding out a database outage: a restart, a failover, a read-only server, a cut network.

procrastinate stops the whole worker when one of its side loops (heartbeat, abort polling,
periodic deferrer, listener) raises, and taskhub's fetch loop raised on the first lost
connection: a server restart made every worker process exit, and the jobs they held waited
for the rescue. Now those loops wait and try again, and the worker keeps its jobs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import psycopg
from procrastinate.exceptions import ConnectorException

logger = logging.getLogger(__name__)

FIRST_PAUSE = 0.5  # seconds before the first new try; doubled up to LAST_PAUSE
LAST_PAUSE = 5.0


def is_transient(exc: BaseException) -> bool:
    """An error that passes when the database comes back: unreachable, restarting, timed out
    (psycopg_pool's PoolTimeout is an OperationalError), or read-only (a standby, a failover
    in progress)."""
    if isinstance(exc, ConnectorException) and exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(
        exc, psycopg.OperationalError | psycopg.errors.ReadOnlySqlTransaction | TimeoutError
    )


class Outage:
    """One loop's view of an outage: a WARNING when it begins, growing pauses between tries,
    an INFO line when the database answers again."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self._pause = FIRST_PAUSE

    def failed(self, exc: BaseException) -> float:
        """Seconds to wait before the next try."""
        if self.since is None:
            self.since = time.monotonic()
            logger.warning("%s: the database failed (%s); trying again", self.what, describe(exc))
        pause, self._pause = self._pause, min(self._pause * 2, LAST_PAUSE)
        return pause

    def recovered(self) -> None:
        if self.since is not None:
            logger.info(
                "%s: the database answers again after %.1f s",
                self.what,
                time.monotonic() - self.since,
            )
        self.since = None
        self._pause = FIRST_PAUSE


def describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectorException) and exc.__cause__ is not None:
        exc = exc.__cause__
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


async def keep_going(what: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run ``loop`` (meant to run until cancelled) again after each transient error."""
    outage = Outage(what)
    while True:
        began = time.monotonic()
        try:
            await loop()
            return
        except Exception as exc:
            if not is_transient(exc):
                raise
            if time.monotonic() - began > LAST_PAUSE:
                outage = Outage(what)  # it ran a while: this is a new outage
            await asyncio.sleep(outage.failed(exc))
