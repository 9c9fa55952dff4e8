"""Work rate of taskhub and its peers draining no-op jobs, in one run on one machine.

For each system (taskhub, bare procrastinate, pgqueuer at concurrency 10 and with its
defaults, Celery on the local Redis, chancy at concurrency 10 with eager polling (its bare
defaults: a not-run row saying why), oban at concurrency 10 from bench/.venv312, Python 3.12)
and each worker process count (1 and 2 by default),
on a fresh database (or a flushed Redis database) of its own:

1. start the workers the way the system's docs run them (its CLI), wait until they listen
   and are idle, then ANALYZE + CHECKPOINT and let the statistics settle;
2. enqueue ``--jobs`` no-op jobs: PostgreSQL systems in ONE transaction through their batch
   enqueue, so all become visible at one commit (the clock starts after the commit);
   Celery as fast as its client publishes (the clock starts at the first publish);
3. poll until all are done; rate = jobs / elapsed. Per job: transactions, WAL fsyncs,
   the workers' CPU and PostgreSQL's (or Redis's) CPU over the same span;
4. check that every job ran exactly once.

Run from the repository root, after ``bench/setup.sh``::

    bench/.venv/bin/python bench/throughput.py --output bench/out/throughput.md

``bench/README.md`` says how each figure is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import measure
from measure import DEFAULT_ADMIN_URL, log
from psycopg import AsyncConnection

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO_DIR: Final = BENCH_DIR.parent
# The console scripts of the virtualenv running this file (bench/.venv, as documented).
BIN_DIR: Final = Path(sys.executable).parent
LOG_DIR: Final = BENCH_DIR / "out" / "throughput"

DEFAULT_JOBS: Final = 20_000
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/11"
DEFAULT_POLL_INTERVAL: Final = 0.025
DEFAULT_PEER_CONCURRENCY: Final = 10  # bare procrastinate's and pgqueuer's capped configuration
SYSTEMS: Final = ("taskhub", "procrastinate", "pgqueuer", "celery", "chancy", "oban")

READY_TIMEOUT: Final = 60.0  # seconds for workers to start listening
IDLE_PAUSE: Final = 0.5  # seconds after the workers are seen ready, for startup work to end
STOP_GRACE: Final = 15.0  # seconds workers get to exit on SIGTERM before SIGKILL
PROGRESS_EVERY: Final = 5.0  # seconds between progress lines while draining
# Session settings of the polling connection only: its "any unfinished job?" query walks an
# index in id order and stops at the first live row (under a millisecond); the planner would
# otherwise pick a bitmap scan of every queued row (several ms, 25 times a second).
POLL_SESSION: Final = ("SET enable_bitmapscan = off", "SET enable_seqscan = off", "SET jit = off")


def drain_timeout(jobs: int) -> float:
    """Generous (a busy machine slows everything): below 20 jobs/s, fail rather than hang."""
    return 60 + jobs / 20


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Row:
    """One system, configuration and worker process count: what it took to drain the jobs.

    Totals, not rates, so that callers can combine runs; the properties give per-job
    figures. ``transactions``/``wal_syncs`` are None for Celery (no PostgreSQL), and
    ``store_cpu`` is the CPU of the system's store: PostgreSQL, or Redis for Celery.
    """

    system: str
    config: str
    processes: int
    jobs: int
    seconds: float = 0.0  # jobs visible (or first published) -> all done
    enqueue_seconds: float = 0.0
    transactions: int | None = None
    wal_syncs: int | None = None
    worker_cpu: float | None = None  # seconds, worker processes and their children
    store: str = "PostgreSQL"
    store_cpu: float | None = None  # seconds
    # Transactions in the server's other databases meanwhile: server-wide figures (fsyncs,
    # PostgreSQL CPU) include their work when this is more than a handful.
    other_transactions: int | None = None
    error: str | None = None
    # Why the row was not measured (a system whose environment is missing, or a
    # configuration that cannot drain the jobs in any sensible time): not a failure.
    skipped: str | None = None

    @property
    def jobs_per_second(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0

    def per_job(self, total: float | None, scale: float = 1.0) -> float | None:
        return None if total is None else total * scale / self.jobs

    @property
    def transactions_per_job(self) -> float | None:
        return self.per_job(self.transactions)

    @property
    def fsyncs_per_job(self) -> float | None:
        return self.per_job(self.wal_syncs)

    @property
    def worker_cpu_ms_per_job(self) -> float | None:
        return self.per_job(self.worker_cpu, 1000)

    @property
    def store_cpu_ms_per_job(self) -> float | None:
        return self.per_job(self.store_cpu, 1000)


# --------------------------------------------------------------------------- worker processes


@dataclass(frozen=True)
class Command:
    """One worker process to start: its argv, and what it adds to the environment."""

    argv: list[str]
    env: dict[str, str]


def bench_bin(name: str) -> str:
    """A console script of the bench virtualenv (installed by bench/setup.sh)."""
    path = BIN_DIR / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run bench/setup.sh, then bench/.venv/bin/python")
    return str(path)


def with_bench_path(env: dict[str, str]) -> dict[str, str]:
    """``bench/`` on PYTHONPATH, so that worker CLIs can import ``peers.*``."""
    current = os.environ.get("PYTHONPATH")
    path = f"{BENCH_DIR}{os.pathsep}{current}" if current else str(BENCH_DIR)
    return {**env, "PYTHONPATH": path}


class WorkerDied(RuntimeError):
    """A worker process exited during the measurement."""


@dataclass
class Workers:
    """Started worker processes (each the leader of its own process group)."""

    processes: list[asyncio.subprocess.Process]
    logs: list[Path]

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.processes]

    def cpu_seconds(self) -> float:
        """CPU of the worker processes and all their children (prefork, --processes)."""
        return measure.tree_cpu_seconds(self.pids)

    def check_alive(self) -> None:
        for proc, path in zip(self.processes, self.logs, strict=True):
            if proc.returncode is not None:
                tail = path.read_text(errors="replace").splitlines()[-15:]
                raise WorkerDied(
                    f"worker {proc.pid} exited with {proc.returncode}; end of {path}:\n"
                    + "\n".join(tail)
                )


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def stop_workers(processes: Sequence[asyncio.subprocess.Process]) -> None:
    """SIGTERM each worker's process group, wait for a graceful exit, then SIGKILL what is
    left of the groups (children included), so that no worker outlives the measurement."""
    for proc in processes:
        if proc.returncode is None:
            signal_group(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_GRACE):
            await asyncio.gather(*(proc.wait() for proc in processes))
    except TimeoutError:
        log(f"  workers did not stop within {STOP_GRACE:.0f} s: killing them")
    finally:
        for proc in processes:
            signal_group(proc.pid, signal.SIGKILL)
        for proc in processes:
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()


@contextlib.asynccontextmanager
async def running(commands: Sequence[Command], label: str) -> AsyncIterator[Workers]:
    """Start the commands (output to bench/out/throughput/<label>-<i>.log); stop them all
    on the way out, whatever happens."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    workers = Workers(processes=[], logs=[])
    try:
        for i, command in enumerate(commands):
            path = LOG_DIR / f"{label}-{i}.log"
            with path.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    *command.argv,
                    cwd=REPO_DIR,
                    env={**os.environ, **command.env},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, to stop its children too
                )
            workers.processes.append(proc)
            workers.logs.append(path)
        yield workers
    finally:
        await stop_workers(workers.processes)


# --------------------------------------------------------------------------- PostgreSQL systems


class PostgresSystem(Protocol):
    """What the PostgreSQL measurement needs from a system."""

    key: str  # short name for databases and logs
    name: str
    config: str
    # pg_stat_activity.query LIKE patterns that show a worker's connection ready to work.
    ready_patterns: tuple[str, ...]

    async def install(self, url: str) -> None:
        """Create the system's schema in the (empty) database."""
        ...

    def commands(self, url: str, processes: int) -> list[Command]:
        """The worker processes to start for ``processes`` worker processes."""
        ...

    async def enqueue(self, conn: AsyncConnection[Any], jobs: int) -> None:
        """Enqueue ``jobs`` no-op jobs inside the transaction open on ``conn``."""
        ...

    def busy_query(self) -> str:
        """Count of jobs (of any task) running or due: the workers are idle at 0."""
        ...

    def unfinished_query(self) -> str:
        """The lowest unfinished measured job's id at or above %s, none after; must stay
        cheap: the poll passes the id it found last, so the index scan does not walk every
        finished job again (procrastinate keeps them in the table)."""
        ...

    def count_unfinished_query(self) -> str:
        """Count of unfinished measured jobs (for progress lines only)."""
        ...

    async def verify(self, conn: AsyncConnection[Any], jobs: int) -> None:
        """Raise unless each of the ``jobs`` jobs ran exactly once and succeeded."""
        ...


class ProcrastinateSchema:
    """Queries on procrastinate's schema, which taskhub keeps."""

    task_name = ""

    def busy_query(self) -> str:
        return (
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'"
            " OR (status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now()))"
        )

    def unfinished_query(self) -> str:
        return (
            "SELECT id FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            f" AND task_name = '{self.task_name}' AND id >= %s ORDER BY id LIMIT 1"
        )

    def count_unfinished_query(self) -> str:
        return (
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            f" AND task_name = '{self.task_name}'"
        )

    async def verify(self, conn: AsyncConnection[Any], jobs: int) -> None:
        cursor = await conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'),"
            " count(*) FILTER (WHERE attempts = 1) FROM procrastinate_jobs WHERE task_name = %s",
            (self.task_name,),
        )
        # A fetch counts an attempt: 1 once a job has run once.
        total, succeeded, once = await cursor.fetchone() or (0, 0, 0)
        if (total, succeeded, once) != (jobs, jobs, jobs):
            raise RuntimeError(
                f"{self.task_name}: {total} jobs, {succeeded} succeeded, {once} at 1 attempt; "
                f"expected {jobs} jobs, all succeeded at their first attempt"
            )
        # procrastinate's trigger writes a 'started' event on every todo -> doing.
        cursor = await conn.execute(
            "SELECT count(*), count(DISTINCT e.job_id) FROM procrastinate_events e"
            " JOIN procrastinate_jobs j ON j.id = e.job_id"
            " WHERE j.task_name = %s AND e.type = 'started'",
            (self.task_name,),
        )
        starts, started = await cursor.fetchone() or (0, 0)
        if (starts, started) != (jobs, jobs):
            raise RuntimeError(
                f"{self.task_name}: {starts} starts of {started} distinct jobs; "
                f"expected each of the {jobs} jobs started once"
            )


@functools.cache
def taskhub_has_processes_option() -> bool:
    """Whether ``taskhub worker`` forks worker processes itself (``--processes N``)."""
    result = subprocess.run(
        [bench_bin("taskhub"), "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_DIR,
        env={**os.environ, "TASKHUB_LOG_LEVEL": "WARNING"},
    )
    return "--processes" in result.stdout


def taskhub_default_concurrency() -> int:
    """taskhub's worker concurrency as its settings give it here (env included)."""
    from backend.settings import load_settings

    return load_settings().worker_concurrency


class TaskhubSystem(ProcrastinateSchema):
    """taskhub's CLI worker; jobs through ``backend.defer.batch_defer``."""

    key = "taskhub"
    name = "taskhub"
    task_name = "taskhub.ping"
    ready_patterns: tuple[str, ...] = ("LISTEN %",)

    def __init__(self, concurrency: int, use_processes_option: bool) -> None:
        self.concurrency = concurrency
        self.use_processes_option = use_processes_option
        how = "`--processes N`" if use_processes_option else "N separate `taskhub worker`"
        self.config = f"concurrency {concurrency}, {how}"

    async def install(self, url: str) -> None:
        await asyncio.to_thread(measure.migrate_taskhub, url)

    def commands(self, url: str, processes: int) -> list[Command]:
        env = {
            "DATABASE_URL": url,
            "TASKHUB_LOG_LEVEL": "WARNING",
            "TASKHUB_WORKER_CONCURRENCY": str(self.concurrency),
        }
        # bench/probe_tasks.py's app brings bench.noop, the task of enqueue_one (steady.py).
        env = with_bench_path(env)
        argv = [
            bench_bin("taskhub"),
            "worker",
            "--concurrency",
            str(self.concurrency),
            "--app",
            "probe_tasks",
        ]
        # The one line to change once `taskhub worker --processes N` is everywhere.
        if self.use_processes_option:
            return [Command([*argv, "--processes", str(processes)], env)]
        return [Command(argv, env) for _ in range(processes)]

    async def enqueue(self, conn: AsyncConnection[Any], jobs: int) -> None:
        from backend import defer
        from backend.declare.apps import builtin_apps

        task = builtin_apps().task(self.task_name)
        await defer.batch_defer(conn, task, [{"message": i} for i in range(jobs)])

    async def enqueue_one(self, conn: AsyncConnection[Any], args: dict[str, Any]) -> None:
        """One ``bench.noop`` job (``taskhub.ping``'s work, plus the probe): ``defer.defer``,
        one statement on the autocommit ``conn``."""
        import probe_tasks

        from backend import defer

        await defer.defer(conn, probe_tasks.noop, args)


class ProcrastinateSystem(ProcrastinateSchema):
    """Bare procrastinate: ``procrastinate worker`` on bench/peers/procrastinate_app.py."""

    key = "procrastinate"
    name = "procrastinate"
    task_name = "bench.noop"
    ready_patterns: tuple[str, ...] = ("LISTEN %",)

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.config = f"concurrency {concurrency}, `procrastinate worker`"

    async def install(self, url: str) -> None:
        import procrastinate
        from procrastinate.schema import SchemaManager

        connector = procrastinate.PsycopgConnector(conninfo=url)
        await connector.open_async()
        try:
            await SchemaManager(connector).apply_schema_async()
        finally:
            await connector.close_async()

    def commands(self, url: str, processes: int) -> list[Command]:
        argv = [
            bench_bin("procrastinate"),
            "--app=peers.procrastinate_app.app",
            "--log-level=warning",  # as the other systems: no log line per job
            "worker",
            "--concurrency",
            str(self.concurrency),
        ]
        return [Command(argv, with_bench_path({"DATABASE_URL": url})) for _ in range(processes)]

    async def enqueue(self, conn: AsyncConnection[Any], jobs: int) -> None:
        from peers.procrastinate_app import noop
        from procrastinate.types import JSONDict

        many: list[JSONDict] = [{"message": i} for i in range(jobs)]
        await noop.configure(connection=conn).batch_defer_async(*many)

    async def enqueue_one(self, conn: AsyncConnection[Any], args: dict[str, Any]) -> None:
        """``defer_async``, on the autocommit ``conn`` (its own transaction)."""
        from peers.procrastinate_app import noop

        await noop.configure(connection=conn).defer_async(**args)


class PgqueuerSystem:
    """pgqueuer: ``pgq run`` on bench/peers/pgqueuer_app.py; schema by ``pgq install``."""

    key = "pgqueuer"
    name = "pgqueuer"
    # Its one connection LISTENs, then dequeues; both show it ready.
    ready_patterns: tuple[str, ...] = ("LISTEN %", "%queued_work%", "WITH params AS%")

    def __init__(self, max_concurrent_tasks: int | None) -> None:
        self.options: list[str] = []
        # enqueue_one's Queries per connection, made once as a user's code would.
        self._queries: dict[int, tuple[AsyncConnection[Any], Any]] = {}
        if max_concurrent_tasks is None:
            self.key = "pgqueuer_defaults"
            self.config = "defaults (`pgq run`: batch 10, no cap)"
        else:
            # pgq requires --max-concurrent-tasks >= 2 x --batch-size.
            batch = max(max_concurrent_tasks // 2, 1)
            self.options = [
                "--max-concurrent-tasks",
                str(max_concurrent_tasks),
                "--batch-size",
                str(batch),
            ]
            self.key = f"pgqueuer_c{max_concurrent_tasks}"
            self.config = f"concurrency {max_concurrent_tasks} (`pgq run {' '.join(self.options)}`)"

    async def install(self, url: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            bench_bin("pgq"),
            "--pg-dsn",
            url,
            "install",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"pgq install failed: {output.decode(errors='replace')}")

    def commands(self, url: str, processes: int) -> list[Command]:
        argv = [bench_bin("pgq"), "run", "peers.pgqueuer_app:main", *self.options]
        return [Command(argv, with_bench_path({"DATABASE_URL": url})) for _ in range(processes)]

    async def enqueue(self, conn: AsyncConnection[Any], jobs: int) -> None:
        from peers.pgqueuer_app import ENTRYPOINT
        from pgqueuer.db import PsycopgDriver
        from pgqueuer.queries import Queries

        queries = Queries(PsycopgDriver(conn))
        await queries.enqueue(
            [ENTRYPOINT] * jobs,
            [json.dumps({"message": i}).encode() for i in range(jobs)],
            [0] * jobs,
        )

    async def enqueue_one(self, conn: AsyncConnection[Any], args: dict[str, Any]) -> None:
        """``Queries.enqueue`` of one job on the autocommit ``conn`` (its own transaction)."""
        from peers.pgqueuer_app import ENTRYPOINT
        from pgqueuer.db import PsycopgDriver
        from pgqueuer.queries import Queries

        queries = self._queries.get(id(conn))
        if queries is None or queries[0] is not conn:
            queries = self._queries[id(conn)] = (conn, Queries(PsycopgDriver(conn)))
        await queries[1].enqueue(ENTRYPOINT, json.dumps(args).encode())

    def busy_query(self) -> str:
        return "SELECT count(*) FROM pgqueuer"

    def unfinished_query(self) -> str:
        # Finished jobs leave the queue table (pgqueuer moves them to pgqueuer_log).
        return (
            "SELECT id FROM pgqueuer WHERE entrypoint = 'bench_noop' AND id >= %s"
            " ORDER BY id LIMIT 1"
        )

    def count_unfinished_query(self) -> str:
        return "SELECT count(*) FROM pgqueuer WHERE entrypoint = 'bench_noop'"

    async def verify(self, conn: AsyncConnection[Any], jobs: int) -> None:
        cursor = await conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'picked'),"
            " count(*) FILTER (WHERE status = 'successful'),"
            " count(DISTINCT job_id) FILTER (WHERE status = 'successful'),"
            " count(*) FILTER (WHERE status NOT IN ('queued', 'picked', 'successful'))"
            " FROM pgqueuer_log WHERE entrypoint = 'bench_noop'"
        )
        picked, successes, succeeded, other = await cursor.fetchone() or (0, 0, 0, 0)
        left = await measure.fetch_value(conn, self.count_unfinished_query())
        if (picked, successes, succeeded, other, left) != (jobs, jobs, jobs, 0, 0):
            raise RuntimeError(
                f"pgqueuer: {picked} picks, {successes} successes of {succeeded} distinct jobs, "
                f"{other} other outcomes, {left} left in the queue; expected each of the "
                f"{jobs} jobs picked once and successful"
            )


CHANCY_DEFAULTS_CONFIG: Final = (
    'defaults (`chancy worker start`, bare `Queue("default")`: concurrency = CPU count,'
    " polled every 5 s and on push)"
)
CHANCY_POLL_SECONDS: Final = 5  # Queue.polling_interval's default


def chancy_defaults_skip(jobs: int, processes: int) -> str | None:
    """Why chancy's bare defaults are not measured with ``jobs`` jobs (None: they are).

    Without eager polling a worker fetches at most its concurrency (CPU count) jobs per
    5 s poll, so the drain would outlast ``drain_timeout`` (it did: 0.44 jobs/s with 20 jobs,
    1 process, 2 CPUs)."""
    cpus = os.cpu_count() or 1
    rate = cpus * processes / CHANCY_POLL_SECONDS
    if jobs / rate <= drain_timeout(jobs) / 2:
        return None
    return (
        f"chancy's defaults drain at most {rate:.1f} jobs/s here ({cpus} jobs per worker per"
        f" {CHANCY_POLL_SECONDS} s poll): {jobs:,} jobs would take about"
        f" {jobs / rate / 3600:.1f} h (bench/README.md)"
    )


class ChancySystem:
    """chancy: ``chancy worker start`` (its CLI, default options) on bench/peers/chancy_app.py.

    Schema by ``Chancy.migrate()`` (core tables and the default plugins'), then the queue
    ``default`` declared before the workers start: ``Queue("default", concurrency=N,
    eager_polling=True)``, chancy's defaults otherwise (process-pool executor, polling every
    5 s and on each push's NOTIFY). ``ChancySystem(None)`` is its bare defaults: no queue
    declared, so ``chancy worker start`` declares ``Queue("default")`` (concurrency = CPU count,
    no eager polling): a worker then fetches CPU-count jobs per 5 s poll (0.44 jobs/s measured
    here with 2 CPUs, 20 jobs), which no drain of thousands of jobs survives, so
    ``run_throughput`` reports that configuration as not run unless the jobs are that few
    (``chancy_defaults_skip``). Jobs through ``Chancy.push_many_ex``, chancy's
    API for many jobs on the caller's cursor and transaction (one INSERT per job, then one
    ``queue.pushed`` NOTIFY). Finished jobs stay in ``chancy_jobs`` (state ``succeeded``); a
    worker writes its jobs' outcomes in batches, once a second (chancy's default).
    """

    key = "chancy"
    name = "chancy"
    # Each worker has one connection of its own for LISTEN "chancy_events".
    ready_patterns: tuple[str, ...] = ("LISTEN %",)

    def __init__(self, concurrency: int | None) -> None:
        self.concurrency = concurrency
        if concurrency is None:
            self.key = "chancy_defaults"
            self.config = CHANCY_DEFAULTS_CONFIG
        else:
            self.key = f"chancy_c{concurrency}"
            self.config = (
                f"concurrency {concurrency}, eager polling (`chancy worker start`; queue `default`"
                " otherwise chancy's defaults: process pool, polled every 5 s and on push)"
            )
        # enqueue's Chancy instance is never opened: push_many_ex only needs the cursor.
        self._app: Any = None

    def _chancy(self) -> Any:
        if self._app is None:
            from chancy import Chancy

            self._app = Chancy("postgresql://unused", no_default_plugins=True)
        return self._app

    async def install(self, url: str) -> None:
        from chancy import Chancy, Queue

        async with Chancy(url) as app:
            await app.migrate()
            if self.concurrency is not None:  # else `chancy worker start` declares it
                await app.declare(
                    Queue(name="default", concurrency=self.concurrency, eager_polling=True)
                )

    def commands(self, url: str, processes: int) -> list[Command]:
        argv = [bench_bin("chancy"), "--app", "peers.chancy_app.app", "worker", "start"]
        return [Command(argv, with_bench_path({"DATABASE_URL": url})) for _ in range(processes)]

    async def _push(self, conn: AsyncConnection[Any], many: list[dict[str, Any]]) -> None:
        from peers.chancy_app import job
        from psycopg.rows import dict_row

        async with conn.cursor(row_factory=dict_row) as cursor:
            await self._chancy().push_many_ex(cursor, [job(kwargs) for kwargs in many])

    async def enqueue(self, conn: AsyncConnection[Any], jobs: int) -> None:
        await self._push(conn, [{"message": i} for i in range(jobs)])

    async def enqueue_one(self, conn: AsyncConnection[Any], args: dict[str, Any]) -> None:
        """``push_many_ex`` of one job on the autocommit ``conn``, in a transaction of its own
        (what ``Chancy.push`` does on a pool connection: the INSERT, then the NOTIFY)."""
        async with conn.transaction():
            await self._push(conn, [args])

    def busy_query(self) -> str:
        return (
            "SELECT count(*) FROM chancy_jobs WHERE state = 'running'"
            " OR (state IN ('pending', 'retrying') AND scheduled_at <= now())"
        )

    def unfinished_query(self) -> str:
        # Ids are UUIDs (time-ordered): the first poll passes 0, for the lowest UUID.
        return (
            "SELECT id FROM chancy_jobs WHERE state IN ('pending', 'running', 'retrying')"
            " AND func = 'peers.chancy_app.noop'"
            " AND id >= coalesce(nullif(%s::text, '0'), '00000000-0000-0000-0000-000000000000')"
            "::uuid ORDER BY id LIMIT 1"
        )

    def count_unfinished_query(self) -> str:
        return (
            "SELECT count(*) FROM chancy_jobs WHERE state IN ('pending', 'running', 'retrying')"
            " AND func = 'peers.chancy_app.noop'"
        )

    async def verify(self, conn: AsyncConnection[Any], jobs: int) -> None:
        cursor = await conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded'),"
            " count(*) FILTER (WHERE attempts = 1),"
            " count(*) FILTER (WHERE jsonb_array_length(errors::jsonb) > 0)"
            " FROM chancy_jobs WHERE func = 'peers.chancy_app.noop'"
        )
        # attempts goes 0 -> 1 when a run completes; a second run would make it 2.
        total, succeeded, once, errors = await cursor.fetchone() or (0, 0, 0, 0)
        if (total, succeeded, once, errors) != (jobs, jobs, jobs, 0):
            raise RuntimeError(
                f"chancy: {total} jobs, {succeeded} succeeded, {once} at 1 attempt, {errors}"
                f" with errors; expected {jobs} jobs, all succeeded at their first attempt"
            )


VENV312: Final = BENCH_DIR / ".venv312"  # Python 3.12 for oban (bench/setup.sh makes it)


class NotRun(RuntimeError):
    """A system that cannot run here (its environment is missing): its rows say why, and the
    run does not count them as failures."""


def oban_version() -> str | None:
    """The oban installed in bench/.venv312, from its dist-info (None without it)."""
    found = sorted(VENV312.glob("lib/python3.*/site-packages/oban-*.dist-info"))
    return found[0].name.removeprefix("oban-").removesuffix(".dist-info") if found else None


class ObanSystem:
    """oban (the Python port of Oban, free edition): ``oban start`` from bench/.venv312.

    oban needs Python >= 3.12 and this runner is 3.11, so the schema comes from ``oban install``
    run in bench/.venv312, and the runner inserts jobs itself with oban's own statement, as
    oban's ``Oban.enqueue_many(jobs, conn=conn)`` (and ``enqueue``, its one-job case) runs it
    (oban 0.7.0, ``oban/_query.py``: ``_insert_jobs``): ``queries/insert_job.sql``, read from the
    oban installed in bench/.venv312 and prefixed with ``public.`` as ``Query._load_file`` does,
    executed once per job on the caller's connection and its row fetched, with the parameters
    of ``Noop.new(args)`` (``Job`` defaults: queue ``default``, ``max_attempts`` 20, priority 0,
    state ``available``, no tags, ``meta`` {}, no timestamps; ``args`` and ``meta`` as
    ``Jsonb``, as ``Query._cast_type`` does). Each insert of an available job also sends
    ``pg_notify('oban_insert', ...)``, which wakes the producers. Without bench/.venv312
    (no Python 3.12 when bench/setup.sh ran), every row says not run.
    """

    name = "oban"
    # Each worker's notifier has one connection of its own, which LISTENs on oban's channels.
    ready_patterns: tuple[str, ...] = ("LISTEN %",)
    worker = "peers.oban_app.Noop"

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.key = f"oban_c{concurrency}"
        self.config = (
            f"concurrency {concurrency} (`oban start --queues default:{concurrency}"
            " --cron-modules peers.oban_app`, Python 3.12)"
        )

    @staticmethod
    def _bin() -> str:
        path = VENV312 / "bin" / "oban"
        if not path.exists():
            raise NotRun(f"{path} is missing (oban needs Python >= 3.12; bench/setup.sh)")
        return str(path)

    @functools.cached_property
    def insert_sql(self) -> bytes:
        """oban's insert_job.sql with its tables in schema ``public`` (``Query._load_file``)."""
        import re

        self._bin()
        found = sorted(VENV312.glob("lib/python3.*/site-packages/oban/queries/insert_job.sql"))
        if not found:
            raise NotRun(f"no oban insert_job.sql in {VENV312} (run bench/setup.sh)")
        text = found[0].read_text(encoding="utf-8")
        names = (
            r"oban_insert|oban_job_state|oban_jobs|oban_leaders|oban_producers|oban_state_to_bit"
        )
        return re.sub(rf"\b({names})\b", r"public.\1", text).encode()

    async def install(self, url: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            self._bin(),
            "install",
            "--dsn",
            url,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"oban install failed: {output.decode(errors='replace')}")

    def commands(self, url: str, processes: int) -> list[Command]:
        # --cron-modules names the app's module: without it, `oban start` greps the working
        # directory (the repository) for cron workers and imports what it finds.
        argv = [
            self._bin(),
            "start",
            "--dsn",
            url,
            "--queues",
            f"default:{self.concurrency}",
            "--cron-modules",
            "peers.oban_app",
            "--log-level",
            "WARNING",
        ]
        return [Command(argv, with_bench_path({})) for _ in range(processes)]

    async def _insert(self, conn: AsyncConnection[Any], args: dict[str, Any]) -> None:
        from psycopg.types.json import Jsonb

        params: dict[str, Any] = {
            "args": Jsonb(args),
            "inserted_at": None,
            "max_attempts": 20,
            "meta": Jsonb({}),
            "priority": 0,
            "queue": "default",
            "scheduled_at": None,
            "state": "available",
            "tags": [],
            "worker": self.worker,
        }
        cursor = await conn.execute(self.insert_sql, params)
        await cursor.fetchone()

    async def enqueue(self, conn: AsyncConnection[Any], jobs: int) -> None:
        for i in range(jobs):
            await self._insert(conn, {"message": i})

    async def enqueue_one(self, conn: AsyncConnection[Any], args: dict[str, Any]) -> None:
        """The one statement of ``enqueue(job, conn=conn)`` on the autocommit ``conn``."""
        await self._insert(conn, args)

    def busy_query(self) -> str:
        return (
            "SELECT count(*) FROM oban_jobs WHERE state = 'executing'"
            " OR (state = 'available' AND scheduled_at <= timezone('UTC', now()))"
        )

    def unfinished_query(self) -> str:
        return (
            "SELECT id FROM oban_jobs"
            " WHERE state IN ('available', 'scheduled', 'executing', 'retryable')"
            f" AND worker = '{self.worker}' AND id >= %s ORDER BY id LIMIT 1"
        )

    def count_unfinished_query(self) -> str:
        return (
            "SELECT count(*) FROM oban_jobs"
            " WHERE state IN ('available', 'scheduled', 'executing', 'retryable')"
            f" AND worker = '{self.worker}'"
        )

    async def verify(self, conn: AsyncConnection[Any], jobs: int) -> None:
        cursor = await conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'completed'),"
            " count(*) FILTER (WHERE attempt = 1),"
            " count(*) FILTER (WHERE jsonb_array_length(errors) > 0)"
            " FROM oban_jobs WHERE worker = %s",
            (self.worker,),
        )
        # A fetch increments attempt: 1 once a job has been fetched once.
        total, completed, once, errors = await cursor.fetchone() or (0, 0, 0, 0)
        if (total, completed, once, errors) != (jobs, jobs, jobs, 0):
            raise RuntimeError(
                f"oban: {total} jobs, {completed} completed, {once} at attempt 1, {errors}"
                f" with errors; expected {jobs} jobs, all completed at their first attempt"
            )


# --------------------------------------------------------------------------- measurement


async def wait_ready(
    observer: AsyncConnection[Any],
    workers: Workers,
    system: PostgresSystem,
    expected: int,
    exclude: list[int],
) -> None:
    """Until ``expected`` worker connections have been seen listening (or dequeuing), then
    until no job is running or due, so that the workers start the run idle."""
    seen: set[int] = set()
    deadline = time.monotonic() + READY_TIMEOUT
    while len(seen) < expected:
        workers.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"after {READY_TIMEOUT:.0f} s, {len(seen)} of {expected} workers were ready"
            )
        cursor = await observer.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> ALL(%s) AND query LIKE ANY(%s)",
            (exclude, list(system.ready_patterns)),
        )
        seen.update(row[0] for row in await cursor.fetchall())
        await asyncio.sleep(0.02)
    while await measure.fetch_value(observer, system.busy_query()):
        workers.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"after {READY_TIMEOUT:.0f} s, the workers were still busy")
        await asyncio.sleep(0.05)
    await asyncio.sleep(IDLE_PAUSE)


async def drain(
    observer: AsyncConnection[Any],
    system: PostgresSystem,
    workers: Workers,
    jobs: int,
    poll_interval: float,
    started: float,
) -> int:
    """Poll until no measured job is unfinished; return the statements (transactions) the
    polling ran, to subtract them from the database's count."""
    statements = 0
    deadline = started + drain_timeout(jobs)
    next_progress = started + PROGRESS_EVERY
    unfinished = system.unfinished_query()
    floor = 0
    while True:
        cursor = await observer.execute(unfinished.encode(), (floor,))
        statements += 1
        row = await cursor.fetchone()
        if row is None:
            return statements
        floor = row[0]
        now = time.perf_counter()
        workers.check_alive()
        if now > deadline:
            raise TimeoutError(f"jobs still unfinished after {now - started:.0f} s")
        if now >= next_progress:
            left = await measure.fetch_value(observer, system.count_unfinished_query())
            statements += 1
            log(f"  {jobs - int(left):,} of {jobs:,} done after {now - started:.0f} s")
            next_progress = now + PROGRESS_EVERY
        await asyncio.sleep(poll_interval)


async def measure_postgres(
    system: PostgresSystem, admin_url: str, jobs: int, processes: int, poll_interval: float
) -> Row:
    """One timed drain of ``jobs`` jobs by ``processes`` worker processes, fresh database."""
    label = f"{system.key}_{processes}p"
    dbname = measure.bench_dbname(label)
    async with measure.fresh_database(admin_url, label) as url:
        log(f"[{system.name}, {system.config}, {processes} process(es)] database {dbname}")
        await system.install(url)
        async with (
            await AsyncConnection.connect(admin_url, autocommit=True) as admin,
            await AsyncConnection.connect(url, autocommit=True) as observer,
            await AsyncConnection.connect(url, autocommit=True) as producer,
        ):
            own = [await measure.backend_pid(conn) for conn in (admin, observer, producer)]
            postmaster = await measure.postmaster_pid(admin)
            for statement in POLL_SESSION:
                await observer.execute(statement.encode())
            async with running(system.commands(url, processes), label) as workers:
                await wait_ready(observer, workers, system, processes, own)
                await measure.settle(url)
                await measure.wait_for_stats()
                workers.check_alive()

                before = await measure.server_stats(admin, dbname, postmaster)
                own_before = measure.own_cpu_seconds(own)
                workers_before = workers.cpu_seconds()
                enqueue_started = time.perf_counter()
                async with producer.transaction():
                    await system.enqueue(producer, jobs)
                started = time.perf_counter()  # all jobs visible from here on
                took = started - enqueue_started
                log(f"  enqueued {jobs:,} jobs in one transaction ({took:.2f} s)")
                polls = await drain(observer, system, workers, jobs, poll_interval, started)
                elapsed = time.perf_counter() - started
                workers_cpu = workers.cpu_seconds() - workers_before
                postgres_after = measure.postgres_cpu_seconds(postmaster)
                own_cpu = measure.own_cpu_seconds(own) - own_before
                await measure.wait_for_stats()
                after = await measure.server_stats(admin, dbname, None)
                await system.verify(observer, jobs)

    postgres_cpu = (
        None
        if postgres_after is None or before.postgres_cpu is None
        else postgres_after - before.postgres_cpu - own_cpu
    )
    row = Row(
        system=system.name,
        config=system.config,
        processes=processes,
        jobs=jobs,
        seconds=elapsed,
        enqueue_seconds=started - enqueue_started,
        # Less the enqueue's one transaction and the polling's statements.
        transactions=after.transactions - before.transactions - 1 - polls,
        wal_syncs=after.wal_syncs - before.wal_syncs,
        worker_cpu=workers_cpu,
        store_cpu=postgres_cpu,
        other_transactions=after.other_transactions - before.other_transactions,
    )
    if warning := elsewhere(row):
        log(f"  warning: {warning.removeprefix('; ').replace('**', '')}")
    log(f"  {row.jobs_per_second:,.0f} jobs/s ({elapsed:.2f} s); all {jobs:,} ran exactly once")
    return row


# --------------------------------------------------------------------------- Celery


def redis_cpu_seconds(client: Any) -> float:
    """CPU seconds the Redis server has used (user + system, all its threads)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def celery_config(processes: int) -> str:
    return f"prefork, `--concurrency {processes}`, Redis broker"


def celery_commands(redis_url: str, processes: int, nodename: str) -> list[Command]:
    argv = [
        bench_bin("celery"),
        "-A",
        "peers.celery_app",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        str(processes),
        "--loglevel",
        "WARNING",
        "--hostname",
        f"{nodename}@%h",
    ]
    return [Command(argv, with_bench_path({"BENCH_REDIS_URL": redis_url}))]


async def wait_celery_ready(app: Any, workers: Workers, nodename: str) -> None:
    """Until the worker answers a ping (its consumer runs, after the pool's children)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        workers.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Celery worker did not answer within {READY_TIMEOUT:.0f} s")
        replies = await asyncio.to_thread(app.control.ping, timeout=0.5)
        if any(name.startswith(f"{nodename}@") for reply in replies for name in reply):
            break
    await asyncio.sleep(IDLE_PAUSE)


def publish(task: Any, jobs: int) -> None:
    """Celery's usual call, one message per job, as fast as the client goes."""
    for i in range(jobs):
        task.delay({"message": i})


async def measure_celery(redis_url: str, jobs: int, processes: int, poll_interval: float) -> Row:
    """One timed drain by a Celery worker with ``processes`` prefork children, on a flushed
    Redis database (flushed again at the end)."""
    os.environ["BENCH_REDIS_URL"] = redis_url  # read when peers.celery_app is first imported
    import redis
    from peers import celery_app

    celery_app.app.conf.broker_url = redis_url
    config = celery_config(processes)
    log(f"[celery, {config}] {redis_url}")
    client = redis.Redis.from_url(redis_url)
    keys = client.dbsize()
    if keys:
        log(f"  flushing {keys} keys left in {redis_url}")
    client.flushdb()
    nodename = f"bench-{os.getpid()}-{processes}"
    try:
        commands = celery_commands(redis_url, processes, nodename)
        async with running(commands, f"celery_{processes}p") as workers:
            await wait_celery_ready(celery_app.app, workers, nodename)
            workers_before = workers.cpu_seconds()
            redis_before = redis_cpu_seconds(client)
            started = time.perf_counter()
            await asyncio.to_thread(publish, celery_app.noop, jobs)
            published = time.perf_counter()
            log(f"  published {jobs:,} jobs ({published - started:.2f} s)")
            deadline = started + drain_timeout(jobs)
            next_progress = started + PROGRESS_EVERY
            while (done := int(client.get(celery_app.DONE_KEY) or 0)) < jobs:
                now = time.perf_counter()
                workers.check_alive()
                if now > deadline:
                    raise TimeoutError(f"{done} of {jobs} done after {now - started:.0f} s")
                if now >= next_progress:
                    log(f"  {done:,} of {jobs:,} done after {now - started:.0f} s")
                    next_progress = now + PROGRESS_EVERY
                await asyncio.sleep(poll_interval)
            elapsed = time.perf_counter() - started
            workers_cpu = workers.cpu_seconds() - workers_before
            redis_cpu = redis_cpu_seconds(client) - redis_before
            await asyncio.sleep(IDLE_PAUSE)  # a duplicate delivery would show up here
            runs = int(client.get(celery_app.DONE_KEY) or 0)
            distinct = int(client.bitcount(celery_app.SEEN_KEY))
            queued = int(client.llen("celery"))
            if (runs, distinct, queued) != (jobs, jobs, 0):
                raise RuntimeError(
                    f"celery: {runs} runs of {distinct} distinct jobs, {queued} still queued; "
                    f"expected each of the {jobs} jobs run once"
                )
    finally:
        client.flushdb()
        client.close()
    row = Row(
        system="celery",
        config=config,
        processes=processes,
        jobs=jobs,
        seconds=elapsed,
        enqueue_seconds=published - started,
        worker_cpu=workers_cpu,
        store="Redis",
        store_cpu=redis_cpu,
    )
    log(f"  {row.jobs_per_second:,.0f} jobs/s ({elapsed:.2f} s); all {jobs:,} ran exactly once")
    return row


# --------------------------------------------------------------------------- the run


def postgres_systems(name: str, concurrency: int, peer_concurrency: int) -> list[PostgresSystem]:
    """The configurations measured for one system name."""
    if name == "taskhub":
        return [TaskhubSystem(concurrency, taskhub_has_processes_option())]
    if name == "procrastinate":
        return [ProcrastinateSystem(peer_concurrency)]
    if name == "pgqueuer":
        return [PgqueuerSystem(peer_concurrency), PgqueuerSystem(None)]
    if name == "chancy":
        return [ChancySystem(peer_concurrency)]
    if name == "oban":
        return [ObanSystem(peer_concurrency)]
    raise ValueError(f"unknown system {name!r}")


async def run_throughput(
    admin_url: str,
    jobs: int,
    *,
    systems: Sequence[str] = SYSTEMS,
    processes: Sequence[int] = (1, 2),
    concurrency: int | None = None,
    peer_concurrency: int = DEFAULT_PEER_CONCURRENCY,
    redis_url: str = DEFAULT_REDIS_URL,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
) -> list[Row]:
    """Measure every system in ``systems`` with each process count, one after the other.

    ``concurrency`` is taskhub's jobs at once per worker process (default: taskhub's own
    default, read from its settings); ``peer_concurrency`` is bare procrastinate's, pgqueuer's
    capped configuration's, chancy's and oban's. A measurement that fails gives a row with
    ``error`` set, and the others still run; one that cannot run here (oban without
    bench/.venv312, chancy's bare defaults) a row with ``skipped`` set.
    """
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise ValueError(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEMS)}")
    if concurrency is None:
        concurrency = taskhub_default_concurrency()
    log(f"jobs at once per worker process: taskhub {concurrency}, peers {peer_concurrency}")
    rows: list[Row] = []
    for name in systems:
        if name == "celery":
            for count in processes:
                rows.append(
                    await guarded(
                        Row("celery", celery_config(count), count, jobs),
                        measure_celery(redis_url, jobs, count, poll_interval),
                    )
                )
            continue
        configurations = await asyncio.to_thread(
            postgres_systems, name, concurrency, peer_concurrency
        )
        if name == "chancy":
            configurations.append(ChancySystem(None))
        for system in configurations:
            if isinstance(system, ChancySystem) and system.concurrency is None:
                for count in processes:
                    why = chancy_defaults_skip(jobs, count)
                    row = Row(system.name, system.config, count, jobs, skipped=why)
                    if why is None:
                        row = await guarded(
                            row, measure_postgres(system, admin_url, jobs, count, poll_interval)
                        )
                    else:
                        log(f"[{system.name}, {system.config}, {count} process(es)] not run: {why}")
                    rows.append(row)
                continue
            for count in processes:
                rows.append(
                    await guarded(
                        Row(system.name, system.config, count, jobs),
                        measure_postgres(system, admin_url, jobs, count, poll_interval),
                    )
                )
    return rows


async def guarded(placeholder: Row, measurement: Awaitable[Row]) -> Row:
    """Run one measurement; on failure, log it and return ``placeholder`` with the error
    (with ``skipped`` instead when the system cannot run here: ``NotRun``)."""
    try:
        row = await measurement
    except NotRun as exc:
        log(f"  not run: {exc}")
        return dataclasses.replace(placeholder, skipped=str(exc))
    except Exception as exc:
        log(f"  FAILED: {type(exc).__name__}: {exc}")
        return dataclasses.replace(placeholder, error=f"{type(exc).__name__}: {exc}")
    return row


# --------------------------------------------------------------------------- report


def number(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def render_table(rows: Sequence[Row]) -> str:
    """The markdown table of the figures, one row per measurement."""
    lines = [
        "| system | config | processes | jobs/s | txn/job | fsync/job "
        "| worker CPU ms/job | PostgreSQL CPU ms/job |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.skipped is not None:
            lines.append(
                f"| {row.system} | {row.config} | {row.processes} | not run: {row.skipped} |||||"
            )
            continue
        if row.error is not None:
            failed = f"failed: {row.error.splitlines()[0]}"
            lines.append(f"| {row.system} | {row.config} | {row.processes} | {failed} |||||")
            continue
        store = number(row.store_cpu_ms_per_job, ".3f")
        if row.store != "PostgreSQL" and row.store_cpu is not None:
            store = f"{store} ({row.store})"
        lines.append(
            f"| {row.system} | {row.config} | {row.processes} "
            f"| {row.jobs_per_second:,.0f} "
            f"| {number(row.transactions_per_job, '.3f')} "
            f"| {number(row.fsyncs_per_job, '.3f')} "
            f"| {number(row.worker_cpu_ms_per_job, '.3f')} "
            f"| {store} |"
        )
    return "\n".join(lines)


HOW_MEASURED = """\
Each row drains the jobs on a fresh database `taskhub_bench_<pid>_<system>_<n>p` (Celery:
a flushed Redis database), with the workers started by the system's own CLI and seen ready
and idle; then ANALYZE, CHECKPOINT and a {wait:g} s pause so that the counters are
published. The PostgreSQL systems get all jobs in one transaction (one batch enqueue
statement); the clock starts when it has committed. Celery's jobs are published one
`delay()` at a time and the clock starts at the first. Completion is polled every
{poll:g} ms. **txn/job**: the database's transactions (pg_stat_database) less the enqueue's
one and the polling's; **fsync/job**: pg_stat_wal.wal_sync, server-wide (the enqueue's
commit included); **worker CPU**: user + system time of the worker processes and their
children from /proc; **PostgreSQL CPU**: every server process's time (the postmaster's
reaped children included), less the bench's own connections (enqueue, polling, counters);
for Celery, Redis's CPU (publishes and the task's counter included). See bench/README.md."""


BUSY_ELSEWHERE: Final = 50  # transactions in other databases during a row worth a warning


def elsewhere(row: Row) -> str:
    """A warning when other databases were busy during the row (server-wide figures)."""
    if row.other_transactions is None or row.other_transactions <= BUSY_ELSEWHERE:
        return ""
    return (
        f"; **{row.other_transactions:,} transactions in other databases meanwhile**: "
        "fsyncs and PostgreSQL CPU include their work"
    )


def render_report(
    rows: Sequence[Row],
    environment: dict[str, str],
    quiet: measure.QuietReport,
    elapsed: float,
    poll_interval: float,
) -> str:
    """The whole markdown report: environment, table, notes, method."""
    notes = [
        f"- {row.system} ({row.config}, {row.processes}): enqueue took "
        f"{row.enqueue_seconds:.2f} s; drain {row.seconds:.2f} s{elsewhere(row)}"
        for row in rows
        if row.error is None and row.skipped is None
    ]
    how = HOW_MEASURED.format(wait=measure.STATS_FLUSH_WAIT, poll=poll_interval * 1000)
    return f"""# Throughput: taskhub and its peers, no-op jobs

{measure.render_environment(environment)}
- machine before the run: {quiet.describe()}; the run took {elapsed:.0f} s

{render_table(rows)}

Timings (enqueue is not in the rate of the PostgreSQL systems; Celery's publishing is):

{chr(10).join(notes)}

## How measured

{how}
"""


# --------------------------------------------------------------------------- CLI


@dataclass(frozen=True)
class Options:
    admin_url: str
    jobs: int
    systems: list[str]
    processes: list[int]
    concurrency: int | None
    peer_concurrency: int
    redis_url: str
    poll_interval: float
    output: Path | None


def csv_of(kind: type[Any]) -> Any:
    def parse(value: str) -> list[Any]:
        return [kind(part.strip()) for part in value.split(",") if part.strip()]

    return parse


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        default=DEFAULT_ADMIN_URL,
        help="admin connection used to CREATE/DROP the bench databases (default: %(default)s)",
    )
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="default: %(default)s")
    parser.add_argument(
        "--systems",
        type=csv_of(str),
        default=list(SYSTEMS),
        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)",
    )
    parser.add_argument(
        "--processes",
        type=csv_of(int),
        default=[1, 2],
        help="worker process counts, comma-separated (default: 1,2)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="taskhub's jobs at once per worker process (default: taskhub's default)",
    )
    parser.add_argument(
        "--peer-concurrency",
        type=int,
        default=DEFAULT_PEER_CONCURRENCY,
        help="bare procrastinate's, capped pgqueuer's, chancy's and oban's jobs at once per "
        "worker process "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help="Celery's broker; this Redis database is FLUSHED (default: %(default)s)",
    )
    parser.add_argument(
        "--poll-ms", type=float, default=DEFAULT_POLL_INTERVAL * 1000, help="default: %(default)s"
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the report here")
    ns = parser.parse_args(argv)
    if ns.jobs < 1 or not ns.processes or min(ns.processes) < 1:
        parser.error("--jobs and every --processes value must be >= 1")
    if (ns.concurrency is not None and ns.concurrency < 1) or ns.peer_concurrency < 1:
        parser.error("--concurrency and --peer-concurrency must be >= 1")
    unknown = set(ns.systems) - set(SYSTEMS)
    if unknown or not ns.systems:
        parser.error(f"--systems: choose among {','.join(SYSTEMS)}")
    return Options(
        admin_url=ns.database_url,
        jobs=ns.jobs,
        systems=ns.systems,
        processes=ns.processes,
        concurrency=ns.concurrency,
        peer_concurrency=ns.peer_concurrency,
        redis_url=ns.redis_url,
        poll_interval=ns.poll_ms / 1000,
        output=ns.output,
    )


async def main_async(options: Options) -> tuple[str, bool]:
    quiet = await asyncio.to_thread(measure.quiet_check)
    environment = await measure.describe_environment(
        options.admin_url,
        ("taskhub", "procrastinate", "psycopg", "pgqueuer", "asyncpg", "celery", "redis", "chancy"),
    )
    if "oban" in options.systems:
        environment["packages"] += f", oban {oban_version() or 'missing'} (bench/.venv312)"
    wall = time.perf_counter()
    rows = await run_throughput(
        options.admin_url,
        options.jobs,
        systems=options.systems,
        processes=options.processes,
        concurrency=options.concurrency,
        peer_concurrency=options.peer_concurrency,
        redis_url=options.redis_url,
        poll_interval=options.poll_interval,
    )
    report = render_report(
        rows, environment, quiet, time.perf_counter() - wall, options.poll_interval
    )
    return report, all(row.error is None for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    report, ok = asyncio.run(main_async(options))
    print(report)
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(report, encoding="utf-8")
        log(f"wrote {options.output}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
