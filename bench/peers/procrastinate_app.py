"""Bare procrastinate: an App on PsycopgConnector with one async no-op task.

Workers run through procrastinate's own CLI, as its docs do::

    DATABASE_URL=... PYTHONPATH=bench procrastinate --app=peers.procrastinate_app.app \
        --log-level=warning \
        worker --concurrency 10

The connector's pool keeps procrastinate's defaults; the schema comes from
``SchemaManager.apply_schema_async()`` (see ``bench/throughput.py``). With ``probe`` (a UDP
port) and ``token``, the task first sends ``"<token> <time.monotonic()>"`` to 127.0.0.1
(``bench/steady.py`` times pickups with it).
"""

from __future__ import annotations

import os
import socket
import time

import procrastinate

TASK_NAME = "bench.noop"

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("DATABASE_URL", "")),
)


_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


@app.task(name=TASK_NAME)
async def noop(
    message: int | None = None, probe: int | None = None, token: int | None = None
) -> None:
    """Do nothing: the figure is the queue's own cost per job."""
    if probe is not None:
        _udp.sendto(f"{token} {time.monotonic():.6f}".encode(), ("127.0.0.1", probe))
