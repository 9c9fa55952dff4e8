"""A million queued jobs: drain rate against 20,000, and the cost of enqueueing them.

Goal: 1,000,000 queued ``taskhub.ping`` jobs drain at no less than 90% of the rate of 20,000,
with the same workers (``taskhub worker --processes 2 --concurrency 50``). Each drain on a
fresh database (the 20,000 first), as ``bigtable.py`` times it:

1. pause the ``default`` queue; enqueue the jobs through ``backend.defer.batch_defer``, 1,000
   per call, each call its own transaction; timed (wall clock) and its WAL measured
   (``pg_current_wal_lsn()`` before and after); then the tables' and indexes' sizes;
2. ANALYZE + CHECKPOINT; start the workers; wait until they LISTEN, plus 1 s;
3. resume the queue and time, on the database clock, from the resume's transaction to the last
   ``succeeded`` event. Halfway through (the lowest unfinished job past the middle), the fetch
   statement is run once under ``EXPLAIN (ANALYZE, BUFFERS)`` in a transaction rolled back, and
   ``pg_statio_user_tables``/``_indexes`` are read before and after the drain.

Then, on a third fresh database, ``--sample-10k`` jobs enqueued 10,000 per call (one figure).

Diagnostic: ``--vacuum-every S`` runs ``VACUUM procrastinate_jobs`` every S seconds during the
million's drain (its CPU counts against the drain, as it would in production), to show what the
dead entries left in the fetch's partial index by the jobs already fetched cost.

Run from the repository root (about 5-10 minutes on 2 cores)::

    .venv/bin/python bench/million.py                 # a dedicated server (bench/server.py)
    .venv/bin/python bench/million.py --jobs 100000   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from common_latency import (
    children,
    fetch_value,
    fresh_database,
    load_average,
    markdown_table,
    progress,
    settle,
    subprocess_env,
)
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from statements import (
    CONCURRENCY,
    POLL_SESSION,
    admin_server,
    wait_listening,
    worker_argvs,
)

from backend import defer
from backend.control import queues
from backend.process import migrate
from backend.queries import QUERIES
from backend.tasks.builtin import ping

GOAL: Final = 0.90
POLL_INTERVAL: Final = 0.1
TABLES: Final = ("procrastinate_jobs", "procrastinate_events")
#: An idle PostgreSQL 15 backend publishes its statistics (pg_statio) within 10 s
#: (PGSTAT_IDLE_INTERVAL); a busy one at most once a second.
STATS_WAIT: Final = 11.0


@dataclass(frozen=True)
class MillionOptions:
    admin_url: str | None = None  # None: a dedicated server (bench/server.py)
    jobs: int = 1_000_000
    reference_jobs: int = 20_000
    processes: int = 2
    concurrency: int = CONCURRENCY
    batch: int = 1_000
    sample_10k: int = 200_000  # jobs enqueued 10,000 per call, for the second enqueue figure
    vacuum_every: float | None = None  # diagnostic: VACUUM procrastinate_jobs during the drain


@dataclass(frozen=True)
class Enqueue:
    jobs: int
    per_call: int
    seconds: float
    wal_bytes: int

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds


@dataclass(frozen=True)
class Statio:
    """One table's or index's blocks (pg_statio), hit and read."""

    name: str
    hit: int
    read: int


@dataclass(frozen=True)
class Drain:
    jobs: int
    enqueue: Enqueue
    sizes: list[tuple[str, int]]  # relation, bytes (after the enqueue)
    seconds: float
    worker_cpu_s: float
    explain: str  # the fetch statement halfway through
    explain_at: int  # jobs finished when it ran
    dead_at_halfway: str
    statio: list[Statio]  # deltas over the drain
    vacuums: int = 0  # VACUUMs run during the drain (--vacuum-every)

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds


@dataclass(frozen=True)
class MillionFigures:
    options: MillionOptions
    where: str
    worker_command: str
    reference: Drain
    million: Drain
    sample_10k: Enqueue
    load_before: str
    load_after: str

    @property
    def ratio(self) -> float:
        return self.million.jobs_per_s / self.reference.jobs_per_s


# --------------------------------------------------------------------------- enqueue


async def enqueue(
    conn: AsyncConnection[Any], jobs: int, per_call: int, label: str
) -> tuple[Enqueue, int, int]:
    """``jobs`` pings through batch_defer, ``per_call`` per call and transaction; with the
    first and last job ids."""
    first, last = None, 0
    lsn_before = await fetch_value(conn, "SELECT pg_current_wal_lsn()")
    started = time.perf_counter()
    report = started + 10
    for start in range(0, jobs, per_call):
        many = [{"message": i} for i in range(start, min(jobs, start + per_call))]
        async with conn.transaction():
            ids = await defer.batch_defer(conn, ping, many)
        first = min(ids) if first is None else first
        last = max(last, *ids)
        if time.perf_counter() > report:
            progress("million", f"{label}: {start + len(many):,} of {jobs:,} enqueued")
            report = time.perf_counter() + 10
    seconds = time.perf_counter() - started
    wal = await fetch_value(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", lsn_before)
    result = Enqueue(jobs=jobs, per_call=per_call, seconds=seconds, wal_bytes=int(wal))
    progress(
        "million",
        f"{label}: {jobs:,} enqueued {per_call:,} per call in {seconds:.1f} s "
        f"({result.jobs_per_s:,.0f} jobs/s, {result.wal_bytes / jobs:,.0f} WAL bytes/job)",
    )
    return result, first or 0, last


SIZES_QUERY: Final = """
SELECT c.oid::regclass::text, pg_relation_size(c.oid)
  FROM pg_class c
 WHERE c.oid = ANY(%(tables)s::regclass[])
    OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = ANY(%(tables)s::regclass[]))
 ORDER BY c.relkind DESC, 2 DESC
"""
STATIO_QUERY: Final = """
SELECT relname || ' (heap)', heap_blks_hit, heap_blks_read
  FROM pg_statio_user_tables WHERE relname = ANY(%(tables)s)
UNION ALL
SELECT indexrelname, idx_blks_hit, idx_blks_read
  FROM pg_statio_user_indexes WHERE relname = ANY(%(tables)s)
"""
DEAD_QUERY: Final = """
SELECT format('%s live, %s dead tuples in procrastinate_jobs (pg_stat_user_tables)',
              n_live_tup, n_dead_tup)
  FROM pg_stat_user_tables WHERE relname = 'procrastinate_jobs'
"""


async def statio(conn: AsyncConnection[Any]) -> dict[str, tuple[int, int]]:
    cursor = await conn.execute(STATIO_QUERY.encode(), {"tables": list(TABLES)})
    return {
        str(name): (int(hit or 0), int(read or 0)) for name, hit, read in await cursor.fetchall()
    }


async def explain_fetch(conn: AsyncConnection[Any], count: int) -> str:
    """The workers' fetch statement under EXPLAIN (ANALYZE, BUFFERS), rolled back (the jobs it
    takes stay queued; workers skip them meanwhile: SKIP LOCKED)."""
    await conn.execute(b"BEGIN")
    try:
        cursor = await conn.execute(
            ("EXPLAIN (ANALYZE, BUFFERS) " + QUERIES["fetch_jobs"]).encode(),
            {"queues": None, "worker_id": None, "count": count},
        )
        lines = [str(row[0]) for row in await cursor.fetchall()]
    finally:
        await conn.execute(b"ROLLBACK")
    return "\n".join(lines)


# --------------------------------------------------------------------------- a drain


async def poll_drained(
    conn: AsyncConnection[Any],
    first: int,
    last: int,
    check: Callable[[], None],
    halfway: Callable[[int], Awaitable[None]],
    timeout: float,
) -> None:
    """Until jobs ``first..last`` are all finished; ``halfway(done)`` once past the middle."""
    deadline = time.monotonic() + timeout
    lowest, middle, report = first, first + (last - first) // 2, time.monotonic() + 10
    called = False
    while True:
        found = await fetch_value(
            conn,
            "SELECT id FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            " AND id >= %s AND id <= %s ORDER BY id LIMIT 1",
            lowest,
            last,
        )
        if found is None:
            return
        lowest = int(found)
        if not called and lowest >= middle:
            called = True
            await halfway(lowest - first)
        now = time.monotonic()
        if now > report:
            progress("million", f"  {lowest - first:,} of {last - first + 1:,} done")
            report = now + 10
        check()
        if now > deadline:
            raise TimeoutError(f"jobs not drained after {timeout:.0f} s")
        await asyncio.sleep(POLL_INTERVAL)


async def vacuum_loop(url: str, every: float, count: list[int]) -> None:
    """``VACUUM procrastinate_jobs`` every ``every`` seconds, until cancelled."""
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            await asyncio.sleep(every)
            started = time.perf_counter()
            await conn.execute(b"VACUUM procrastinate_jobs")
            count[0] += 1
            progress(
                "million", f"  VACUUM procrastinate_jobs: {time.perf_counter() - started:.1f} s"
            )


async def drain(
    admin_url: str, options: MillionOptions, jobs: int, name: str, vacuum_every: float | None = None
) -> Drain:
    argvs, _ = worker_argvs(options.processes, options.concurrency)
    async with fresh_database(admin_url, name) as url:
        await asyncio.to_thread(migrate.upgrade, url)
        async with (
            await AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn,
            await AsyncConnection.connect(url, autocommit=True) as poller,
        ):
            for statement in POLL_SESSION:
                await poller.execute(statement.encode())
            await queues.pause(conn, "default", "bench")
            enqueued, first, last = await enqueue(conn, jobs, options.batch, f"{jobs:,}")
            cursor = await poller.execute(SIZES_QUERY.encode(), {"tables": list(TABLES)})
            sizes = [(str(rel), int(size)) for rel, size in await cursor.fetchall()]
            progress("million", f"{jobs:,}: ANALYZE + CHECKPOINT")
            await settle(conn)
            with children(f"million {name} workers") as group:
                env = subprocess_env(url, TASKHUB_WORKER_PROCESSES="1")
                for argv in argvs:
                    group.start(argv, env)
                await wait_listening(conn, options.processes, group)
                await asyncio.sleep(STATS_WAIT)  # start-up statistics published (pg_statio)
                statio_before = await statio(poller)
                cpu_before = group.cpu_seconds()
                explained: list[tuple[str, int, str]] = []

                async def halfway(done: int) -> None:
                    plan = await explain_fetch(poller, options.concurrency)
                    dead = str(await fetch_value(poller, DEAD_QUERY))
                    explained.append((plan, done, dead))

                async with conn.transaction():
                    resumed_at = await fetch_value(conn, "SELECT now()")
                    await queues.resume(conn, "default", "bench")
                progress("million", f"{jobs:,}: resumed, draining")
                vacuums = [0]
                vacuuming = (
                    asyncio.create_task(vacuum_loop(url, vacuum_every, vacuums))
                    if vacuum_every
                    else None
                )
                try:
                    await poll_drained(
                        poller, first, last, group.check_alive, halfway, 120 + jobs / 50
                    )
                finally:
                    if vacuuming is not None:
                        vacuuming.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await vacuuming
                worker_cpu = group.cpu_seconds() - cpu_before
                await asyncio.sleep(STATS_WAIT)
                statio_after = await statio(poller)
            finished_at = await fetch_value(
                conn,
                "SELECT max(at) FROM procrastinate_events "
                "WHERE job_id BETWEEN %s AND %s AND type = 'succeeded'",
                first,
                last,
            )
            done = await fetch_value(
                conn,
                "SELECT count(*) FROM procrastinate_jobs WHERE id BETWEEN %s AND %s "
                "AND status = 'succeeded' AND attempts = 1",
                first,
                last,
            )
            if int(done) != jobs:
                raise RuntimeError(f"{done} of {jobs} jobs succeeded at attempt 1")
    plan, at, dead = explained[0] if explained else ("(not reached)", 0, "")
    deltas = [
        Statio(
            name,
            hit - statio_before.get(name, (0, 0))[0],
            read - statio_before.get(name, (0, 0))[1],
        )
        for name, (hit, read) in statio_after.items()
    ]
    result = Drain(
        jobs=jobs,
        enqueue=enqueued,
        sizes=sizes,
        seconds=(finished_at - resumed_at).total_seconds(),
        worker_cpu_s=worker_cpu,
        explain=plan,
        explain_at=at,
        dead_at_halfway=dead,
        statio=sorted(deltas, key=lambda s: s.hit + s.read, reverse=True),
        vacuums=vacuums[0],
    )
    progress(
        "million",
        f"{jobs:,}: {result.jobs_per_s:,.0f} jobs/s ({result.seconds:.1f} s, "
        f"{worker_cpu * 1000 / jobs:.3f} worker CPU ms/job)",
    )
    return result


async def sample_10k(admin_url: str, jobs: int) -> Enqueue:
    async with fresh_database(admin_url, "million_enqueue10k") as url:
        await asyncio.to_thread(migrate.upgrade, url)
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            await settle(conn)
            return (await enqueue(conn, jobs, 10_000, "10k per call"))[0]


async def measure_on(admin_url: str, where: str, options: MillionOptions) -> MillionFigures:
    load_before = load_average()
    reference = await drain(admin_url, options, options.reference_jobs, "million_ref")
    million = await drain(admin_url, options, options.jobs, "million_big", options.vacuum_every)
    sample = await sample_10k(admin_url, min(options.sample_10k, options.jobs))
    return MillionFigures(
        options=options,
        where=where,
        worker_command=worker_argvs(options.processes, options.concurrency)[1].replace(
            "N", str(options.processes)
        ),
        reference=reference,
        million=million,
        sample_10k=sample,
        load_before=load_before,
        load_after=load_average(),
    )


async def measure(options: MillionOptions) -> MillionFigures:
    """On ``options.admin_url``, or on a dedicated server started (and removed) here."""
    if options.admin_url is not None:
        return await measure_on(options.admin_url, "the server given", options)
    with admin_server(None) as (url, where):
        return await measure_on(url, where, options)


# --------------------------------------------------------------------------- report


def _mb(size: float) -> str:
    return f"{size / 1e6:,.1f} MB"


def render(figures: MillionFigures) -> str:
    o = figures.options
    ref, big = figures.reference, figures.million
    met = "met" if figures.ratio >= GOAL else "**not met**"
    drains = markdown_table(
        ["queued jobs", "drain s", "jobs/s", "vs the first", "worker CPU ms/job"],
        [
            [
                f"{d.jobs:,}",
                f"{d.seconds:.2f}",
                f"{d.jobs_per_s:,.0f}",
                f"{d.jobs_per_s / ref.jobs_per_s:.2f}",
                f"{d.worker_cpu_s * 1000 / d.jobs:.3f}",
            ]
            for d in (ref, big)
        ],
    )
    enqueues = markdown_table(
        ["enqueue", "jobs", "wall s", "jobs/s", "WAL", "WAL bytes/job"],
        [
            [
                f"{e.per_call:,} per call (and transaction)",
                f"{e.jobs:,}",
                f"{e.seconds:.1f}",
                f"{e.jobs_per_s:,.0f}",
                _mb(e.wal_bytes),
                f"{e.wal_bytes / e.jobs:,.0f}",
            ]
            for e in (big.enqueue, figures.sample_10k, ref.enqueue)
        ],
    )
    sizes = markdown_table(
        ["relation (after enqueueing the million)", "size", "bytes/job"],
        [[f"`{rel}`", _mb(size), f"{size / big.jobs:,.0f}"] for rel, size in big.sizes],
    )
    ref_statio = {s.name: s for s in ref.statio}
    statio_rows = []
    for s in big.statio[:12]:
        r = ref_statio.get(s.name)
        statio_rows.append(
            [
                f"`{s.name}`",
                f"{(r.hit / ref.jobs) if r else 0:,.1f} / {(r.read / ref.jobs) if r else 0:,.2f}",
                f"{s.hit / big.jobs:,.1f} / {s.read / big.jobs:,.2f}",
            ]
        )
    statio = markdown_table(
        ["blocks per job over the drain", f"{ref.jobs:,}: hit / read", f"{big.jobs:,}: hit / read"],
        statio_rows,
    )
    return "\n".join(
        [
            f"## A million queued jobs: drain rate and enqueue ({big.jobs:,} vs {ref.jobs:,})",
            "",
            f"`{figures.worker_command}` drains {ref.jobs:,} then {big.jobs:,} queued "
            "`taskhub.ping` jobs, each on a fresh database, enqueued on a paused queue "
            f"({o.batch:,} per `batch_defer` call and transaction), timed on the database clock "
            "from the queue's resume to the last `succeeded` event. Server: "
            f"{figures.where}. {figures.load_before} before, {figures.load_after} after. "
            f"**Goal: the million at >= {GOAL:.0%} of the {ref.jobs:,} rate: "
            f"{figures.ratio:.2f}, {met}.**"
            + (
                f" Diagnostic run: `VACUUM procrastinate_jobs` every {o.vacuum_every:g} s during "
                f"the million's drain ({big.vacuums} run)."
                if o.vacuum_every
                else ""
            ),
            "",
            drains,
            "",
            "Enqueue (wall time of the calls; WAL from `pg_current_wal_lsn()`; the "
            f"{figures.sample_10k.per_call:,}-per-call figure on a database of its own):",
            "",
            enqueues,
            "",
            sizes,
            "",
            "Blocks per job over each drain (`pg_statio_user_tables` / `_indexes`, read "
            f"{STATS_WAIT:.0f} s after the drain, so that idle backends have published theirs; "
            "the bench's polling and the idle workers' few statements meanwhile included):",
            "",
            statio,
            "",
            f"The fetch statement (`fetch_jobs`, {o.concurrency} jobs) halfway through the "
            f"million ({big.explain_at:,} done; {big.dead_at_halfway}), rolled back:",
            "",
            "```",
            big.explain,
            "```",
            "",
            f"and halfway through the {ref.jobs:,} ({ref.explain_at:,} done; "
            f"{ref.dead_at_halfway}):",
            "",
            "```",
            ref.explain,
            "```",
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> MillionOptions:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        default=None,
        help="admin connection (default: start a dedicated server, bench/server.py)",
    )
    parser.add_argument("--jobs", type=int, default=1_000_000, help="default: %(default)s")
    parser.add_argument("--reference-jobs", type=int, default=20_000, help="default: %(default)s")
    parser.add_argument("--processes", type=int, default=2, help="default: %(default)s")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="default: %(default)s")
    parser.add_argument(
        "--sample-10k",
        type=int,
        default=200_000,
        help="jobs enqueued 10,000 per call for that figure (default: %(default)s)",
    )
    parser.add_argument(
        "--vacuum-every",
        type=float,
        default=None,
        metavar="S",
        help="diagnostic: VACUUM procrastinate_jobs every S seconds during the big drain",
    )
    ns = parser.parse_args(argv)
    if min(ns.jobs, ns.reference_jobs, ns.processes, ns.concurrency, ns.sample_10k) < 1:
        parser.error("every count must be >= 1")
    return MillionOptions(
        admin_url=ns.database_url,
        jobs=ns.jobs,
        reference_jobs=ns.reference_jobs,
        processes=ns.processes,
        concurrency=ns.concurrency,
        sample_10k=ns.sample_10k,
        vacuum_every=ns.vacuum_every,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    print(render(asyncio.run(measure(options))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
