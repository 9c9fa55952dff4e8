"""Pickup latency of an idle, listening worker in its own process: taskhub, bare procrastinate.

For each flavour, on a fresh database: start a worker process (``bench/probe_worker.py``, the
options of ``taskhub worker``) that knows the probe task ``bench.probe``, wait until it
LISTENs, then defer probes one at a time. Each probe records ``time.time()`` as its function
starts; two latencies per sample:

- from the commit: the probe's start minus the time taken right after the defer's COMMIT
  returned;
- from before the defer: minus the time taken just before the defer (the pool checkout and
  the defer statement included).

Flavours: ``taskhub`` defers as bare procrastinate's ``defer_async`` does, one statement on an
autocommit pool connection (its own transaction); ``taskhub-txn`` wraps that statement in
``conn.transaction()`` (BEGIN, the INSERT, COMMIT: three round trips), as application code
deferring next to its business writes does.

Run from the repository root::

    .venv/bin/python bench/latency.py --samples 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import probe_tasks
from common_latency import (
    BENCH,
    DEFAULT_ADMIN_URL,
    Percentiles,
    children,
    count_listeners,
    fresh_database,
    load_average,
    markdown_table,
    progress,
    subprocess_env,
)
from procrastinate.schema import SchemaManager
from psycopg import AsyncConnection

from backend import defer
from backend.db import create_pool
from backend.process import migrate
from backend.settings import Settings, load_settings

FLAVOURS = ("taskhub", "taskhub-txn", "procrastinate")
SAMPLE_TIMEOUT = 15.0
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class LatencyOptions:
    admin_url: str = DEFAULT_ADMIN_URL
    samples: int = 500
    warmup: int = 20
    #: Random pause between samples, once the previous probe has finished (seconds).
    pause_min: float = 0.005
    pause_max: float = 0.015
    flavours: tuple[str, ...] = FLAVOURS


@dataclass(frozen=True)
class FlavourLatency:
    """One flavour's pickup latencies (ms)."""

    flavour: str
    from_commit: Percentiles
    from_before_defer: Percentiles
    #: Median of (COMMIT returned - before the defer): what the defer itself costs the caller.
    defer_call_p50: float


@dataclass(frozen=True)
class LatencyFigures:
    options: LatencyOptions
    flavours: list[FlavourLatency]
    settings_line: str
    load_before: str
    load_after: str


# --------------------------------------------------------------------------- sampling


class Deferrer:
    """Defers one probe the flavour's usual way and reads back when it started."""

    async def defer(self) -> int:
        raise NotImplementedError

    #: The job's status and the probe's start time, for ``%s`` = the job id.
    STARTED_QUERY: str = ""

    async def started_at(self, observer: AsyncConnection[Any], job_id: int) -> float | None:
        """The probe's start time once its job has succeeded, else None."""
        cursor = await observer.execute(self.STARTED_QUERY.encode(), (job_id,))
        row = await cursor.fetchone()
        if row is None or row[0] != "succeeded":
            if row is not None and row[0] in ("failed", "cancelled", "aborted"):
                raise RuntimeError(f"probe job {job_id} ended {row[0]}")
            return None
        return float(row[1])


class TaskhubDeferrer(Deferrer):
    """Pool checkout (with its check) + ``defer.defer``: one statement, its own transaction."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.pool = create_pool(url, settings)

    async def defer(self) -> int:
        async with self.pool.connection() as conn:
            return await defer.defer(conn, probe_tasks.probe, {})

    STARTED_QUERY = (
        "SELECT job.status::text, result.result FROM procrastinate_jobs job "
        "LEFT JOIN taskhub.job_results result ON result.job_id = job.id WHERE job.id = %s"
    )


class TaskhubTransactionDeferrer(TaskhubDeferrer):
    """Pool checkout + ``conn.transaction()`` + ``defer.defer``: BEGIN, INSERT, COMMIT."""

    async def defer(self) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            return await defer.defer(conn, probe_tasks.probe, {})


class ProcrastinateDeferrer(Deferrer):
    """Stock procrastinate: ``task.defer_async()`` (pool checkout + the defer, autocommit)."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.app = probe_tasks.procrastinate_app(url, settings)
        self.task = self.app.tasks[probe_tasks.TASK_NAME]

    async def defer(self) -> int:
        return await self.task.defer_async()

    STARTED_QUERY = (
        "SELECT job.status::text, probe.started FROM procrastinate_jobs job "
        "LEFT JOIN bench_probe_starts probe ON probe.job_id = job.id WHERE job.id = %s"
    )


async def wait_started(deferrer: Deferrer, observer: AsyncConnection[Any], job_id: int) -> float:
    """Poll (gently: the worker shares 2 cores with us) until the probe's job has succeeded."""
    await asyncio.sleep(0.003)
    deadline = time.monotonic() + SAMPLE_TIMEOUT
    while (started := await deferrer.started_at(observer, job_id)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"probe job {job_id} did not finish in {SAMPLE_TIMEOUT:.0f} s")
        await asyncio.sleep(0.002)
    return started


async def sample(
    flavour: str, deferrer: Deferrer, observer: AsyncConnection[Any], options: LatencyOptions
) -> FlavourLatency:
    from_commit: list[float] = []
    from_before: list[float] = []
    defer_calls: list[float] = []
    total = options.warmup + options.samples
    for i in range(total):
        before = time.time()
        job_id = await deferrer.defer()
        committed = time.time()
        started = await wait_started(deferrer, observer, job_id)
        if i >= options.warmup:
            from_commit.append((started - committed) * 1000)
            from_before.append((started - before) * 1000)
            defer_calls.append((committed - before) * 1000)
        if (i + 1) % 100 == 0:
            progress(flavour, f"{i + 1}/{total} samples")
        await asyncio.sleep(random.uniform(options.pause_min, options.pause_max))
    return FlavourLatency(
        flavour=flavour,
        from_commit=Percentiles.of(from_commit),
        from_before_defer=Percentiles.of(from_before),
        defer_call_p50=statistics.median(defer_calls),
    )


async def measure_flavour(flavour: str, options: LatencyOptions) -> FlavourLatency:
    async with fresh_database(options.admin_url, f"latency_{flavour}") as url:
        settings = load_settings(database_url=url)
        deferrer: Deferrer
        if flavour.startswith("taskhub"):
            await asyncio.to_thread(migrate.upgrade, url)
            deferrer = (
                TaskhubDeferrer(url, settings)
                if flavour == "taskhub"
                else TaskhubTransactionDeferrer(url, settings)
            )
            opened: contextlib.AbstractAsyncContextManager[Any] = deferrer.pool
        else:
            deferrer = ProcrastinateDeferrer(url, settings)
            opened = deferrer.app.open_async()
        async with (
            opened,
            await AsyncConnection.connect(url, autocommit=True) as observer,
        ):
            if isinstance(deferrer, ProcrastinateDeferrer):
                await SchemaManager(deferrer.app.connector).apply_schema_async()
                await observer.execute(probe_tasks.PROBE_TABLE)
            await observer.execute("CHECKPOINT")
            with children(f"{flavour} worker") as group:
                group.start(
                    [
                        sys.executable,
                        str(BENCH / "probe_worker.py"),
                        "--flavour",
                        "taskhub" if flavour.startswith("taskhub") else flavour,
                    ],
                    subprocess_env(url),
                )
                deadline = time.monotonic() + START_TIMEOUT
                while await count_listeners(observer) < 1:
                    group.check_alive()
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{flavour} worker not listening after {START_TIMEOUT}s")
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # let start-up work (periodic defers) pass
                progress(flavour, "worker listening; sampling")
                figures = await sample(flavour, deferrer, observer, options)
                group.check_alive()
    progress(
        flavour,
        f"from commit p50 {figures.from_commit.p50:.2f} ms, "
        f"from before the defer p50 {figures.from_before_defer.p50:.2f} ms",
    )
    return figures


async def measure(options: LatencyOptions) -> LatencyFigures:
    """Both flavours, one after the other, each on its own fresh database."""
    load_before = load_average()
    results = [await measure_flavour(flavour, options) for flavour in options.flavours]
    settings = load_settings(database_url=options.admin_url)
    settings_line = (
        f"worker concurrency {settings.worker_concurrency}, pool min {settings.pool_min_size} "
        f"max {settings.pool_max_size}, polling interval {settings.fetch_polling_interval:g} s"
    )
    return LatencyFigures(options, results, settings_line, load_before, load_average())


# --------------------------------------------------------------------------- report


def render(figures: LatencyFigures) -> str:
    """The figures as a markdown section."""
    headers = ["pickup latency (ms)", *[f.flavour for f in figures.flavours]]
    rows: list[list[str]] = []
    for label, attr in (
        ("from the commit", "from_commit"),
        ("from before the defer", "from_before_defer"),
    ):
        for stat in ("p50", "p95", "p99", "max"):
            rows.append(
                [
                    f"{label}, {stat}",
                    *[f"{getattr(getattr(f, attr), stat):.2f}" for f in figures.flavours],
                ]
            )
    rows.append(
        [
            "defer call (before -> COMMIT returned), p50",
            *[f"{f.defer_call_p50:.2f}" for f in figures.flavours],
        ]
    )
    o = figures.options
    return "\n".join(
        [
            "## Pickup latency, worker in a separate process",
            "",
            f"{o.samples} samples per flavour after {o.warmup} warm-ups, one at a time, "
            f"{o.pause_min * 1000:g}-{o.pause_max * 1000:g} ms random pause after each probe "
            f"finished; {figures.settings_line}; {figures.load_before} before, "
            f"{figures.load_after} after.",
            "Goals for taskhub: from the commit p50 <= 0.5 ms and p99 <= 1 ms; "
            "from before the defer p50 <= 2.5 ms. `taskhub` and `procrastinate` defer with one "
            "statement on a pool connection (its own transaction); `taskhub-txn` wraps it in "
            "BEGIN/COMMIT.",
            "",
            markdown_table(headers, rows),
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> LatencyOptions:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="admin connection")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--pause-ms",
        default="5,15",
        help="random pause between samples, MIN,MAX milliseconds (default: %(default)s); "
        "0,0 keeps the machine from idling between samples",
    )
    parser.add_argument(
        "--flavours", default=",".join(FLAVOURS), help="comma-separated: " + ",".join(FLAVOURS)
    )
    ns = parser.parse_args(argv)
    flavours = tuple(f for f in ns.flavours.split(",") if f)
    if not flavours or any(f not in FLAVOURS for f in flavours):
        parser.error(f"--flavours: choose among {', '.join(FLAVOURS)}")
    try:
        pause_min, pause_max = (float(part) / 1000 for part in ns.pause_ms.split(","))
    except ValueError:
        parser.error("--pause-ms: MIN,MAX in milliseconds, e.g. 5,15")
    if ns.samples < 1 or ns.warmup < 0 or not 0 <= pause_min <= pause_max:
        parser.error("--samples must be >= 1, --warmup >= 0, 0 <= MIN <= MAX")
    return LatencyOptions(
        admin_url=ns.database_url,
        samples=ns.samples,
        warmup=ns.warmup,
        pause_min=pause_min,
        pause_max=pause_max,
        flavours=flavours,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    print(render(asyncio.run(measure(options))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
