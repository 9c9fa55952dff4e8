"""A worker's own row in taskhub.workers: written when it starts, with each heartbeat and when
it stops. procrastinate's procrastinate_workers row goes when the worker stops or is pruned;
this one stays, so a dead worker is still shown (until taskhub.prune_jobs, 7 days on)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

from procrastinate import App

from backend.queries import QUERIES


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


async def heartbeat(app: App, worker_id: int, jobs_done: int) -> None:
    """procrastinate's heartbeat and the row's, jobs done included, in one statement."""
    await app.connector.execute_query_async(
        QUERIES["worker_heartbeat"], worker_id=worker_id, jobs_done=jobs_done
    )


async def stopped(app: App, worker_id: int, jobs_done: int) -> None:
    await app.connector.execute_query_async(
        QUERIES["worker_stopped"], worker_id=worker_id, jobs_done=jobs_done
    )
