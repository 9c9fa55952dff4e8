"""The worker's own connections: held for its lifetime, outside the pool."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any, LiteralString

import psycopg
from procrastinate import BaseConnector, PsycopgConnector

#: Seconds a statement on a dedicated connection may go unanswered before the connection is
#: given up, and a connection attempt likewise: a dropped network path closes nothing, and
#: without a bound the worker's fetch, finish and heartbeat waited forever, silently.
ANSWER_WITHIN = 15.0


def _cut(connection: psycopg.AsyncConnection[Any]) -> None:
    """Shut the socket down under psycopg: the waiting statement fails at once as a lost
    connection. Cancelling it instead would send a cancel request down the same dead path and
    wait up to 10 s more for it."""
    with contextlib.suppress(OSError, psycopg.Error):
        fd = connection.pgconn.socket
        with socket.socket(fileno=socket.dup(fd)) as dup:
            dup.shutdown(socket.SHUT_RDWR)


class DedicatedConnection:
    """One autocommit connection kept for a worker's lifetime: no pool check per statement.

    Opened on first use and again after it breaks; a statement unanswered for ``timeout``
    seconds breaks it (``psycopg.OperationalError``).
    """

    def __init__(
        self,
        conninfo: str,
        kwargs: dict[str, Any],
        *,
        settings: dict[str, str] | None = None,
        timeout: float = ANSWER_WITHIN,
    ) -> None:
        self._conninfo = conninfo
        self._kwargs = {"connect_timeout": max(1, round(timeout)), **kwargs, "autocommit": True}
        self.timeout = timeout
        # The worker's statements are short and planned as costly (the jobs table is big):
        # JIT compiling them took 40 ms per fetch when measured, for a 1 ms statement.
        gucs = {"jit": "off", **(settings or {})}
        self._kwargs["options"] = " ".join(f"-c {name}={value}" for name, value in gucs.items())
        self._connection: psycopg.AsyncConnection[Any] | None = None

    @classmethod
    def like_pool_of(
        cls,
        connector: BaseConnector,
        *,
        settings: dict[str, str] | None = None,
        timeout: float = ANSWER_WITHIN,
    ) -> DedicatedConnection:
        """A connection to where ``connector``'s pool connects, with the same options."""
        assert isinstance(connector, PsycopgConnector)
        pool = connector.pool
        assert isinstance(pool.conninfo, str)
        assert isinstance(pool.kwargs, dict)
        return cls(pool.conninfo, pool.kwargs, settings=settings, timeout=timeout)

    async def open(self) -> psycopg.AsyncConnection[Any]:
        """The connection, opened now if it is not (or no longer) open."""
        if self._connection is None or self._connection.closed:
            self._connection = await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)
        return self._connection

    @contextlib.asynccontextmanager
    async def answered(self, connection: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
        """Statements on ``connection`` inside the block: answered within ``timeout`` seconds,
        or the connection is cut and they fail."""
        timer = asyncio.get_running_loop().call_later(self.timeout, _cut, connection)
        try:
            yield
        except psycopg.Error as exc:
            if connection.broken or connection.closed:
                await self.close()
            if timer.when() <= asyncio.get_running_loop().time():
                raise psycopg.OperationalError(
                    f"no answer from the database within {self.timeout:g} s"
                ) from exc
            raise
        finally:
            timer.cancel()

    async def fetch_all(self, query: LiteralString, params: dict[str, Any]) -> list[Any]:
        connection = await self.open()
        async with self.answered(connection):
            cursor = await connection.execute(query, params)
            return await cursor.fetchall()

    def is_broken(self) -> bool:
        return self._connection is None or self._connection.closed

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            await connection.close()
