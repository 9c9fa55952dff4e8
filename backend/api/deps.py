"""Request dependencies. The connection dependency is the transaction boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, cast

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from backend.db import DictConnection
from backend.errors import DatabaseUnavailable


def get_pool(request: Request) -> AsyncConnectionPool[DictConnection]:
    return cast(AsyncConnectionPool[DictConnection], request.app.state.pool)


async def get_conn(
    request: Request,
    pool: Annotated[AsyncConnectionPool[DictConnection], Depends(get_pool)],
) -> AsyncIterator[DictConnection]:
    """One transaction per request: committed before the response is sent, rolled back on error."""
    timeout = request.app.state.settings.database_timeout
    try:
        async with pool.connection(timeout=timeout) as conn, conn.transaction():
            yield conn
    except PoolTimeout:
        raise DatabaseUnavailable("the database is unreachable; try again shortly") from None


Pool = Annotated[AsyncConnectionPool[DictConnection], Depends(get_pool)]
Conn = Annotated[DictConnection, Depends(get_conn, scope="function")]
