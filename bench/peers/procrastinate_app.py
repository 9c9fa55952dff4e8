"""Bare procrastinate: an App on PsycopgConnector with one async no-op task.

Workers run through procrastinate's own CLI, as its docs do::

    DATABASE_URL=... PYTHONPATH=bench procrastinate --app=peers.procrastinate_app.app \
        --log-level=warning \
        worker --concurrency 10

The connector's pool keeps procrastinate's defaults; the schema comes from
``SchemaManager.apply_schema_async()`` (see ``bench/throughput.py``).
"""

from __future__ import annotations

import os

import procrastinate

TASK_NAME = "bench.noop"

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("DATABASE_URL", "")),
)


@app.task(name=TASK_NAME)
async def noop(message: int) -> None:
    """Do nothing: the figure is the queue's own cost per job."""
