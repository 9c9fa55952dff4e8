"""Baseline figures for no-op jobs: taskhub next to bare procrastinate, in one run.

For each column, on a fresh database of its own (created on the server of
``--database-url`` and dropped at the end):

1. enqueue rate, one job per transaction (through a pool, and on a held connection);
2. enqueue rate, batched;
3. work rate of one worker at concurrency 10 draining ``--jobs`` queued no-op jobs;
4. pickup latency (defer committed -> task starts) with an idle, listening worker.

Run from the repository root::

    .venv/bin/python bench/baseline.py --output bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import importlib.metadata
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import procrastinate
import psycopg
from procrastinate.app import WorkerOptions
from procrastinate.job_context import JobContext
from procrastinate.middleware import TaskMiddleware
from procrastinate.schema import SchemaManager
from procrastinate.types import JSONDict
from procrastinate.worker import Worker
from psycopg import AsyncConnection, sql

from backend import migrate, queue
from backend.db import create_pool
from backend.queue import build_task_app
from backend.runtime.context import SETTINGS_KEY
from backend.runtime.worker import TaskhubWorker
from backend.settings import Settings, load_settings
from backend.tasks.builtin import ping

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WARMUP_DEFERS = 20
WARMUP_LATENCY_SAMPLES = 10
SAMPLE_TIMEOUT = 15.0


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    admin_url: str
    jobs: int
    single_jobs: int
    batch_size: int
    latency_samples: int
    latency_spacing: float
    first: str
    output: Path | None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        default=DEFAULT_ADMIN_URL,
        help="admin connection used to CREATE/DROP the bench databases (default: %(default)s)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=20_000,
        help="jobs for the batched enqueue and the work rate (default: %(default)s)",
    )
    parser.add_argument(
        "--single-jobs",
        type=int,
        default=None,
        help="jobs for the one-per-transaction enqueue (default: --jobs / 10)",
    )
    parser.add_argument("--batch-size", type=int, default=1_000, help="default: %(default)s")
    parser.add_argument("--latency-samples", type=int, default=300, help="default: %(default)s")
    parser.add_argument(
        "--latency-spacing-ms",
        type=float,
        default=5.0,
        help="pause between latency samples, once the previous job has finished "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--first",
        choices=("taskhub", "procrastinate"),
        default="taskhub",
        help="which column runs first, to check for order effects (default: %(default)s)",
    )
    parser.add_argument("--output", type=Path, default=None, help="write the markdown here")
    ns = parser.parse_args(argv)
    jobs: int = ns.jobs
    single: int = ns.single_jobs if ns.single_jobs is not None else max(jobs // 10, 1)
    if jobs < 1 or single < 1 or ns.batch_size < 1 or ns.latency_samples < 1:
        parser.error("--jobs, --single-jobs, --batch-size and --latency-samples must be >= 1")
    return Options(
        admin_url=ns.database_url,
        jobs=jobs,
        single_jobs=single,
        batch_size=ns.batch_size,
        latency_samples=ns.latency_samples,
        latency_spacing=ns.latency_spacing_ms / 1000,
        first=ns.first,
        output=ns.output,
    )


# --------------------------------------------------------------------------- databases


def database_url(admin_url: str, dbname: str) -> str:
    """The admin URL with its database replaced (taskhub settings want a URL, not a DSN)."""
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, dbname: str) -> AsyncIterator[str]:
    """Create an empty database, yield its URL, drop it (even if other sessions remain)."""
    ident = sql.Identifier(dbname)
    async with await AsyncConnection.connect(admin_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield database_url(admin_url, dbname)
    finally:
        async with await AsyncConnection.connect(admin_url, autocommit=True) as admin:
            await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


async def reset_jobs(observer: AsyncConnection[Any]) -> None:
    """Empty the job tables (events and periodic defers go with them) and refresh statistics."""
    await observer.execute("TRUNCATE procrastinate_jobs RESTART IDENTITY CASCADE")
    await observer.execute("ANALYZE")


async def settle(observer: AsyncConnection[Any]) -> None:
    """Before each timed phase: fresh statistics (autovacuum may be off), and a checkpoint so
    that no checkpoint's writes compete with the phase's commits."""
    await observer.execute("ANALYZE procrastinate_jobs")
    await observer.execute("CHECKPOINT")


# --------------------------------------------------------------------------- columns


class Column(Protocol):
    """What the measurements need from one side of the comparison."""

    name: str
    app: procrastinate.App

    def opened(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Schema created, app (and any pool) open."""
        ...

    async def defer_one(self, i: int) -> int:
        """Defer one job in a transaction of its own, the column's usual way; return its id."""
        ...

    async def defer_one_on(self, conn: AsyncConnection[Any], i: int) -> None:
        """Defer one job on ``conn``, inside the transaction the caller has open."""
        ...

    async def work(self, options: WorkerOptions) -> None:
        """Run the column's worker with ``options`` until it stops (or is cancelled)."""
        ...

    async def defer_batch(self, start: int, count: int) -> None:
        """Defer ``count`` jobs in one transaction."""
        ...


class TaskhubColumn:
    """taskhub's own paths: ``queue.defer`` in the caller's transaction, ``build_task_app``."""

    name = "taskhub"

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.app = build_task_app(url, settings)
        # The pool the API defers through (backend.api.deps: one transaction per request).
        self.pool = create_pool(url, settings)

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate.upgrade, self.url)
        await self.pool.open(wait=True)
        try:
            async with self.app.open_async():
                yield
        finally:
            await self.pool.close()

    async def defer_one(self, i: int) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            return await queue.defer(conn, ping, {"message": i})

    async def defer_one_on(self, conn: AsyncConnection[Any], i: int) -> None:
        await queue.defer(conn, ping, {"message": i})

    async def defer_batch(self, start: int, count: int) -> None:
        many = [{"message": i} for i in range(start, start + count)]
        async with self.pool.connection() as conn, conn.transaction():
            await queue.batch_defer(conn, ping, many)

    async def work(self, options: WorkerOptions) -> None:
        # taskhub's worker (backend/runtime/worker.py), as backend/runner.py runs it.
        worker = TaskhubWorker(
            app=self.app, additional_context={SETTINGS_KEY: self.settings}, **options
        )
        await worker.run()


async def noop(message: Any = None, sleep: float = 0) -> Any:
    """The bare-procrastinate twin of ``taskhub.ping``: an async no-op when sleep is 0."""
    if sleep:
        await asyncio.sleep(sleep)
    return message


class ProcrastinateColumn:
    """Stock procrastinate: ``PsycopgConnector``, ``defer_async``, ``batch_defer_async``."""

    name = "procrastinate"

    def __init__(self, url: str, settings: Settings) -> None:
        # Same pool sizes as taskhub's app, so only the code on top differs.
        connector = procrastinate.PsycopgConnector(
            conninfo=url, min_size=settings.pool_min_size, max_size=settings.pool_max_size
        )
        self.app = procrastinate.App(connector=connector)
        self.task = self.app.task(name="bench.noop")(noop)

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        async with self.app.open_async():
            await SchemaManager(self.app.connector).apply_schema_async()
            yield

    async def defer_one(self, i: int) -> int:
        return await self.task.defer_async(message=i, sleep=0)

    async def defer_one_on(self, conn: AsyncConnection[Any], i: int) -> None:
        await self.task.configure(connection=conn).defer_async(message=i, sleep=0)

    async def defer_batch(self, start: int, count: int) -> None:
        many: list[JSONDict] = [{"message": i, "sleep": 0} for i in range(start, start + count)]
        await self.task.batch_defer_async(*many)

    async def work(self, options: WorkerOptions) -> None:
        await self.app.run_worker_async(**options)


# --------------------------------------------------------------------------- worker


def worker_options(
    settings: Settings, *, wait: bool, task_middleware: list[TaskMiddleware] | None = None
) -> WorkerOptions:
    """The options backend/runner.py runs procrastinate's worker with (plus ``wait``)."""
    options: WorkerOptions = {
        "concurrency": settings.worker_concurrency,
        "fetch_job_polling_interval": settings.fetch_polling_interval,
        "shutdown_graceful_timeout": settings.shutdown_grace_period,
        "install_signal_handlers": False,
        "listen_notify": True,
        "wait": wait,
    }
    if task_middleware:
        options["task_middleware"] = task_middleware
    return options


class StartRecorder:
    """Async task middleware: the wall-clock time procrastinate hands a job to its task.

    It runs on the worker's event loop right before the task function is awaited, for
    both columns alike (taskhub's wrapper then only validates the arguments).
    """

    def __init__(self) -> None:
        self._starts: dict[int, asyncio.Future[float]] = {}

    def _future(self, job_id: int) -> asyncio.Future[float]:
        future = self._starts.get(job_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._starts[job_id] = future
        return future

    async def __call__(
        self, call_next: Callable[[], Awaitable[Any]], context: JobContext, worker: Worker
    ) -> Any:
        started = time.time()
        if context.job.id is not None:
            future = self._future(context.job.id)
            if not future.done():
                future.set_result(started)
        return await call_next()

    async def started(self, job_id: int) -> float:
        return await asyncio.shield(self._future(job_id))


async def wait_until(check: Callable[[], Awaitable[bool]], *, interval: float, what: str) -> None:
    """Poll ``check`` every ``interval`` seconds, for at most SAMPLE_TIMEOUT seconds."""
    deadline = time.monotonic() + SAMPLE_TIMEOUT
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {SAMPLE_TIMEOUT:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


async def fetch_value(conn: AsyncConnection[Any], query: str, *params: Any) -> Any:
    cursor = await conn.execute(query.encode(), params or None)
    row = await cursor.fetchone()
    return None if row is None else row[0]


# --------------------------------------------------------------------------- measurements


@dataclass(frozen=True)
class Figures:
    enqueue_single: float
    enqueue_single_held: float
    enqueue_batch: float
    work_rate: float
    work_cpu_ms_per_job: float
    latencies_ms: list[float]

    def percentile(self, p: int) -> float:
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[p - 1]


def progress(column: Column, message: str) -> None:
    print(f"[{column.name}] {message}", file=sys.stderr, flush=True)


async def measure_enqueue_single(column: Column, count: int) -> float:
    for i in range(WARMUP_DEFERS):
        await column.defer_one(-1 - i)
    started = time.perf_counter()
    for i in range(count):
        await column.defer_one(i)
    return count / (time.perf_counter() - started)


async def measure_enqueue_single_held(column: Column, url: str, count: int) -> float:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        for i in range(WARMUP_DEFERS):
            async with conn.transaction():
                await column.defer_one_on(conn, -1 - i)
        started = time.perf_counter()
        for i in range(count):
            async with conn.transaction():
                await column.defer_one_on(conn, i)
        return count / (time.perf_counter() - started)


async def measure_enqueue_batch(column: Column, count: int, batch_size: int) -> float:
    started = time.perf_counter()
    for start in range(0, count, batch_size):
        await column.defer_batch(start, min(batch_size, count - start))
    return count / (time.perf_counter() - started)


# The measured jobs; taskhub's periodic maintenance jobs may run alongside.
NO_OPS = ["taskhub.ping", "bench.noop"]


async def measure_work(
    column: Column, observer: AsyncConnection[Any], settings: Settings, count: int
) -> tuple[float, float]:
    """Drain ``count`` queued jobs with one worker; return (jobs/s, process CPU ms per job)."""
    queued = await fetch_value(
        observer,
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo' AND task_name = ANY(%s)",
        NO_OPS,
    )
    if queued != count:
        raise RuntimeError(f"{column.name}: expected {count} queued jobs, found {queued}")
    cpu_started = time.process_time()
    started = time.perf_counter()
    # wait=False: the worker stops once a fetch finds nothing, after its running jobs end.
    await column.work(worker_options(settings, wait=False))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    succeeded = await fetch_value(
        observer,
        "SELECT count(*) FROM procrastinate_jobs"
        " WHERE status = 'succeeded' AND task_name = ANY(%s)",
        NO_OPS,
    )
    if succeeded != count:
        raise RuntimeError(f"{column.name}: {succeeded} of {count} jobs succeeded")
    return count / elapsed, cpu * 1000 / count


async def measure_latency(
    column: Column,
    observer: AsyncConnection[Any],
    settings: Settings,
    samples: int,
    spacing: float,
) -> list[float]:
    recorder = StartRecorder()
    worker = asyncio.create_task(
        column.work(worker_options(settings, wait=True, task_middleware=[recorder])),
        name=f"{column.name} latency worker",
    )

    async def listening() -> bool:
        if worker.done():
            worker.result()  # raise what stopped it
        found = await fetch_value(
            observer,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query LIKE %s",
            "LISTEN %",
        )
        return bool(found)

    async def finished(job_id: int) -> bool:
        status = await fetch_value(
            observer, "SELECT status FROM procrastinate_jobs WHERE id = %s", job_id
        )
        return bool(status == "succeeded")

    latencies: list[float] = []
    try:
        await wait_until(listening, interval=0.01, what="the worker's LISTEN")
        for i in range(WARMUP_LATENCY_SAMPLES + samples):
            job_id = await column.defer_one(i)
            committed = time.time()
            async with asyncio.timeout(SAMPLE_TIMEOUT):
                started = await recorder.started(job_id)
            if i >= WARMUP_LATENCY_SAMPLES:
                latencies.append((started - committed) * 1000)
            # The next defer must find the worker idle again: job finished, fetch loop done.
            await wait_until(
                functools.partial(finished, job_id),
                interval=0.001,
                what=f"job {job_id} to finish",
            )
            await asyncio.sleep(spacing)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    return latencies


async def measure_column(column: Column, url: str, settings: Settings, options: Options) -> Figures:
    async with (
        column.opened(),
        await AsyncConnection.connect(url, autocommit=True) as observer,
    ):
        await settle(observer)
        single = await measure_enqueue_single(column, options.single_jobs)
        progress(column, f"enqueue, 1 job per transaction: {single:,.0f} jobs/s")
        await settle(observer)
        held = await measure_enqueue_single_held(column, url, options.single_jobs)
        progress(column, f"enqueue, 1 job per transaction, held connection: {held:,.0f} jobs/s")

        await reset_jobs(observer)
        await settle(observer)
        batch = await measure_enqueue_batch(column, options.jobs, options.batch_size)
        progress(column, f"enqueue, batches of {options.batch_size:,}: {batch:,.0f} jobs/s")

        await settle(observer)
        progress(column, f"working {options.jobs:,} jobs...")
        rate, cpu_ms = await measure_work(column, observer, settings, options.jobs)
        progress(column, f"work rate: {rate:,.0f} jobs/s ({cpu_ms:.2f} CPU ms/job)")

        await reset_jobs(observer)
        await settle(observer)
        latencies = await measure_latency(
            column, observer, settings, options.latency_samples, options.latency_spacing
        )
        progress(column, f"pickup latency p50: {statistics.median(latencies):.2f} ms")
    return Figures(
        enqueue_single=single,
        enqueue_single_held=held,
        enqueue_batch=batch,
        work_rate=rate,
        work_cpu_ms_per_job=cpu_ms,
        latencies_ms=latencies,
    )


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Environment:
    date: str
    command: str
    python: str
    procrastinate: str
    psycopg: str
    libpq: str
    psycopg_pool: str
    taskhub: str
    server: str
    server_settings: str
    cpus: str
    platform: str


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


async def describe_environment(admin_url: str) -> Environment:
    async with await AsyncConnection.connect(admin_url, autocommit=True) as conn:
        version = await fetch_value(conn, "SHOW server_version")
        names = (
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "shared_buffers",
            "checkpoint_timeout",
            "autovacuum",
        )
        values = [f"{name}={await fetch_value(conn, f'SHOW {name}')}" for name in names]
    libpq = psycopg.pq.version()
    return Environment(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=shlex.join(sys.orig_argv),
        python=platform.python_version(),
        procrastinate=importlib.metadata.version("procrastinate"),
        psycopg=importlib.metadata.version("psycopg"),
        libpq=f"{libpq // 10000}.{libpq % 10000}",
        psycopg_pool=importlib.metadata.version("psycopg-pool"),
        taskhub=importlib.metadata.version("taskhub"),
        server=f"PostgreSQL {version}",
        server_settings=", ".join(values),
        cpus=f"{os.cpu_count()} x {cpu_model()}",
        platform=platform.platform(),
    )


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


def render_table(taskhub: Figures, bare: Figures, options: Options) -> str:
    batch = f"{options.batch_size:,}"
    rows: list[tuple[str, float, float, str]] = [
        (
            "enqueue, 1 job per transaction (jobs/s)",
            taskhub.enqueue_single,
            bare.enqueue_single,
            ",.0f",
        ),
        (
            "enqueue, 1 job per transaction, held connection (jobs/s)",
            taskhub.enqueue_single_held,
            bare.enqueue_single_held,
            ",.0f",
        ),
        (
            f"enqueue, batches of {batch} (jobs/s)",
            taskhub.enqueue_batch,
            bare.enqueue_batch,
            ",.0f",
        ),
        (
            "work rate, 1 worker, concurrency 10 (jobs/s)",
            taskhub.work_rate,
            bare.work_rate,
            ",.0f",
        ),
        (
            "worker process CPU per job (ms)",
            taskhub.work_cpu_ms_per_job,
            bare.work_cpu_ms_per_job,
            ".2f",
        ),
    ]
    for p in (50, 95, 99):
        rows.append((f"pickup latency p{p} (ms)", taskhub.percentile(p), bare.percentile(p), ".2f"))
    rows.append(
        ("pickup latency max (ms)", max(taskhub.latencies_ms), max(bare.latencies_ms), ".2f")
    )
    lines = [
        "| figure | taskhub | procrastinate | taskhub / procrastinate |",
        "|---|---:|---:|---:|",
    ]
    for label, ours, theirs, fmt in rows:
        lines.append(f"| {label} | {ours:{fmt}} | {theirs:{fmt}} | {ratio(ours, theirs)} |")
    return "\n".join(lines)


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over ``seconds`` (from /proc/stat), before the bench starts."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return 1 - (idle1 - idle0) / total if total > 0 else None


def render_report(
    env: Environment,
    table: str,
    options: Options,
    settings: Settings,
    elapsed: float,
    quiet: str,
) -> str:
    order = "taskhub first" if options.first == "taskhub" else "bare procrastinate first"
    pools = f"min {settings.pool_min_size}, max {settings.pool_max_size}"
    worker = (
        f"concurrency {settings.worker_concurrency}, "
        f"polling interval {settings.fetch_polling_interval:g} s, "
        f"shutdown grace {settings.shutdown_grace_period:g} s"
    )
    single = f"{options.single_jobs:,}"
    jobs = f"{options.jobs:,}"
    batch = f"{options.batch_size:,}"
    spacing = f"{options.latency_spacing * 1000:g}"
    return f"""# Baseline: taskhub next to bare procrastinate, no-op jobs

There is no target yet: this is the baseline later work is measured against.

Runs vary: on a small VM, fsync latency moves the enqueue and work rates by 10-30% from one
run to the next, in either column. Compare figures taken in one run, on one machine, and
read a difference between the columns of less than about 25% as noise unless it repeats
across runs (`--first procrastinate` swaps the order).

- date: {env.date}
- command: `{env.command}` (took {elapsed:.0f} s)
- Python {env.python}, procrastinate {env.procrastinate}, psycopg {env.psycopg} \
(libpq {env.libpq}), psycopg-pool {env.psycopg_pool}, taskhub {env.taskhub}
- server: {env.server} on the local machine ({env.server_settings})
- CPUs: {env.cpus}; {env.platform}
- machine before the run: {quiet} (other work on the machine skews the figures)

{table}

## How measured

Each column runs on a fresh database of its own (created, then dropped), one column after
the other, {order}, in one Python process and one event loop. taskhub's schema comes
from its alembic migration (`backend.migrate.upgrade`), bare procrastinate's from
`SchemaManager.apply_schema_async()`; both are procrastinate 3.10.0's schema. Both apps use
the same pool sizes (taskhub's settings: {pools}) and the worker runs with taskhub's options
(backend/runner.py): {worker}, LISTEN/NOTIFY on, no signal handlers. The taskhub column
runs taskhub's worker (`backend/runtime/worker.py`), which also stores what each job returned
(`taskhub.ping` returns its message: one `taskhub.job_results` row per job, written in the
statement that finishes the job); bare procrastinate keeps nothing.
The jobs are no-ops: `taskhub.ping` with `{{"message": i}}` (validated to
`{{"message": i, "sleep": 0}}`) against an equivalent async procrastinate task
`bench.noop(message=i, sleep=0)`.

- **enqueue, 1 job per transaction**: {single} jobs one after the other, after
  {WARMUP_DEFERS} untimed ones. taskhub: the API's path, `pool.connection()` (pool check)
  + `conn.transaction()` + `queue.defer(conn, ping, ...)`. procrastinate: `task.defer_async()`
  (pool check + BEGIN + INSERT + COMMIT).
- **held connection**: the same count on one autocommit connection held throughout,
  `async with conn.transaction()` around `queue.defer(conn, ...)` or
  `task.configure(connection=conn).defer_async(...)`: no pool check.
- **enqueue, batched**: after emptying the jobs table, {jobs} jobs in transactions of {batch}:
  `queue.batch_defer(conn, ping, [...])` on a pool connection, and
  `task.batch_defer_async(*kwargs)`.
- **work rate**: those {jobs} queued jobs, after `ANALYZE procrastinate_jobs` and a
  `CHECKPOINT`; then the column's worker with `wait=False` timed from start to return (the
  worker stops once a fetch finds no job and its running jobs are finished), then a check that
  all {jobs} are `succeeded`. CPU per job is this process's CPU time (the worker, as nothing
  else runs) divided by the jobs; PostgreSQL's CPU is not included. Each job is updated twice
  (fetch, finish); with autovacuum off (see the server line) their dead rows stay for the
  whole run.
- **pickup latency**: jobs table emptied, a worker started (`wait=True`) and seen listening in
  `pg_stat_activity`; then {options.latency_samples} samples (after
  {WARMUP_LATENCY_SAMPLES} discarded), one at a time: defer one job through the column's
  one-per-transaction path, take `time.time()` as soon as the defer call returns (after its
  COMMIT), and compare with `time.time()` taken by an async task middleware at the moment
  the worker calls the task (same clock, same process). Before the next sample the job must be
  `succeeded` (so the worker is idle again), plus a {spacing} ms pause. The worker shares the
  event loop with the deferring code, so the job cannot start before the commit time is
  taken; the figure includes NOTIFY delivery, the worker's wake-up, the fetch (pool check +
  fetch transaction) and the dispatch to the task.
"""


# --------------------------------------------------------------------------- main


async def run(options: Options) -> str:
    busy = await asyncio.to_thread(cpu_busy)
    quiet = f"load average {os.getloadavg()[0]:.2f} (1 min)"
    if busy is not None:
        quiet = f"{busy:.0%} of the CPUs busy in the second before the start, {quiet}"
    if busy is not None and busy > 0.1:
        print(
            f"warning: {busy:.0%} of the CPUs were busy before the start: other processes "
            "are running, the figures will be noisy",
            file=sys.stderr,
        )
    wall_started = time.perf_counter()
    env = await describe_environment(options.admin_url)
    figures: dict[str, Figures] = {}
    settings = load_settings(database_url=options.admin_url, worker_concurrency=10)
    columns: list[tuple[str, Callable[[str, Settings], Column]]] = [
        ("taskhub", TaskhubColumn),
        ("procrastinate", ProcrastinateColumn),
    ]
    if options.first != "taskhub":
        columns.reverse()
    for name, make_column in columns:
        dbname = f"taskhub_bench_{os.getpid()}_{name}"
        async with fresh_database(options.admin_url, dbname) as url:
            settings = load_settings(database_url=url, worker_concurrency=10)
            column = make_column(url, settings)
            progress(column, f"database {dbname}")
            figures[name] = await measure_column(column, url, settings, options)
    table = render_table(figures["taskhub"], figures["procrastinate"], options)
    elapsed = time.perf_counter() - wall_started
    return render_report(env, table, options, settings, elapsed, quiet)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    # "App is instantiated in the main Python module": true, and harmless here, as the
    # worker runs in this process.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    report = asyncio.run(run(options))
    print(report)
    if options.output is not None:
        options.output.write_text(report, encoding="utf-8")
        print(f"wrote {options.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
