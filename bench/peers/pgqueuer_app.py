"""pgqueuer: one no-op entrypoint on an asyncpg connection, as pgqueuer's quick start has it.

Workers run through pgqueuer's CLI, which enters :func:`main` for a ready ``PgQueuer``::

    DATABASE_URL=... PYTHONPATH=bench pgq run peers.pgqueuer_app:main

``bench/throughput.py`` installs the schema with ``pgq install`` and enqueues through
``Queries.enqueue`` with lists (one statement, in one transaction). With ``probe`` (a UDP port)
and ``token`` in its payload, the entrypoint first sends ``"<token> <time.monotonic()>"`` to
127.0.0.1 (``bench/steady.py`` times pickups with it).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg  # type: ignore[import-not-found, import-untyped, unused-ignore]
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job

ENTRYPOINT = "bench_noop"

_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


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
            args = json.loads(job.payload)
            if args.get("probe") is not None:
                message = f"{args.get('token')} {time.monotonic():.6f}"
                _udp.sendto(message.encode(), ("127.0.0.1", int(args["probe"])))

    try:
        yield pgq
    finally:
        await connection.close()
