"""A worker's own row in taskhub.workers: written when it starts, with each heartbeat and when
it stops. procrastinate's procrastinate_workers row goes when the worker stops or is pruned;
this one stays, so a dead worker is still shown (until taskhub.prune_jobs, 7 days on)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

import psycopg
from procrastinate import App

from backend.queries import QUERIES
from backend.runtime.connection import DedicatedConnection


async def register(
    app: App, worker_id: int, queues: Iterable[str] | None, concurrency: int
) -> None:
    """Once, right after procrastinate registered the worker and gave it its id."""
    await app.connector.execute_query_async(
        QUERIES["register_worker_row"],
        worker_id=worker_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        queues=list(queues) if queues is not None else None,
        concurrency=concurrency,
    )


async def heartbeat(connection: DedicatedConnection, worker_id: int, jobs_done: int) -> bool:
    """procrastinate's heartbeat and the row's, jobs done included, in one statement; False
    when procrastinate's row is gone (pruned: the worker was presumed dead).

    On the worker's own connection, never the pool: with a pool smaller than the concurrency,
    a beat queued behind tasks holding every pooled connection could come after
    TASKHUB_RESCUE_AFTER, and the live worker's jobs be rescued and run twice. A connection
    broken by a server restart is opened again for a second try.
    """
    params = {"worker_id": worker_id, "jobs_done": jobs_done}
    try:
        rows = await connection.fetch_all(QUERIES["worker_heartbeat"], params)
    except psycopg.OperationalError:
        if not connection.is_broken():
            raise
        rows = await connection.fetch_all(QUERIES["worker_heartbeat"], params)
    return bool(rows[0]["registered"])


async def stopped(app: App, worker_id: int, jobs_done: int) -> None:
    await app.connector.execute_query_async(
        QUERIES["worker_stopped"], worker_id=worker_id, jobs_done=jobs_done
    )
