"""Where the database is, and the connection pool.

No module-level pools: the API lifespan and the worker each build their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import weakref
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.abc import PQGen
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from backend.errors import DatabaseUnavailable, NotMigrated
from backend.queries import QUERIES
from backend.settings import Settings

DictConnection = AsyncConnection[DictRow]
RV = TypeVar("RV")

#: Seconds an API or dashboard statement may go unanswered before its connection is cut, and a
#: connection attempt likewise. A dropped network path closes nothing: a request that had its
#: connection when the path went waited forever (measured: over 60 s, until the client gave up).
ANSWER_WITHIN = 15.0


def cut(connection: AsyncConnection[Any]) -> None:
    """Shut the socket down under psycopg: what waits on it fails at once as a lost
    connection (a cancel request would go down the same dead path)."""
    with (
        contextlib.suppress(OSError, psycopg.Error),
        socket.socket(fileno=socket.dup(connection.pgconn.socket)) as dup,
    ):
        dup.shutdown(socket.SHUT_RDWR)


class AnsweredConnection(AsyncConnection[DictRow]):
    """The API's connections: every exchange with the server (a statement, a fetch, a commit)
    answered within ``ANSWER_WITHIN`` seconds, or the connection is cut and it fails
    (``psycopg.OperationalError``, a 503)."""

    async def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        timer = asyncio.get_running_loop().call_later(ANSWER_WITHIN, cut, self)
        try:
            return await super().wait(gen, interval, timeout)
        finally:
            timer.cancel()


def describe_database(url: str) -> str:
    """A human description of a database URL, without its password."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    host = str(params.get("host", "localhost"))
    where = f"socket {host}" if host.startswith("/") else f"{host}:{params.get('port', 5432)}"
    return f"database {params.get('dbname', '?')} on {where}"


CHECK_AFTER_IDLE = 1.0  # seconds in the pool after which a connection is checked before use


class IdleCheck:
    """The pool's ``check`` and ``reset``: a round trip before use only for a connection that
    sat in the pool for over ``after`` seconds (the server may have restarted meanwhile).

    psycopg_pool's own check pings every connection at every checkout, which made a short
    request, ``GET /jobs/{id}`` say, one round trip longer. A connection handed back moments
    ago is used as it is; if the server went away in between, that request fails with a 503
    and the broken connection leaves the pool.
    """

    def __init__(self, after: float = CHECK_AFTER_IDLE) -> None:
        self.after = after
        self._returned_at: weakref.WeakKeyDictionary[AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )

    async def reset(self, conn: AsyncConnection[Any]) -> None:
        self._returned_at[conn] = time.monotonic()

    async def check(self, conn: AsyncConnection[Any]) -> None:
        returned_at = self._returned_at.get(conn)
        if returned_at is None or time.monotonic() - returned_at > self.after or conn.broken:
            await AsyncConnectionPool.check_connection(conn)


def create_pool(url: str, settings: Settings) -> AsyncConnectionPool[DictConnection]:
    """An unopened pool; the owner opens it (``await pool.open()``) and closes it."""
    idle_check = IdleCheck()
    return AsyncConnectionPool(
        url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        # Autocommit: a one-statement read is one round trip, not BEGIN, the query and COMMIT.
        # Every request that writes opens its transaction itself (deps.get_conn).
        kwargs={
            "row_factory": dict_row,
            "autocommit": True,
            "connect_timeout": round(ANSWER_WITHIN),
        },
        connection_class=AnsweredConnection,
        open=False,
        check=idle_check.check,
        reset=idle_check.reset,
        name="taskhub",
    )


def check_database(url: str) -> None:
    """Fail fast, with a message that says what to do, when a worker could not work."""
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            row = conn.execute(QUERIES["check_database"]).fetchone()
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach the database: {exc}".strip()) from None
    if row is None or not row[0]:
        raise NotMigrated("the database has no taskhub schema yet: run `taskhub migrate`")
