"""Idle cost: what 10 idle worker processes of taskhub and of each peer cost PostgreSQL (or Redis).

For each system ``throughput.py`` knows (taskhub, bare procrastinate, pgqueuer at concurrency 10
and with its defaults, Celery, and whatever peers ``throughput.SYSTEMS`` /
``throughput.postgres_systems()`` add), on a fresh database (Celery: the flushed Redis
database): start ``--processes`` (10) worker processes with the system's CLI as
``throughput.py`` does (taskhub: one ``taskhub worker --processes 10``, its supervisor and 10
worker processes; procrastinate and pgqueuer: 10 separate CLI processes; Celery: one
``celery worker --concurrency 10``, 10 prefork children and the main process), wait until they
are ready and then ``--settle`` (10) seconds, then for ``--seconds`` (60) with no job at all:

- queries per second reaching PostgreSQL from the workers' database: top-level
  ``pg_stat_statements`` calls (deltas) when the server preloads it, else transactions
  (``pg_stat_database`` xact_commit + xact_rollback), said in the report; per worker process;
- CPU seconds, from /proc: the worker processes (and their children), the PostgreSQL backends
  of the workers' database, and the whole PostgreSQL server (less this script's connection);
- Celery: Redis commands per second (``INFO stats``, server-wide) and Redis's CPU.

Goal for taskhub: at most 1 query per second per idle worker process; the statements behind the
figure are listed from ``pg_stat_statements``. Run from the repository root::

    bench/.venv/bin/python bench/idle.py --database-url postgresql://postgres@127.0.0.1:5499/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import throughput
from common_latency import markdown_table
from measure import (
    DEFAULT_ADMIN_URL,
    backend_pid,
    bench_dbname,
    describe_environment,
    fetch_value,
    fresh_database,
    log,
    own_cpu_seconds,
    postgres_cpu_seconds,
    postmaster_pid,
    proc_times,
    quiet_check,
    render_environment,
)
from psycopg import AsyncConnection

DEFAULT_SECONDS: Final = 60.0
DEFAULT_SETTLE: Final = 10.0
DEFAULT_PROCESSES: Final = 10
GOAL_PER_PROCESS: Final = 1.0  # taskhub: queries per second per idle worker process
TOP_STATEMENTS: Final = 12


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Statement:
    calls: int
    query: str


@dataclass(frozen=True)
class IdleRow:
    """One system's ``processes`` idle worker processes over ``seconds``."""

    system: str
    config: str
    processes: int
    how: str  # the processes started
    seconds: float = 0.0
    queries: int | None = None  # top-level pg_stat_statements calls; None without it
    transactions: int | None = None  # pg_stat_database, the workers' database
    statements: tuple[Statement, ...] = ()
    worker_cpu: float = 0.0  # seconds
    backends_cpu: float | None = None  # the workers' database's backends, seconds
    postgres_cpu: float | None = None  # the whole server less this script's connection
    other_transactions: int | None = None  # other databases meanwhile (shared server)
    redis_commands: int | None = None
    redis_cpu: float | None = None
    error: str | None = None

    def per_second(self, total: float | None) -> float | None:
        return None if total is None or self.seconds <= 0 else total / self.seconds

    @property
    def counted(self) -> int | None:
        """Queries when pg_stat_statements counted them, else transactions."""
        return self.queries if self.queries is not None else self.transactions

    @property
    def per_process_per_second(self) -> float | None:
        value = self.per_second(self.counted)
        return None if value is None else value / self.processes


@dataclass(frozen=True)
class IdleOptions:
    admin_url: str = DEFAULT_ADMIN_URL
    seconds: float = DEFAULT_SECONDS
    settle: float = DEFAULT_SETTLE
    processes: int = DEFAULT_PROCESSES
    systems: tuple[str, ...] = ()  # keys or names; empty: every system
    concurrency: int | None = None
    peer_concurrency: int = throughput.DEFAULT_PEER_CONCURRENCY
    redis_url: str = throughput.DEFAULT_REDIS_URL


@dataclass(frozen=True)
class IdleFigures:
    options: IdleOptions
    rows: list[IdleRow]
    statements_source: str  # "pg_stat_statements" or why not
    environment: dict[str, str] = field(default_factory=dict)
    quiet: str = ""
    elapsed: float = 0.0


# --------------------------------------------------------------------------- PostgreSQL


async def statements_available(admin: AsyncConnection[Any]) -> str | None:
    """None when pg_stat_statements can be read (created here if needed), else why not."""
    preload = str(await fetch_value(admin, "SHOW shared_preload_libraries") or "")
    if "pg_stat_statements" not in [part.strip() for part in preload.split(",")]:
        return (
            f"the server does not preload pg_stat_statements (shared_preload_libraries={preload!r})"
        )
    await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return None


async def statement_calls(admin: AsyncConnection[Any], dbname: str) -> dict[int, Statement]:
    """Top-level statements of ``dbname`` by queryid: calls so far, and their text."""
    cursor = await admin.execute(
        "SELECT queryid, sum(calls)::bigint, min(query) FROM pg_stat_statements"
        " WHERE toplevel AND dbid = (SELECT oid FROM pg_database WHERE datname = %s)"
        " GROUP BY queryid",
        (dbname,),
    )
    return {
        int(qid): Statement(int(calls), str(query)) for qid, calls, query in await cursor.fetchall()
    }


def statement_deltas(before: dict[int, Statement], after: dict[int, Statement]) -> list[Statement]:
    deltas = [
        Statement(stmt.calls - (before[qid].calls if qid in before else 0), stmt.query)
        for qid, stmt in after.items()
    ]
    return sorted((s for s in deltas if s.calls > 0), key=lambda s: -s.calls)


async def transactions(admin: AsyncConnection[Any], dbname: str) -> tuple[int, int]:
    """(the database's transactions, every other database's), from pg_stat_database."""
    cursor = await admin.execute(
        "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s),"
        " (SELECT coalesce(sum(xact_commit + xact_rollback), 0) FROM pg_stat_database"
        "  WHERE datname IS DISTINCT FROM %s)",
        (dbname, dbname),
    )
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        raise RuntimeError(f"no pg_stat_database row for {dbname!r}")
    return int(row[0]), int(row[1])


async def database_backends(admin: AsyncConnection[Any], dbname: str) -> list[int]:
    cursor = await admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,))
    return [int(row[0]) for row in await cursor.fetchall()]


def cpu_by_pid(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds of each live process (its own, not its children's)."""
    found = {pid: proc_times(pid) for pid in pids}
    return {pid: times.own for pid, times in found.items() if times is not None}


async def sleep_watching(workers: throughput.Workers, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        workers.check_alive()
        await asyncio.sleep(min(1.0, left))
    workers.check_alive()


def describe_commands(commands: Sequence[throughput.Command]) -> str:
    first = " ".join(part.rsplit("/", 1)[-1] for part in commands[0].argv)
    return f"{len(commands)} x `{first}`" if len(commands) > 1 else f"`{first}`"


async def measure_postgres_idle(
    system: throughput.PostgresSystem, options: IdleOptions, pgss: bool
) -> IdleRow:
    n = options.processes
    label = f"idle_{system.key}_{n}p"
    dbname = bench_dbname(label)
    async with fresh_database(options.admin_url, label) as url:
        log(f"[{system.key}] {n} idle worker processes; database {dbname}")
        await system.install(url)
        async with (
            await AsyncConnection.connect(options.admin_url, autocommit=True) as admin,
            await AsyncConnection.connect(url, autocommit=True) as observer,
        ):
            observer_pid = await backend_pid(observer)
            own = [await backend_pid(admin), observer_pid]
            postmaster = await postmaster_pid(admin)
            commands = system.commands(url, n)
            async with throughput.running(commands, label) as workers:
                await throughput.wait_ready(observer, workers, system, n, own)
                await observer.close()  # nothing of this script in the database from here on
                log(f"  ready; settling {options.settle:g} s")
                await sleep_watching(workers, options.settle)
                backends = await database_backends(admin, dbname)
                calls_before = await statement_calls(admin, dbname) if pgss else {}
                xacts_before, others_before = await transactions(admin, dbname)
                workers_before = workers.cpu_seconds()
                backends_before = cpu_by_pid(backends)
                server_before = postgres_cpu_seconds(postmaster)
                admin_before = own_cpu_seconds(own[:1])
                started = time.monotonic()
                log(f"  measuring {options.seconds:g} s")
                await sleep_watching(workers, options.seconds)
                elapsed = time.monotonic() - started
                server_after = postgres_cpu_seconds(postmaster)
                admin_cpu = own_cpu_seconds(own[:1]) - admin_before
                workers_cpu = workers.cpu_seconds() - workers_before
                backends_cpu = sum(
                    seconds - backends_before[pid]
                    for pid, seconds in cpu_by_pid(backends).items()
                    if pid in backends_before  # those alive at both ends
                )
                calls_after = await statement_calls(admin, dbname) if pgss else {}
                xacts_after, others_after = await transactions(admin, dbname)
    statements = statement_deltas(calls_before, calls_after) if pgss else []
    row = IdleRow(
        system=system.key,
        config=system.config,
        processes=n,
        how=describe_commands(commands),
        seconds=elapsed,
        queries=sum(s.calls for s in statements) if pgss else None,
        transactions=xacts_after - xacts_before,
        statements=tuple(statements),
        worker_cpu=workers_cpu,
        backends_cpu=backends_cpu,
        postgres_cpu=(
            None
            if server_after is None or server_before is None
            else server_after - server_before - admin_cpu
        ),
        other_transactions=others_after - others_before,
    )
    rate, each = row.per_second(row.counted) or 0.0, row.per_process_per_second or 0.0
    log(f"  {rate:.2f} per s, {each:.3f} per worker process per s")
    return row


# --------------------------------------------------------------------------- Celery


async def measure_celery_idle(options: IdleOptions) -> IdleRow:
    """One ``celery worker --concurrency N`` (prefork) on the flushed Redis database."""
    import os

    os.environ["BENCH_REDIS_URL"] = options.redis_url  # read when peers.celery_app is imported
    import redis
    from peers import celery_app

    n = options.processes
    celery_app.app.conf.broker_url = options.redis_url
    client = redis.Redis.from_url(options.redis_url)
    client.flushdb()
    nodename = f"idle-{os.getpid()}"
    commands = throughput.celery_commands(options.redis_url, n, nodename)
    log(f"[celery] {n} idle prefork processes; {options.redis_url}")
    try:
        async with throughput.running(commands, f"idle_celery_{n}p") as workers:
            await throughput.wait_celery_ready(celery_app.app, workers, nodename)
            log(f"  ready; settling {options.settle:g} s")
            await sleep_watching(workers, options.settle)
            commands_before = int(client.info("stats")["total_commands_processed"])
            redis_before = throughput.redis_cpu_seconds(client)
            workers_before = workers.cpu_seconds()
            started = time.monotonic()
            log(f"  measuring {options.seconds:g} s")
            await sleep_watching(workers, options.seconds)
            elapsed = time.monotonic() - started
            workers_cpu = workers.cpu_seconds() - workers_before
            redis_cpu = throughput.redis_cpu_seconds(client) - redis_before
            # Less this script's own INFO commands in between (stats, cpu, cpu; the last
            # INFO is not in its own count).
            commands_done = int(client.info("stats")["total_commands_processed"])
            commands_done -= commands_before + 3
    finally:
        client.flushdb()
        client.close()
    row = IdleRow(
        system="celery",
        config=throughput.celery_config(n),
        processes=n,
        how=describe_commands(commands) + f" ({n} prefork children and the main process)",
        seconds=elapsed,
        worker_cpu=workers_cpu,
        redis_commands=commands_done,
        redis_cpu=redis_cpu,
    )
    log(f"  {commands_done / elapsed:.1f} Redis commands per s")
    return row


# --------------------------------------------------------------------------- the run


def selected(options: IdleOptions, *names: str) -> bool:
    return not options.systems or any(name in options.systems for name in names)


async def guarded(placeholder: IdleRow, measurement: Any) -> IdleRow:
    try:
        row: IdleRow = await measurement
    except Exception as exc:
        log(f"  FAILED: {type(exc).__name__}: {exc}")
        return IdleRow(
            placeholder.system,
            placeholder.config,
            placeholder.processes,
            placeholder.how,
            error=f"{type(exc).__name__}: {exc}",
        )
    return row


async def measure(options: IdleOptions) -> IdleFigures:
    """Every selected system, one after the other."""
    quiet = await asyncio.to_thread(quiet_check)
    environment = await describe_environment(
        options.admin_url,
        ("taskhub", "procrastinate", "psycopg", "pgqueuer", "asyncpg", "celery", "redis"),
    )
    async with await AsyncConnection.connect(options.admin_url, autocommit=True) as admin:
        why_not = await statements_available(admin)
    if why_not is not None:
        log(f"pg_stat_statements: {why_not}; counting transactions instead")
    concurrency = options.concurrency
    if concurrency is None:
        concurrency = throughput.taskhub_default_concurrency()
    wall = time.perf_counter()
    rows: list[IdleRow] = []
    for name in throughput.SYSTEMS:
        if name == "celery":
            if selected(options, "celery"):
                config = throughput.celery_config(options.processes)
                rows.append(
                    await guarded(
                        IdleRow("celery", config, options.processes, "celery worker"),
                        measure_celery_idle(options),
                    )
                )
            continue
        try:
            systems = await asyncio.to_thread(
                throughput.postgres_systems, name, concurrency, options.peer_concurrency
            )
        except Exception as exc:
            log(f"[{name}] skipped: {type(exc).__name__}: {exc}")
            continue
        for system in systems:
            if selected(options, system.key, system.name):
                rows.append(
                    await guarded(
                        IdleRow(system.key, system.config, options.processes, ""),
                        measure_postgres_idle(system, options, why_not is None),
                    )
                )
    return IdleFigures(
        options=options,
        rows=rows,
        statements_source="pg_stat_statements" if why_not is None else why_not,
        environment=environment,
        quiet=quiet.describe(),
        elapsed=time.perf_counter() - wall,
    )


# --------------------------------------------------------------------------- report


def number(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def render(figures: IdleFigures) -> str:
    """The figures as a markdown section."""
    o = figures.options
    pgss = figures.statements_source == "pg_stat_statements"
    unit = "queries" if pgss else "transactions"
    rows: list[list[str]] = []
    verdicts: list[str] = []
    details: list[str] = []
    for row in figures.rows:
        if row.error is not None:
            rows.append([row.system, f"failed: {row.error.splitlines()[0]}", *[""] * 7])
            continue
        per_process = row.per_process_per_second
        if row.system == "taskhub" and per_process is not None:
            met = per_process <= GOAL_PER_PROCESS
            verdicts.append(
                f"- taskhub: {per_process:.3f} {unit}/s per idle worker process, goal at most "
                f"{GOAL_PER_PROCESS:g}: {'met' if met else '**not met**'}"
                + ("" if pgss else " (transactions: pg_stat_statements is not loaded)")
            )
        store = (
            f"{number(row.per_second(row.redis_commands), '.1f')} Redis commands/s"
            if row.redis_commands is not None
            else f"{number(row.per_second(row.counted), '.2f')}"
        )
        rows.append(
            [
                row.system,
                row.how,
                store,
                number(per_process, ".3f") if row.redis_commands is None else "n/a",
                number(row.per_second(row.transactions), ".2f"),
                f"{row.worker_cpu:.2f}",
                number(row.backends_cpu, ".2f"),
                number(row.postgres_cpu if row.redis_cpu is None else row.redis_cpu, ".2f")
                + (" (Redis)" if row.redis_cpu is not None else ""),
                number(row.other_transactions, ",d"),
            ]
        )
        if row.statements:
            lines = [
                f"| {s.calls / row.seconds:.3f} | `{' '.join(s.query.split())[:160]}` |"
                for s in row.statements[:TOP_STATEMENTS]
            ]
            more = len(row.statements) - TOP_STATEMENTS
            details += [
                "",
                f"{row.system}: {len(row.statements)} distinct statements"
                + (f" ({more} more not shown)" if more > 0 else ""),
                "",
                "| calls/s | statement |",
                "|---:|---|",
                *lines,
            ]
    table = markdown_table(
        [
            "system",
            "worker processes started",
            f"{unit}/s" if pgss else "transactions/s",
            f"{unit}/s per worker process",
            "transactions/s",
            "worker CPU s",
            "their backends' CPU s",
            "PostgreSQL CPU s (whole server)",
            "other databases' transactions",
        ],
        rows,
    )
    counted = (
        "top-level `pg_stat_statements` calls of the workers' database (deltas)"
        if pgss
        else f"**transactions** (`pg_stat_database` xact_commit + xact_rollback deltas): "
        f"{figures.statements_source}; point `--database-url` at a server that preloads it "
        "to count queries"
    )
    parts = [
        f"## Idle cost: {o.processes} idle worker processes, {o.seconds:g} s",
        "",
        render_environment(figures.environment),
        f"- machine before the run: {figures.quiet}; the run took {figures.elapsed:.0f} s",
        "",
        f"Each system's worker processes, started by its CLI on a fresh database with no job, "
        f"ready, then {o.settle:g} s to settle, then {o.seconds:g} s measured. Counted: "
        f"{counted}. CPU in seconds over the window, from /proc: the worker processes and "
        "their children; the PostgreSQL backends of the workers' database (those alive at "
        "both ends); every PostgreSQL server process less this script's connection (on a "
        "shared server, other databases' work is in it: see the last column). Celery: Redis "
        "commands (`INFO stats`, server-wide, less this script's own) and Redis's CPU.",
        "",
        table,
    ]
    if verdicts:
        parts += ["", *verdicts]
    if details:
        parts += ["", f"Statements of the measured window, by {unit}:", *details]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> tuple[IdleOptions, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        default=DEFAULT_ADMIN_URL,
        help="admin connection (default: the shared server, which does not preload "
        "pg_stat_statements: transactions are counted instead of queries there)",
    )
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--settle", type=float, default=DEFAULT_SETTLE)
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES)
    parser.add_argument(
        "--systems",
        type=throughput.csv_of(str),
        default=[],
        help="keys or names, comma-separated (default: every system)",
    )
    parser.add_argument("--concurrency", type=int, default=None, help="taskhub's, per process")
    parser.add_argument("--peer-concurrency", type=int, default=throughput.DEFAULT_PEER_CONCURRENCY)
    parser.add_argument(
        "--redis-url",
        default=throughput.DEFAULT_REDIS_URL,
        help="Celery's broker; this Redis database is FLUSHED (default: %(default)s)",
    )
    parser.add_argument("--output", default=None, help="also write the report here")
    ns = parser.parse_args(argv)
    if ns.seconds <= 0 or ns.settle < 0 or ns.processes < 1:
        parser.error("--seconds > 0, --settle >= 0, --processes >= 1")
    options = IdleOptions(
        admin_url=ns.database_url,
        seconds=ns.seconds,
        settle=ns.settle,
        processes=ns.processes,
        systems=tuple(ns.systems),
        concurrency=ns.concurrency,
        peer_concurrency=ns.peer_concurrency,
        redis_url=ns.redis_url,
    )
    return options, ns.output


def main(argv: Sequence[str] | None = None) -> int:
    options, output = parse_args(argv)
    figures = asyncio.run(measure(options))
    report = render(figures)
    print(report)
    if output is not None:
        with open(output, "w", encoding="utf-8") as out:
            out.write(report)
        log(f"wrote {output}")
    return 0 if all(row.error is None for row in figures.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
