"""Where a no-op job's time goes on the PostgreSQL side, statement by statement.

On a server that preloads pg_stat_statements (by default a throwaway one, ``bench/server.py``;
the shared server does not), for each worker-process count (2, then 1), on a fresh database:

1. pause the ``default`` queue, enqueue ``--jobs`` ``taskhub.ping`` jobs in one batch (one
   statement, one transaction), ANALYZE + CHECKPOINT;
2. start ``taskhub worker --processes N --concurrency 50``, wait until it LISTENs, plus 1 s;
3. ``pg_stat_statements_reset()`` for this database, read the CPU counters, resume the queue;
4. drain; read the CPU counters again and pg_stat_statements for the database.

The bench's own statements (resume, polling) run under a role of their own (``SET ROLE``) and
are left out of the table and its totals. Statements are named after taskhub's (and
procrastinate's) named queries; statements run inside plpgsql/SQL functions and triggers
(``toplevel = false``, counted because the dedicated server sets ``pg_stat_statements.track =
all``) are shown under the function that runs them; their time is already inside their caller's.

Run from the repository root::

    .venv/bin/python bench/statements.py                 # a dedicated server, 20,000 jobs
    .venv/bin/python bench/statements.py --jobs 2000 --processes 2   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import measure as probes
import server
from common_latency import (
    Children,
    children,
    count_listeners,
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
from backend.queries import QUERIES
from backend.tasks.builtin import ping

#: CPU per no-op job, worker and PostgreSQL together, that taskhub aims at.
BUDGET_MS: Final = 0.25
CONCURRENCY: Final = 50
START_TIMEOUT: Final = 120.0
POLL_INTERVAL: Final = 0.05
#: Rows of the table: statements below this share of the top-level time go into "others".
MIN_SHARE: Final = 0.002
#: The polling session walks the id index and stops at the first unfinished job.
POLL_SESSION: Final = ("SET enable_bitmapscan = off", "SET enable_seqscan = off", "SET jit = off")


@dataclass(frozen=True)
class StatementsOptions:
    admin_url: str | None = None  # None: a dedicated server for the run (bench/server.py)
    jobs: int = 20_000
    processes: tuple[int, ...] = (2, 1)
    concurrency: int = CONCURRENCY


@dataclass(frozen=True)
class Statement:
    """One row of pg_stat_statements (or several merged under one label)."""

    label: str
    role: str  # what it is for (fetch, finish, heartbeat...)
    toplevel: bool
    caller: str  # nested: the function running it (and its triggers); top level: ""
    calls: int
    exec_ms: float
    plan_ms: float
    rows: int
    shared_hit: int
    shared_read: int
    wal_bytes: int
    text: str  # normalised text, shortened

    @property
    def ms(self) -> float:
        return self.exec_ms + self.plan_ms


@dataclass(frozen=True)
class Run:
    processes: int
    jobs: int
    seconds: float  # resume to the last succeeded event, database clock
    worker_cpu_s: float
    postgres_cpu_s: float | None
    statements: list[Statement]
    bench_ms: float  # the bench's own statements, left out

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds

    def per_job(self, value: float) -> float:
        return value / self.jobs

    @property
    def toplevel_ms(self) -> float:
        return sum(s.ms for s in self.statements if s.toplevel)

    @property
    def toplevel_exec_ms(self) -> float:
        return sum(s.exec_ms for s in self.statements if s.toplevel)

    @property
    def wal_bytes(self) -> int:
        return sum(s.wal_bytes for s in self.statements if s.toplevel)


@dataclass(frozen=True)
class StatementsFigures:
    options: StatementsOptions
    server: str  # where: dedicated or given, version, relevant settings
    worker_command: str
    runs: list[Run]
    load_before: str
    load_after: str
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- naming statements

_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_STRING = re.compile(r"'(?:[^']|'')*'")
_PLACEHOLDER = re.compile(r"%\(\w+\)s|%s|\$\d+")
_WORD = re.compile(r"[a-z_][a-z0-9_]*")
_CONSTANT_WORDS = frozenset({"null", "true", "false"})
#: The statement a foreign key's trigger runs to check (and key-share lock) the referenced row.
_FK_CHECK = re.compile(r'SELECT 1 FROM ONLY (?:"\w+"\.)?"(\w+)" x WHERE')


def tokens(text: str) -> tuple[str, ...]:
    """The words of a statement, without comments, literals and parameters: the same for
    the source of a query and pg_stat_statements' normalised text of it (which has $n for
    every constant)."""
    text = _COMMENT.sub(" ", text)
    text = _STRING.sub(" ", text)
    text = _PLACEHOLDER.sub(" ", text).lower()
    return tuple(w for w in _WORD.findall(text) if w not in _CONSTANT_WORDS)


def short_text(text: str, width: int = 70) -> str:
    flat = " ".join(_COMMENT.sub(" ", text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def role_of(name: str) -> str:
    """What a named query is for, in the words of the report."""
    exact = {
        "fetch_jobs": "fetch",
        "fetch_job": "fetch (one job)",
        "finish_jobs": "finish",
        "notify_finished_waiters": "wake waiters after a finish",
        "worker_heartbeat": "heartbeat",
        "register_worker_row": "worker start",
        "worker_stopped": "worker stop",
        "take_rate_limit": "rate-limit check",
        "postpone_job": "rate-limit postpone",
        "write_progress": "progress write",
        "defer_periodic_job": "periodic deferrer",
        "last_schedule_runs": "periodic deferrer",
        "requeue_jobs": "requeue",
        "rescue_stalled_jobs": "rescue task",
        "defer_job": "defer (a task's own)",
        "defer_jobs": "defer (a task's own)",
    }
    if name in exact:
        return exact[name]
    if name.startswith(("stats_", "queue_depth_")):
        return "stats task"
    if "alert" in name:
        return "alerts task"
    if name.startswith("prune") or name.endswith("_workers"):
        return "prune task"
    if "backup" in name:
        return "backup task"
    return "procrastinate" if name.startswith("procrastinate:") else "other"


def _procrastinate_queries() -> dict[str, str]:
    from procrastinate.sql import queries

    return {f"procrastinate:{name}": str(query) for name, query in queries.items()}


class Namer:
    """Names pg_stat_statements rows: named queries for top-level statements, the function
    (and the triggers calling it) for nested ones."""

    def __init__(self, functions: Sequence[tuple[str, str, str]]) -> None:
        named = {**_procrastinate_queries(), **{k: str(v) for k, v in QUERIES.items()}}
        self.named = [(name, tokens(text)) for name, text in named.items()]
        self.exact = {words: name for name, words in reversed(self.named)}
        self.functions = [(fn, triggers, tokens(src)) for fn, src, triggers in functions]

    def toplevel(self, text: str) -> tuple[str, str]:
        """(label, role) of a top-level statement."""
        words = tokens(text)
        first = words[0] if words else ""
        if first in ("listen", "unlisten"):
            return f"{first.upper()} (queue channel)", "LISTEN"
        if first in ("begin", "commit", "rollback", "savepoint", "release", "start"):
            return first.upper(), "transaction control"
        if first in ("set", "reset", "show", "discard", "deallocate"):
            return short_text(text, 40), "session settings"
        if words == ("select",):
            return "SELECT $1", "connection check"
        name = self.exact.get(words)
        if name is None and len(words) >= 8:
            best, best_ratio = None, 0.0
            for candidate, known in self.named:
                if abs(len(known) - len(words)) > 0.2 * len(words):
                    continue
                ratio = difflib.SequenceMatcher(None, words, known, autojunk=False).ratio()
                if ratio > best_ratio:
                    best, best_ratio = candidate, ratio
            name = best if best_ratio >= 0.9 else None
        if name is None:
            return short_text(text), "other"
        return name, role_of(name)

    def caller(self, text: str) -> str:
        """The function whose body holds this nested statement (plpgsql drops INTO targets and
        turns PERFORM and expressions into SELECT: matched as an ordered subsequence within a
        window), with the triggers that run it."""
        words = list(tokens(text))
        if words and words[0] in ("select", "perform"):
            words = words[1:]
        if not words:
            return "?"
        best: tuple[int, str] | None = None
        limit = int(len(words) * 1.5) + 5
        for fn, triggers, body in self.functions:
            for start, word in enumerate(body):
                if word != words[0]:
                    continue
                position, matched = start, 0
                while position < len(body) and matched < len(words):
                    if body[position] == words[matched]:
                        matched += 1
                    position += 1
                    if position - start > limit:
                        break
                if matched == len(words):
                    window = position - start
                    if best is None or window < best[0]:
                        best = (window, f"{fn}{f' ← {triggers}' if triggers else ''}")
        return best[1] if best else "?"


# --------------------------------------------------------------------------- the run


def worker_argvs(processes: int, concurrency: int) -> tuple[list[list[str]], str]:
    base = [*taskhub_command(), "worker", "--concurrency", str(concurrency)]
    if worker_supports_processes():
        return [[*base, "--processes", str(processes)]], (
            f"taskhub worker --processes N --concurrency {concurrency}"
        )
    return [base] * processes, f"N x taskhub worker --concurrency {concurrency}"


async def wait_listening(conn: AsyncConnection[Any], processes: int, group: Children) -> None:
    """Until each worker process is registered and LISTENs, plus 1 s of start-up work."""
    deadline = time.monotonic() + START_TIMEOUT
    while (
        await count_listeners(conn) < processes
        or int(await fetch_value(conn, "SELECT count(*) FROM procrastinate_workers")) < processes
    ):
        group.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers not listening after {START_TIMEOUT:.0f} s")
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)


async def wait_drained(
    conn: AsyncConnection[Any], first: int, last: int, group: Children, timeout: float
) -> int:
    """Poll (on ``conn``, set up with :data:`POLL_SESSION`) until jobs ``first..last`` are all
    finished; the number of polls."""
    deadline = time.monotonic() + timeout
    lowest, polls, report = first, 0, time.monotonic() + 10
    while True:
        found = await fetch_value(
            conn,
            "SELECT id FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            " AND id >= %s AND id <= %s ORDER BY id LIMIT 1",
            lowest,
            last,
        )
        polls += 1
        if found is None:
            return polls
        lowest = int(found)
        now = time.monotonic()
        if now > report:
            progress("drain", f"lowest unfinished job {lowest - first:,} of {last - first + 1:,}")
            report = now + 10
        group.check_alive()
        if now > deadline:
            raise TimeoutError(f"jobs not drained after {timeout:.0f} s\n{group.output()}")
        await asyncio.sleep(POLL_INTERVAL)


@contextlib.asynccontextmanager
async def bench_role(admin_url: str) -> AsyncIterator[str]:
    """A role for the bench's own statements (``SET ROLE``), so that pg_stat_statements
    keeps them apart (its rows are per user); dropped afterwards."""
    name = f"taskhub_bench_{os.getpid()}_observer"
    async with await AsyncConnection.connect(admin_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        await admin.execute(
            sql.SQL("CREATE ROLE {} SUPERUSER NOLOGIN").format(sql.Identifier(name))
        )
    try:
        yield name
    finally:
        async with await AsyncConnection.connect(admin_url, autocommit=True) as admin:
            await admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


async def check_pg_stat_statements(admin: AsyncConnection[Any]) -> str:
    """Raise unless pg_stat_statements is loaded; create its view in the admin database.
    Returns the settings that shape its figures."""
    libraries = str(await fetch_value(admin, "SHOW shared_preload_libraries"))
    if "pg_stat_statements" not in libraries:
        raise SystemExit(
            "statements: this server does not preload pg_stat_statements; run without "
            "--database-url (a dedicated server, bench/server.py) or on one that does"
        )
    await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    names = ("pg_stat_statements.track", "pg_stat_statements.track_planning", "track_io_timing")
    return ", ".join([f"{n}={await fetch_value(admin, f'SHOW {n}')}" for n in names])


STATEMENT_QUERY: Final = """
SELECT s.userid = r.oid AS bench, s.toplevel, s.query, s.calls, s.total_exec_time,
       s.total_plan_time, s.rows, s.shared_blks_hit, s.shared_blks_read, s.wal_bytes
  FROM pg_stat_statements s
  LEFT JOIN pg_roles r ON r.rolname = %s
 WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = %s)
"""
FUNCTION_QUERY: Final = """
SELECT p.oid::regprocedure::text AS fn, p.prosrc,
       coalesce(string_agg(DISTINCT 'trigger on ' || t.tgrelid::regclass::text, ', '), '')
  FROM pg_proc p
  JOIN pg_language l ON l.oid = p.prolang
  LEFT JOIN pg_trigger t ON t.tgfoid = p.oid AND NOT t.tgisinternal
 WHERE l.lanname IN ('plpgsql', 'sql')
   AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
 GROUP BY 1, 2
"""


async def read_statements(
    admin: AsyncConnection[Any], conn: AsyncConnection[Any], dbname: str, role: str
) -> tuple[list[Statement], float]:
    """The database's pg_stat_statements rows, named and merged by label; and the bench's own
    statements' time (ms), left out. ``conn``: on the measured database, tuple rows."""
    cursor = await conn.execute(FUNCTION_QUERY.encode())
    namer = Namer([(str(a), str(b), str(c)) for a, b, c in await cursor.fetchall()])
    cursor = await admin.execute(STATEMENT_QUERY.encode(), (role, dbname))
    merged: dict[tuple[str, bool, str], Statement] = {}
    bench_ms = 0.0
    for (
        bench,
        toplevel,
        text,
        calls,
        exec_ms,
        plan_ms,
        rows,
        hit,
        read,
        wal,
    ) in await cursor.fetchall():
        if bench:
            bench_ms += float(exec_ms) + float(plan_ms)
            continue
        text = str(text)
        if toplevel:
            label, role_ = namer.toplevel(text)
            caller = ""
        elif fk := _FK_CHECK.match(text):
            label, role_ = f"key check: the referenced row of {fk.group(1)}", "nested"
            caller = "a foreign key's RI trigger"
        else:
            label, role_ = short_text(text, 60), "nested"
            caller = namer.caller(text)
        new = Statement(
            label=label,
            role=role_,
            toplevel=bool(toplevel),
            caller=caller,
            calls=int(calls),
            exec_ms=float(exec_ms),
            plan_ms=float(plan_ms),
            rows=int(rows),
            shared_hit=int(hit),
            shared_read=int(read),
            wal_bytes=int(wal),
            text=short_text(text, 100),
        )
        key = (label, new.toplevel, caller)
        old = merged.get(key)
        if old is not None:
            new = Statement(
                label=label,
                role=role_,
                toplevel=new.toplevel,
                caller=caller,
                calls=old.calls + new.calls,
                exec_ms=old.exec_ms + new.exec_ms,
                plan_ms=old.plan_ms + new.plan_ms,
                rows=old.rows + new.rows,
                shared_hit=old.shared_hit + new.shared_hit,
                shared_read=old.shared_read + new.shared_read,
                wal_bytes=old.wal_bytes + new.wal_bytes,
                text=old.text,
            )
        merged[key] = new
    ordered = sorted(merged.values(), key=lambda s: s.ms, reverse=True)
    return ordered, bench_ms


async def one_run(admin_url: str, options: StatementsOptions, processes: int, role: str) -> Run:
    argvs, _ = worker_argvs(processes, options.concurrency)
    name = f"statements_{processes}p"
    dbname = probes.bench_dbname(name)
    async with fresh_database(admin_url, name) as url:
        await asyncio.to_thread(migrate.upgrade, url)
        async with (
            await AsyncConnection.connect(admin_url, autocommit=True) as admin,
            await AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn,
            await AsyncConnection.connect(url, autocommit=True) as poller,
        ):
            for conn_ in (admin, conn, poller):
                await conn_.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            for statement in POLL_SESSION:
                await poller.execute(statement.encode())
            own = [
                int(await fetch_value(c, "SELECT pg_backend_pid()")) for c in (admin, conn, poller)
            ]
            postmaster = await probes.postmaster_pid(admin)
            dbid = await fetch_value(
                admin, "SELECT oid FROM pg_database WHERE datname = %s", dbname
            )
            await queues.pause(conn, "default", "bench")
            async with conn.transaction():
                ids = await defer.batch_defer(
                    conn, ping, [{"message": i} for i in range(options.jobs)]
                )
            first, last = min(ids), max(ids)
            await settle(conn)
            progress("statements", f"{processes} process(es): {options.jobs:,} jobs queued, paused")
            with children(f"statements {processes}p workers") as group:
                env = subprocess_env(url, TASKHUB_WORKER_PROCESSES="1")
                for argv in argvs:
                    group.start(argv, env)
                await wait_listening(conn, processes, group)
                await admin.execute("SELECT pg_stat_statements_reset(0, %s, 0)", (dbid,))
                cpu_before = group.cpu_seconds()
                postgres_before = probes.postgres_cpu_seconds(postmaster)
                own_before = probes.own_cpu_seconds(own)
                async with conn.transaction():
                    resumed_at = await fetch_value(conn, "SELECT now()")
                    await queues.resume(conn, "default", "bench")
                await wait_drained(poller, first, last, group, 120 + options.jobs / 20)
                worker_cpu = group.cpu_seconds() - cpu_before
                postgres_after = probes.postgres_cpu_seconds(postmaster)
                own_cpu = probes.own_cpu_seconds(own) - own_before
                statements, bench_ms = await read_statements(admin, poller, dbname, role)
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
                if int(done) != options.jobs:
                    raise RuntimeError(f"{done} of {options.jobs} jobs succeeded at attempt 1")
    postgres_cpu = (
        None
        if postgres_after is None or postgres_before is None
        else postgres_after - postgres_before - own_cpu
    )
    run = Run(
        processes=processes,
        jobs=options.jobs,
        seconds=(finished_at - resumed_at).total_seconds(),
        worker_cpu_s=worker_cpu,
        postgres_cpu_s=postgres_cpu,
        statements=statements,
        bench_ms=bench_ms,
    )
    progress(
        "statements",
        f"{processes} process(es): {run.jobs_per_s:,.0f} jobs/s, worker "
        f"{run.per_job(worker_cpu) * 1000:.3f} ms/job, PostgreSQL "
        + (f"{run.per_job(postgres_cpu) * 1000:.3f}" if postgres_cpu is not None else "n/a")
        + f" ms/job, statements {run.per_job(run.toplevel_ms):.3f} ms/job",
    )
    return run


@contextlib.contextmanager
def admin_server(admin_url: str | None) -> Iterator[tuple[str, str]]:
    """The given server, or a dedicated one for the block: (admin URL, how it was got)."""
    if admin_url is not None:
        yield admin_url, "the server given (--database-url)"
        return
    with server.dedicated_server() as url:
        yield url, "a dedicated server (bench/server.py, settings copied from the shared one)"


async def measure_on(admin_url: str, where: str, options: StatementsOptions) -> StatementsFigures:
    load_before = load_average()
    async with await AsyncConnection.connect(admin_url, autocommit=True) as admin:
        settings = await check_pg_stat_statements(admin)
        version = await fetch_value(admin, "SHOW server_version")
        shown = [f"{n}={await fetch_value(admin, f'SHOW {n}')}" for n in probes.SERVER_SETTINGS]
    runs = []
    async with bench_role(admin_url) as role:
        for processes in options.processes:
            runs.append(await one_run(admin_url, options, processes, role))
    return StatementsFigures(
        options=options,
        server=f"{where}: PostgreSQL {version} ({', '.join(shown)}; {settings})",
        worker_command=worker_argvs(1, options.concurrency)[1],
        runs=runs,
        load_before=load_before,
        load_after=load_average(),
    )


async def measure(options: StatementsOptions) -> StatementsFigures:
    """On ``options.admin_url``, or on a dedicated server started (and removed) here."""
    if options.admin_url is not None:
        return await measure_on(options.admin_url, "the server given", options)
    with admin_server(None) as (url, where):
        return await measure_on(url, where, options)


# --------------------------------------------------------------------------- report


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.4f}" if value < 0.01 else f"{value:.3f}"


def render_run(run: Run) -> str:
    jobs = run.jobs
    worker = run.per_job(run.worker_cpu_s) * 1000
    postgres = run.per_job(run.postgres_cpu_s) * 1000 if run.postgres_cpu_s is not None else None
    total = worker + (postgres or 0.0)
    inside = run.per_job(run.toplevel_ms)
    top = sum(s.ms for s in run.statements if s.toplevel) or 1.0
    shown = [s for s in run.statements if s.ms >= MIN_SHARE * top]
    rest = [s for s in run.statements if s not in shown]
    rows = []
    for s in shown:
        per_job = s.ms / jobs
        share = f"{per_job / BUDGET_MS:.1%}" if s.toplevel else f"({per_job / BUDGET_MS:.1%})"
        label = f"`{s.label}`" if s.toplevel and s.role != "other" else s.label
        if not s.toplevel:
            label = f"↳ {s.label} — in `{s.caller}`"
        rows.append(
            [
                label.replace("|", "\\|"),
                s.role,
                f"{s.calls:,}",
                f"{s.calls / jobs:.3f}",
                f"{s.exec_ms:,.1f}",
                _ms(s.exec_ms / jobs),
                _ms(s.plan_ms / jobs),
                f"{s.rows:,}",
                f"{s.shared_hit:,} / {s.shared_read:,}",
                f"{s.wal_bytes / jobs:,.0f}",
                share,
            ]
        )
    if rest:
        ms = sum(s.ms for s in rest if s.toplevel)
        rows.append(
            [
                f"others ({len(rest)} statements)",
                "",
                f"{sum(s.calls for s in rest):,}",
                "",
                f"{sum(s.exec_ms for s in rest if s.toplevel):,.1f}",
                _ms(sum(s.exec_ms for s in rest if s.toplevel) / jobs),
                _ms(sum(s.plan_ms for s in rest if s.toplevel) / jobs),
                "",
                "",
                f"{sum(s.wal_bytes for s in rest if s.toplevel) / jobs:,.0f}",
                f"{ms / jobs / BUDGET_MS:.1%}",
            ]
        )
    pg = f"{postgres:.3f}" if postgres is not None else "n/a"
    outside = f"{postgres - inside:.3f}" if postgres is not None else "n/a"
    lines = [
        f"### {run.processes} worker process{'es' if run.processes > 1 else ''}",
        "",
        f"{jobs:,} jobs drained in {run.seconds:.2f} s ({run.jobs_per_s:,.0f} jobs/s, "
        "database clock). **CPU per job: worker "
        f"{worker:.3f} ms + PostgreSQL {pg} ms = {total:.3f} ms, against a budget of "
        f"{BUDGET_MS} ms ({total / BUDGET_MS:.0%} of it)**. Top-level statements (execution + "
        f"planning): {inside:.3f} ms per job ({inside / BUDGET_MS:.0%} of the budget). "
        f"PostgreSQL's CPU less that: {outside} ms per job (its CPU outside the statements: "
        "parsing, protocol, commits, NOTIFY, background processes; less the statements' "
        "waits, for a CPU, a lock or I/O, which are wall time inside them: negative when the "
        "waits are the larger). "
        f"WAL of the statements: {run.wal_bytes / jobs:,.0f} bytes per job. The "
        f"bench's own statements (resume, polling: {run.bench_ms:,.0f} ms) are left out.",
        "",
        markdown_table(
            [
                "statement",
                "for",
                "calls",
                "calls/job",
                "exec ms",
                "exec ms/job",
                "plan ms/job",
                "rows",
                "shared blks hit / read",
                "WAL B/job",
                "share of the budget",
            ],
            rows,
        ),
    ]
    return "\n".join(lines)


def render(figures: StatementsFigures) -> str:
    o = figures.options
    sections = [
        "## Where a no-op job's time goes, per statement (pg_stat_statements)",
        "",
        f"{o.jobs:,} `taskhub.ping` jobs enqueued in one batch on a paused queue, then "
        f"drained by `{figures.worker_command}` on a fresh database each; "
        "pg_stat_statements reset for the database just before the queue's resume, read "
        f"when the last job has finished. Server: {figures.server}. "
        f"{figures.load_before} before, {figures.load_after} after.",
        "",
        "How to read the tables: *exec ms* is wall time inside the executor (lock and I/O "
        "waits included), planning apart (*plan ms/job*, `track_planning`); neither counts "
        "parsing, the client protocol or the commit. *share of the budget* is the statement's "
        f"execution + planning time per job over {BUDGET_MS} ms, the CPU per job (worker and "
        "PostgreSQL together) taskhub aims at. Rows marked ↳ run inside a plpgsql/SQL "
        "function or trigger (`toplevel = false`, counted with `pg_stat_statements.track = "
        "all`): their time is already in the top-level statement that fired them, so their "
        "share is in parentheses and not added to the totals. CPU figures are from /proc: "
        "the worker processes and every PostgreSQL process over the drain, less the bench's "
        "own backends.",
        "",
    ]
    sections += [render_run(run) + "\n" for run in figures.runs]
    return "\n".join(sections).rstrip() + "\n"


# --------------------------------------------------------------------------- command line


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split(",") if part.strip())


def parse_args(argv: Sequence[str] | None = None) -> StatementsOptions:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        default=None,
        help="admin connection to a server that preloads pg_stat_statements "
        "(default: start a dedicated one, bench/server.py)",
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="default: %(default)s")
    parser.add_argument("--processes", type=_ints, default=(2, 1), help="default: 2,1")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="default: %(default)s")
    ns = parser.parse_args(argv)
    if ns.jobs < 1 or not ns.processes or min(ns.processes) < 1 or ns.concurrency < 1:
        parser.error("--jobs, --processes and --concurrency must be >= 1")
    return StatementsOptions(
        admin_url=ns.database_url,
        jobs=ns.jobs,
        processes=ns.processes,
        concurrency=ns.concurrency,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    print(render(asyncio.run(measure(options))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
