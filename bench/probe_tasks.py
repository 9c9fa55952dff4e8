"""The probe task the latency bench times: it records the wall-clock time it started at.

taskhub's ``bench.probe`` returns ``time.time()``, which taskhub's worker stores in
``taskhub.job_results``; bare procrastinate keeps no results, so its twin writes the time to
``bench_probe_starts``. Both worker processes run on the machine the bench runs on, so the
clocks are the same.

``bench.noop`` is taskhub's no-op for ``bench/steady.py``: ``taskhub.ping``'s work (it returns
its ``message``) plus, with ``probe`` (a UDP port) and ``token``, one datagram
``"<token> <time.monotonic()>"`` to 127.0.0.1 as its first action. ``taskhub worker --app
probe_tasks`` (``bench/`` on ``PYTHONPATH``) loads both tasks as the app ``bench``.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import procrastinate
from procrastinate import JobContext
from pydantic import BaseModel, ConfigDict

from backend.declare.apps import TaskhubApp
from backend.declare.registry import TaskBlueprint
from backend.settings import Settings

TASK_NAME = "bench.probe"
NOOP_TASK = "bench.noop"

blueprint = TaskBlueprint()


@blueprint.task(name=TASK_NAME)
async def probe() -> float:
    """The time the task function started (seconds since the epoch)."""
    return time.time()


class NoopArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: Any = None
    probe: int | None = None  # UDP port on 127.0.0.1 to report the start to
    token: int | None = None


_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


@blueprint.task(name=NOOP_TASK)
async def noop(args: NoopArgs) -> Any:
    """``taskhub.ping`` without its sleep; with ``probe``, first tell the bench it started."""
    if args.probe is not None:
        _udp.sendto(f"{args.token} {time.monotonic():.6f}".encode(), ("127.0.0.1", args.probe))
    return args.message


#: ``taskhub worker --app probe_tasks`` loads this.
app = TaskhubApp(name="bench", blueprints=[blueprint], description="bench probe tasks")


#: Where bare procrastinate's probe writes its start time.
PROBE_TABLE = """
CREATE TABLE IF NOT EXISTS bench_probe_starts (
    job_id bigint PRIMARY KEY,
    started double precision NOT NULL
)
"""


def procrastinate_app(url: str, settings: Settings) -> procrastinate.App:
    """A bare procrastinate App (same pool sizes as taskhub's) with the probe's twin."""
    connector = procrastinate.PsycopgConnector(
        conninfo=url, min_size=settings.pool_min_size, max_size=settings.pool_max_size
    )
    app = procrastinate.App(connector=connector)

    @app.task(name=TASK_NAME, pass_context=True)
    async def bare_probe(context: JobContext) -> None:
        started = time.time()
        await context.app.connector.execute_query_async(
            "INSERT INTO bench_probe_starts (job_id, started) VALUES (%(job_id)s, %(started)s)",
            job_id=context.job.id,
            started=started,
        )

    return app
