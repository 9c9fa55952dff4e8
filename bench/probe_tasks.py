"""The probe task the latency bench times: it records the wall-clock time it started at.

taskhub's ``bench.probe`` returns ``time.time()``, which taskhub's worker stores in
``taskhub.job_results``; bare procrastinate keeps no results, so its twin writes the time to
``bench_probe_starts``. Both worker processes run on the machine the bench runs on, so the
clocks are the same.
"""

from __future__ import annotations

import time

import procrastinate
from procrastinate import JobContext

from backend.declare.registry import TaskBlueprint
from backend.settings import Settings

TASK_NAME = "bench.probe"

blueprint = TaskBlueprint()


@blueprint.task(name=TASK_NAME)
async def probe() -> float:
    """The time the task function started (seconds since the epoch)."""
    return time.time()


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
