"""Where the database is, and the connection pool.

No module-level pools: the API lifespan and the worker each build their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from backend.embedded import embedded_server
from backend.settings import Settings

DictConnection = AsyncConnection[DictRow]


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yield the URL of the database to use: ``DATABASE_URL``, or the embedded server's."""
    if settings.database_url:
        yield settings.database_url
        return
    with embedded_server(settings.embedded_data_dir) as url:
        yield url


def describe_database(url: str) -> str:
    """A human description of a database URL, without its password."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    host = str(params.get("host", "localhost"))
    where = f"socket {host}" if host.startswith("/") else f"{host}:{params.get('port', 5432)}"
    return f"database {params.get('dbname', '?')} on {where}"


def create_pool(url: str, settings: Settings) -> AsyncConnectionPool[DictConnection]:
    """An unopened pool; the owner opens it (``await pool.open()``) and closes it."""
    return AsyncConnectionPool(
        url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs={"row_factory": dict_row},
        connection_class=AsyncConnection[DictRow],
        open=False,
        check=AsyncConnectionPool.check_connection,
        name="taskhub",
    )
