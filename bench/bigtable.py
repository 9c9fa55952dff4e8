"""Work rate next to 10 million finished jobs, against the same in an empty database.

A year of finished jobs should not slow the queue down: every hot query should touch the
waiting jobs through partial indexes, never the finished ones. For each worker-process count
(1 and 2 by default) and each database (empty; a clone of a template holding
``--finished`` succeeded jobs with their events and results), on a database of its own:

1. pause the ``default`` queue, defer ``--jobs`` ``taskhub.ping`` jobs, ANALYZE, CHECKPOINT;
2. start ``taskhub worker`` and wait until its processes LISTEN;
3. resume the queue (which wakes the workers) and time until the last job has succeeded,
   on the database clock: (last ``succeeded`` event) - (the resume's transaction time).

The template (``taskhub_template_bigtable_<finished>_<alembic head>``) takes minutes to
build; it is kept between runs and rebuilt when the alembic head changes. Drop it with
``bigtable.py --drop-templates`` (or ``DROP DATABASE <name>``).

Run from the repository root::

    .venv/bin/python bench/bigtable.py
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common_latency import (
    DEFAULT_ADMIN_URL,
    Children,
    children,
    count_listeners,
    database_url,
    drop_database,
    fetch_value,
    fresh_database,
    load_average,
    markdown_table,
    progress,
    settle,
    subprocess_env,
    taskhub_command,
    worker_supports_processes,
)
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from backend import defer
from backend.control import queues
from backend.process import migrate
from backend.tasks.builtin import ping

TEMPLATE_PREFIX = "taskhub_template_bigtable_"
BIG_TABLES = ("procrastinate_jobs", "procrastinate_events", "taskhub.job_results")
CHUNK = 1_000_000
START_TIMEOUT = 120.0
#: Rough disk use per million finished jobs (jobs, 3 events, a result, their indexes), with
#: room for the WAL the load writes; checked before building and cloning.
GB_PER_MILLION = 0.8


@dataclass(frozen=True)
class BigtableOptions:
    admin_url: str = DEFAULT_ADMIN_URL
    finished: int = 10_000_000
    jobs: int = 20_000
    processes: tuple[int, ...] = (1, 2)
    repeats: int = 2
    rebuild: bool = False


@dataclass(frozen=True)
class Drain:
    """One timed drain."""

    database: str  # "empty" or "10M finished"
    processes: int
    seconds: float
    jobs_per_s: float
    worker_cpu_ms_per_job: float


@dataclass(frozen=True)
class BigtableFigures:
    options: BigtableOptions
    template: str
    template_size: str
    template_built_now: bool
    drains: list[Drain]
    worker_command: str
    load_before: str
    load_after: str

    def rate(self, database: str, processes: int) -> float:
        rates = [
            d.jobs_per_s for d in self.drains if d.database == database and d.processes == processes
        ]
        return statistics.median(rates) if rates else float("nan")


# --------------------------------------------------------------------------- template


def template_name(finished: int) -> str:
    return f"{TEMPLATE_PREFIX}{finished}_{migrate.head_revision()}"


async def existing_templates(admin_url: str) -> list[str]:
    async with await AsyncConnection.connect(admin_url, autocommit=True) as admin:
        cursor = await admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
            (TEMPLATE_PREFIX + "%",),
        )
        return [str(row[0]) for row in await cursor.fetchall()]


async def free_gb(admin_url: str) -> tuple[float, str]:
    """Free space where PostgreSQL keeps its data (when readable from here), else /work."""
    async with await AsyncConnection.connect(admin_url, autocommit=True) as admin:
        data_dir = str(await fetch_value(admin, "SHOW data_directory"))
    where = data_dir if await asyncio.to_thread(os.path.isdir, data_dir) else "/work"
    return shutil.disk_usage(where).free / 1e9, where


async def check_disk(admin_url: str, needed_gb: float, what: str) -> None:
    free, where = await free_gb(admin_url)
    progress("bigtable", f"{free:,.0f} GB free on {where}; {what} needs about {needed_gb:,.0f} GB")
    if free < needed_gb:
        raise SystemExit(f"bigtable: not enough disk for {what}: {free:.0f} GB free on {where}")


async def index_definitions(conn: AsyncConnection[Any]) -> list[tuple[str, str]]:
    """(name, CREATE INDEX ...) of the big tables' indexes that back no constraint."""
    cursor = await conn.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
          FROM pg_index i
         WHERE i.indrelid = ANY(%s::regclass[])
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
         ORDER BY 1
        """,
        (list(BIG_TABLES),),
    )
    return [(str(name), str(ddl)) for name, ddl in await cursor.fetchall()]


async def load_finished_jobs(conn: AsyncConnection[Any], finished: int) -> None:
    """``finished`` succeeded pings as taskhub's worker leaves them: the job row (worker gone,
    1 attempt), deferred/started/succeeded events spread over the 6 days before now, and the
    result ping returns (its message). Triggers are skipped (replica role): they would only
    add the same events and NOTIFY."""
    await conn.execute("SET session_replication_role = replica")
    await conn.execute("SET maintenance_work_mem = '1GB'")
    indexes = await index_definitions(conn)
    for name, _ddl in indexes:
        await conn.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(name)))
    span = "interval '6 days'"
    for low in range(1, finished + 1, CHUNK):
        high = min(finished, low + CHUNK - 1)
        params = {"low": low, "high": high, "n": finished}
        # The finish time of job g: spread evenly, oldest first, ending now.
        at = f"(now() - {span} + {span} * (g::float8 / %(n)s))"
        await conn.execute(
            b"""
            INSERT INTO procrastinate_jobs
                   (id, queue_name, task_name, priority, args, status, attempts, worker_id)
            SELECT g, 'default', 'taskhub.ping', 0,
                   jsonb_build_object('message', g, 'sleep', 0), 'succeeded', 1, NULL
              FROM generate_series(%(low)s::bigint, %(high)s::bigint) g
            """,
            params,
        )
        await conn.execute(
            f"""
            INSERT INTO procrastinate_events (id, job_id, type, at)
            SELECT 3 * (g - 1) + e.n, g, e.type::procrastinate_job_event_type,
                   {at} - e.before
              FROM generate_series(%(low)s::bigint, %(high)s::bigint) g
             CROSS JOIN (VALUES (1, 'deferred', interval '3 ms'),
                                (2, 'started', interval '1 ms'),
                                (3, 'succeeded', interval '0 ms')) e(n, type, before)
            """.encode(),
            params,
        )
        await conn.execute(
            f"""
            INSERT INTO taskhub.job_results (job_id, result, created_at)
            SELECT g, to_jsonb(g), {at}
              FROM generate_series(%(low)s::bigint, %(high)s::bigint) g
            """.encode(),
            params,
        )
        progress("template", f"{high:,} / {finished:,} finished jobs loaded")
    await conn.execute(
        "SELECT setval('procrastinate_jobs_id_seq', %s), setval('procrastinate_events_id_seq', %s)",
        (finished, 3 * finished),
    )
    await conn.execute("SET session_replication_role = origin")
    for name, ddl in indexes:
        progress("template", f"index {name}")
        await conn.execute(ddl.encode())
    progress("template", "VACUUM (FREEZE, ANALYZE): as long-finished jobs would be")
    for table in BIG_TABLES:
        await conn.execute(sql.SQL("VACUUM (FREEZE, ANALYZE) {}").format(sql.SQL(table)))
    await conn.execute("CHECKPOINT")


async def ensure_template(options: BigtableOptions) -> tuple[str, bool]:
    """The template for the current alembic head, built if missing (or ``rebuild``).

    Templates of other heads or sizes are dropped when a new one is built, to free the disk.
    """
    name = template_name(options.finished)
    present = await existing_templates(options.admin_url)
    if name in present and not options.rebuild:
        return name, False
    await check_disk(
        options.admin_url, 2.5 * GB_PER_MILLION * options.finished / 1e6 + 5, "the template"
    )
    for old in present:
        progress("template", f"dropping {old}")
        await drop_database(options.admin_url, old)
    building = name + "_building"
    started = time.perf_counter()
    await drop_database(options.admin_url, building)
    async with await AsyncConnection.connect(options.admin_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(building)))
    try:
        url = database_url(options.admin_url, building)
        await asyncio.to_thread(migrate.upgrade, url)
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            await load_finished_jobs(conn, options.finished)
        async with await AsyncConnection.connect(options.admin_url, autocommit=True) as admin:
            await admin.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(building), sql.Identifier(name)
                )
            )
    except BaseException:
        await drop_database(options.admin_url, building)
        raise
    progress("template", f"built {name} in {time.perf_counter() - started:,.0f} s")
    return name, True


async def drop_templates(admin_url: str) -> list[str]:
    """Drop every bigtable template (all sizes and heads)."""
    names = await existing_templates(admin_url)
    for name in names:
        await drop_database(admin_url, name)
    return names


# --------------------------------------------------------------------------- drains


def worker_argvs(processes: int) -> tuple[list[list[str]], str]:
    base = [*taskhub_command(), "worker"]
    if worker_supports_processes():
        return [[*base, "--processes", str(processes)]], "taskhub worker --processes N"
    return [base] * processes, "N x taskhub worker"


async def drain(label: str, url: str, jobs: int, processes: int, argvs: list[list[str]]) -> Drain:
    async with await AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn:
        await queues.pause(conn, "default", "bench")
        ids: list[int] = []
        for start in range(0, jobs, 1_000):
            many = [{"message": i} for i in range(start, min(jobs, start + 1_000))]
            async with conn.transaction():
                ids += await defer.batch_defer(conn, ping, many)
        first, last = min(ids), max(ids)
        await settle(conn)
        with children(f"{label} workers") as group:
            env = subprocess_env(url, TASKHUB_WORKER_PROCESSES="1")
            for argv in argvs:
                group.start(argv, env)
            await wait_listening(conn, processes, group)
            cpu_before = group.cpu_seconds()
            async with conn.transaction():
                resumed_at = await fetch_value(conn, "SELECT now()")
                # Not resume_queue: its figures count every job of the queue, a scan of all
                # 10 million rows (2 s) before the resume commits.
                await queues.resume(conn, "default", "bench")
            deadline = time.monotonic() + max(300.0, jobs / 20)
            while True:
                done = await fetch_value(
                    conn,
                    "SELECT count(*) FROM procrastinate_jobs "
                    "WHERE id BETWEEN %s AND %s AND status = 'succeeded'",
                    first,
                    last,
                )
                if int(done) >= jobs:
                    break
                group.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label}: {done} of {jobs} jobs done\n{group.output()}")
                await asyncio.sleep(0.1)
            cpu = group.cpu_seconds() - cpu_before
            finished_at = await fetch_value(
                conn,
                "SELECT max(at) FROM procrastinate_events "
                "WHERE job_id BETWEEN %s AND %s AND type = 'succeeded'",
                first,
                last,
            )
    seconds = (finished_at - resumed_at).total_seconds()
    result = Drain(label, processes, seconds, jobs / seconds, cpu * 1000 / jobs)
    progress(
        "bigtable",
        f"{label}, {processes} process(es): {result.jobs_per_s:,.0f} jobs/s "
        f"({seconds:.2f} s, {result.worker_cpu_ms_per_job:.2f} worker CPU ms/job)",
    )
    return result


async def wait_listening(conn: AsyncConnection[Any], processes: int, group: Children) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while (
        await count_listeners(conn) < processes
        or int(await fetch_value(conn, "SELECT count(*) FROM procrastinate_workers")) < processes
    ):
        group.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers not listening after {START_TIMEOUT:.0f} s")
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # start-up work (periodic defers, first fetch) settles


async def measure(options: BigtableOptions) -> BigtableFigures:
    """Build (or reuse) the template, then time each drain on a fresh clone or empty database."""
    load_before = load_average()
    template, built = await ensure_template(options)
    async with await AsyncConnection.connect(options.admin_url, autocommit=True) as admin:
        size = await fetch_value(admin, "SELECT pg_size_pretty(pg_database_size(%s))", template)
    await check_disk(
        options.admin_url, GB_PER_MILLION * options.finished / 1e6 + 3, "a clone of the template"
    )
    big_label = f"{options.finished / 1e6:g}M finished"
    drains: list[Drain] = []
    command = ""
    for repeat in range(options.repeats):
        for processes in options.processes:
            argvs, command = worker_argvs(processes)
            # Alternate which database goes first, so that drift cancels over the repeats.
            labels = ("empty", big_label) if repeat % 2 == 0 else (big_label, "empty")
            for label in labels:
                name = f"bigtable_{'big' if label != 'empty' else 'empty'}_{processes}_{repeat}"
                clone_of = template if label != "empty" else None
                progress("bigtable", f"{label}, {processes} process(es): preparing {name}")
                async with fresh_database(options.admin_url, name, template=clone_of) as url:
                    if clone_of is None:
                        await asyncio.to_thread(migrate.upgrade, url)
                    drains.append(await drain(label, url, options.jobs, processes, argvs))
    return BigtableFigures(
        options=options,
        template=template,
        template_size=str(size),
        template_built_now=built,
        drains=drains,
        worker_command=command,
        load_before=load_before,
        load_after=load_average(),
    )


# --------------------------------------------------------------------------- report


def render(figures: BigtableFigures) -> str:
    """The figures as a markdown section."""
    o = figures.options
    big = f"{o.finished / 1e6:g}M finished"
    rows = []
    for processes in o.processes:
        empty, loaded = figures.rate("empty", processes), figures.rate(big, processes)
        cpu = {
            label: statistics.median(
                d.worker_cpu_ms_per_job
                for d in figures.drains
                if d.database == label and d.processes == processes
            )
            for label in ("empty", big)
        }
        rows.append(
            [
                f"{processes} worker process{'es' if processes > 1 else ''}",
                f"{empty:,.0f}",
                f"{loaded:,.0f}",
                f"{loaded / empty:.2f}",
                f"{cpu['empty']:.2f} / {cpu[big]:.2f}",
            ]
        )
    built = "built during this run" if figures.template_built_now else "reused"
    return "\n".join(
        [
            f"## Work rate next to {big} jobs",
            "",
            f"{o.jobs:,} queued `taskhub.ping` jobs drained by `{figures.worker_command}` "
            "(taskhub's default concurrency per process), timed on the database clock from the "
            f"queue's resume to the last `succeeded` event; median of {o.repeats} run(s), the "
            "order of the two databases alternating. Template "
            f"`{figures.template}` ({figures.template_size}, {built}): {o.finished:,} succeeded "
            "jobs, each with its deferred/started/succeeded events and its "
            "`taskhub.job_results` row. "
            f"{figures.load_before} before, {figures.load_after} after. Goal: within 10% "
            "of empty (ratio >= 0.90).",
            "",
            markdown_table(
                [
                    "jobs/s",
                    "empty database",
                    big,
                    f"{big} / empty",
                    "worker CPU ms/job (empty / big)",
                ],
                rows,
            ),
        ]
    )


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split(",") if part.strip())


def parse_args(argv: Sequence[str] | None = None) -> BigtableOptions | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="admin connection")
    parser.add_argument("--finished", type=int, default=10_000_000, help="jobs in the template")
    parser.add_argument("--jobs", type=int, default=20_000, help="queued jobs each drain")
    parser.add_argument("--processes", type=_ints, default=(1, 2), help="e.g. 1,2")
    parser.add_argument(
        "--repeats", type=int, default=2, help="drains per combination (default: %(default)s)"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the template first")
    parser.add_argument(
        "--drop-templates", action="store_true", help="drop every bigtable template and exit"
    )
    parser.add_argument(
        "--build-only", action="store_true", help="build the template if missing, then exit"
    )
    ns = parser.parse_args(argv)
    if ns.drop_templates:
        names = asyncio.run(drop_templates(ns.database_url))
        print(f"dropped: {', '.join(names) or 'nothing'}", file=sys.stderr)
        return None
    if ns.finished < 1 or ns.jobs < 1 or ns.repeats < 1 or not ns.processes:
        parser.error("--finished, --jobs, --repeats must be >= 1")
    options = BigtableOptions(
        admin_url=ns.database_url,
        finished=ns.finished,
        jobs=ns.jobs,
        processes=ns.processes,
        repeats=ns.repeats,
        rebuild=ns.rebuild,
    )
    if ns.build_only:
        name, built = asyncio.run(ensure_template(options))
        print(f"{name}: {'built' if built else 'already there'}", file=sys.stderr)
        return None
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if options is None:
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    print(render(asyncio.run(measure(options))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
