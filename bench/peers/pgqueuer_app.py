"""pgqueuer: one no-op entrypoint on an asyncpg connection, as pgqueuer's quick start has it.

Workers run through pgqueuer's CLI, which enters :func:`main` for a ready ``PgQueuer``::

    DATABASE_URL=... PYTHONPATH=bench pgq run peers.pgqueuer_app:main

``bench/throughput.py`` installs the schema with ``pgq install`` and enqueues through
``Queries.enqueue`` with lists (one statement, in one transaction).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg  # type: ignore[import-not-found, import-untyped, unused-ignore]
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job

ENTRYPOINT = "bench_noop"


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    """The factory ``pgq run`` enters (pgqueuer 1.6 wants a context manager): one
    connection, one entrypoint."""
    connection = await asyncpg.connect(os.environ["DATABASE_URL"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint(ENTRYPOINT)  # type: ignore[untyped-decorator, unused-ignore]
    async def noop(job: Job) -> None:
        """Decode the argument, as a real task would, and do nothing with it."""
        if job.payload is not None:
            json.loads(job.payload)

    try:
        yield pgq
    finally:
        await connection.close()
