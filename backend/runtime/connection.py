"""The worker's own connections: held for its lifetime, outside the pool."""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
from procrastinate import BaseConnector, PsycopgConnector


class DedicatedConnection:
    """One autocommit connection kept for a worker's lifetime: no pool check per statement.

    Opened on first use and again after it breaks.
    """

    def __init__(
        self, conninfo: str, kwargs: dict[str, Any], *, settings: dict[str, str] | None = None
    ) -> None:
        self._conninfo = conninfo
        self._kwargs = {**kwargs, "autocommit": True}
        # The worker's statements are short and planned as costly (the jobs table is big):
        # JIT compiling them took 40 ms per fetch when measured, for a 1 ms statement.
        gucs = {"jit": "off", **(settings or {})}
        self._kwargs["options"] = " ".join(f"-c {name}={value}" for name, value in gucs.items())
        self._connection: psycopg.AsyncConnection[Any] | None = None

    @classmethod
    def like_pool_of(
        cls, connector: BaseConnector, *, settings: dict[str, str] | None = None
    ) -> DedicatedConnection:
        """A connection to where ``connector``'s pool connects, with the same options."""
        assert isinstance(connector, PsycopgConnector)
        pool = connector.pool
        assert isinstance(pool.conninfo, str)
        assert isinstance(pool.kwargs, dict)
        return cls(pool.conninfo, pool.kwargs, settings=settings)

    async def open(self) -> psycopg.AsyncConnection[Any]:
        """The connection, opened now if it is not (or no longer) open."""
        if self._connection is None or self._connection.closed:
            self._connection = await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)
        return self._connection

    async def fetch_all(self, query: LiteralString, params: dict[str, Any]) -> list[Any]:
        connection = await self.open()
        try:
            cursor = await connection.execute(query, params)
            return await cursor.fetchall()
        except psycopg.Error:
            if connection.broken or connection.closed:
                await self.close()
            raise

    def is_broken(self) -> bool:
        return self._connection is None or self._connection.closed

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            await connection.close()
