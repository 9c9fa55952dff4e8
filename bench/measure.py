"""Measurement helpers shared by the bench scripts (``bench/throughput.py`` and others).

Small on purpose, and free of peer imports, so that every script in ``bench/`` can use it
from either virtualenv (``.venv`` or ``bench/.venv``):

- a fresh database per measured column (:func:`fresh_database`), migrated for taskhub with
  :func:`migrate_taskhub`, and :func:`settle` (ANALYZE + CHECKPOINT) before a timed phase;
- server counters (:func:`server_stats`): the database's transactions, the server's WAL
  fsyncs and PostgreSQL's CPU time, with :meth:`ServerStats.minus` for a delta;
- CPU time of process trees from ``/proc`` (:func:`tree_cpu_seconds`), for workers and for
  the PostgreSQL server;
- a quiet-machine check (:func:`quiet_check`) and the environment block of a report
  (:func:`describe_environment`);
- :func:`percentile`.

CPU figures read ``/proc``: they need the PostgreSQL server on this machine, visible to
this user (root here); otherwise they are ``None`` and reports print n/a.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib.metadata
import os
import platform
import shlex
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from psycopg import AsyncConnection, sql

DEFAULT_ADMIN_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
# PostgreSQL 15 backends publish their statistics (pg_stat_database, pg_stat_wal) at most
# once a second, and an idle backend does so within a second of going idle: wait this long
# before reading counters that must include everything done so far.
STATS_FLUSH_WAIT: Final = 1.5
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
SERVER_SETTINGS: Final = (
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "shared_buffers",
    "max_connections",
    "checkpoint_timeout",
    "autovacuum",
)


def log(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- databases


def bench_dbname(name: str) -> str:
    """``taskhub_bench_<pid>_<name>``: unique per run, recognisable if ever left behind."""
    return f"taskhub_bench_{os.getpid()}_{name}"


def database_url(admin_url: str, dbname: str) -> str:
    """The admin URL with its database replaced (taskhub's settings want a URL)."""
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{dbname}"))


async def create_database(admin_url: str, dbname: str) -> str:
    """Create an empty database (dropping a leftover of the same name first); its URL."""
    ident = sql.Identifier(dbname)
    async with await AsyncConnection.connect(admin_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    return database_url(admin_url, dbname)


async def drop_database(admin_url: str, dbname: str) -> None:
    """Drop the database, even if sessions remain (WITH FORCE)."""
    ident = sql.Identifier(dbname)
    async with await AsyncConnection.connect(admin_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, name: str) -> AsyncIterator[str]:
    """A new database ``taskhub_bench_<pid>_<name>`` for the block; yields its URL."""
    dbname = bench_dbname(name)
    url = await create_database(admin_url, dbname)
    try:
        yield url
    finally:
        await drop_database(admin_url, dbname)


def migrate_taskhub(url: str) -> None:
    """taskhub's schema, from its alembic migrations (blocking: use asyncio.to_thread)."""
    from backend.process import migrate  # imported here: scripts for peers alone need no taskhub

    migrate.upgrade(url)


async def settle(url: str) -> None:
    """Before a timed phase: fresh planner statistics (autovacuum may be off), and a
    checkpoint, so that no checkpoint's writes compete with the phase."""
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("ANALYZE")
        await conn.execute("CHECKPOINT")


async def fetch_value(conn: AsyncConnection[Any], query: str, *params: Any) -> Any:
    """The first column of the first row (None when there is no row)."""
    cursor = await conn.execute(query.encode(), params or None)
    row = await cursor.fetchone()
    return None if row is None else row[0]


# --------------------------------------------------------------------------- CPU from /proc


@dataclass(frozen=True)
class ProcTimes:
    """One process's line of ``/proc/<pid>/stat``, times in seconds."""

    pid: int
    ppid: int
    utime: float
    stime: float
    cutime: float  # waited-for children that have exited
    cstime: float

    @property
    def own(self) -> float:
        return self.utime + self.stime

    @property
    def with_reaped_children(self) -> float:
        return self.utime + self.stime + self.cutime + self.cstime


def proc_times(pid: int) -> ProcTimes | None:
    """``/proc/<pid>/stat`` parsed, or None if the process is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
    ppid, utime, stime, cutime, cstime = (int(fields[i]) for i in (1, 11, 12, 13, 14))
    return ProcTimes(
        pid=pid,
        ppid=ppid,
        utime=utime / CLOCK_TICKS,
        stime=stime / CLOCK_TICKS,
        cutime=cutime / CLOCK_TICKS,
        cstime=cstime / CLOCK_TICKS,
    )


def all_proc_times() -> dict[int, ProcTimes]:
    """Every visible process, by pid."""
    found: dict[int, ProcTimes] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            times = proc_times(int(entry.name))
            if times is not None:
                found[times.pid] = times
    return found


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """CPU seconds (user + system) used so far by the processes ``roots`` and all their
    descendants, those that already exited included.

    Each live process counts its own time plus that of its exited, waited-for children
    (``cutime``/``cstime``); a child's time moves into its parent's when the parent reaps
    it, so the sum stays right across exits between two readings. A child that exits but
    whose parent never waits for it is lost, as is a root that has exited.
    """
    table = all_proc_times()
    children: dict[int, list[int]] = {}
    for times in table.values():
        children.setdefault(times.ppid, []).append(times.pid)
    total = 0.0
    seen: set[int] = set()
    pending = [pid for pid in roots if pid in table]
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += table[pid].with_reaped_children
        pending.extend(children.get(pid, ()))
    return total


def own_cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds of the given processes themselves (e.g. the bench's own backends)."""
    return sum(t.own for t in map(proc_times, pids) if t is not None)


async def postmaster_pid(conn: AsyncConnection[Any]) -> int | None:
    """The PostgreSQL server's main process: the parent of this connection's backend,
    when the server runs on this machine (None otherwise)."""
    backend = await fetch_value(conn, "SELECT pg_backend_pid()")
    times = proc_times(int(backend))
    if times is None:
        return None
    parent = proc_times(times.ppid)
    return parent.pid if parent is not None else None


async def backend_pid(conn: AsyncConnection[Any]) -> int:
    """This connection's server process (whose CPU the bench may subtract as its own)."""
    return int(await fetch_value(conn, "SELECT pg_backend_pid()"))


# --------------------------------------------------------------------------- server counters


@dataclass(frozen=True)
class ServerStats:
    """Counters read together; subtract two readings with :meth:`minus`.

    ``transactions`` are the measured database's (xact_commit + xact_rollback);
    ``wal_syncs`` are server-wide (pg_stat_wal.wal_sync), so nothing else should run;
    ``postgres_cpu`` is every PostgreSQL process's CPU seconds (None without /proc);
    ``other_transactions`` are all other databases' (the admin one included), to tell
    whether anything else ran on the server meanwhile.
    """

    transactions: int
    wal_syncs: int
    postgres_cpu: float | None
    other_transactions: int = 0

    def minus(self, earlier: ServerStats) -> ServerStats:
        cpu = (
            None
            if self.postgres_cpu is None or earlier.postgres_cpu is None
            else self.postgres_cpu - earlier.postgres_cpu
        )
        return ServerStats(
            transactions=self.transactions - earlier.transactions,
            wal_syncs=self.wal_syncs - earlier.wal_syncs,
            postgres_cpu=cpu,
            other_transactions=self.other_transactions - earlier.other_transactions,
        )


def postgres_cpu_seconds(postmaster: int | None) -> float | None:
    """CPU seconds of the whole server: the postmaster, the backends and background
    processes alive now, and (through the postmaster's cutime/cstime) those that exited."""
    return None if postmaster is None else tree_cpu_seconds([postmaster])


async def server_stats(
    admin: AsyncConnection[Any], dbname: str, postmaster: int | None
) -> ServerStats:
    """Read the counters on ``admin``, an autocommit connection to *another* database (so
    that reading them adds no transaction to ``dbname``'s count).

    Counters lag by up to a second (see :data:`STATS_FLUSH_WAIT`); each read is its own
    transaction, so none is served from a cached statistics snapshot.
    """
    cursor = await admin.execute(
        "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s),"
        " (SELECT wal_sync FROM pg_stat_wal),"
        " (SELECT coalesce(sum(xact_commit + xact_rollback), 0) FROM pg_stat_database"
        "  WHERE datname IS DISTINCT FROM %s)",
        (dbname, dbname),
    )
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        raise RuntimeError(f"no pg_stat_database row for {dbname!r}")
    return ServerStats(
        transactions=int(row[0]),
        wal_syncs=int(row[1]),
        postgres_cpu=postgres_cpu_seconds(postmaster),
        other_transactions=int(row[2]),
    )


# --------------------------------------------------------------------------- the machine


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over ``seconds`` (from /proc/stat); None where unreadable."""

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


@dataclass(frozen=True)
class QuietReport:
    """How busy the machine was before a run: other work skews every figure."""

    busy: float | None  # share of all CPUs, over the sampled second
    load1: float

    @property
    def quiet(self) -> bool:
        # The load average lags by minutes; the sampled busy share is what counts.
        if self.busy is not None:
            return self.busy <= 0.1
        return self.load1 <= 0.5 * (os.cpu_count() or 1)

    def describe(self) -> str:
        load = f"load average {self.load1:.2f} (1 min)"
        if self.busy is None:
            return load
        return f"{self.busy:.0%} of the CPUs busy just before the start, {load}"


def quiet_check(seconds: float = 1.0, *, warn: bool = True) -> QuietReport:
    """Sample the machine for ``seconds``; print a warning to stderr when it is busy."""
    report = QuietReport(busy=cpu_busy(seconds), load1=os.getloadavg()[0])
    if warn and not report.quiet:
        log(f"warning: the machine is busy ({report.describe()}): the figures will be noisy")
    return report


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def package_version(name: str) -> str:
    """Installed version of a distribution, or "not installed"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


async def describe_environment(
    admin_url: str, packages: Sequence[str] = ("taskhub", "procrastinate", "psycopg")
) -> dict[str, str]:
    """What a report must say to be compared with another: date, command, versions,
    server settings, CPUs. Keys are labels, in print order."""
    async with await AsyncConnection.connect(admin_url, autocommit=True) as conn:
        version = await fetch_value(conn, "SHOW server_version")
        settings = [f"{name}={await fetch_value(conn, f'SHOW {name}')}" for name in SERVER_SETTINGS]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"`{shlex.join(sys.orig_argv)}`",
        "Python": platform.python_version(),
        "packages": ", ".join(f"{name} {package_version(name)}" for name in packages),
        "server": f"PostgreSQL {version} ({', '.join(settings)})",
        "CPUs": f"{os.cpu_count()} x {cpu_model()}; {platform.platform()}",
    }


def render_environment(environment: dict[str, str]) -> str:
    """The environment as a markdown list."""
    return "\n".join(f"- {label}: {value}" for label, value in environment.items())


# --------------------------------------------------------------------------- numbers


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), linear between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if len(values) == 1:
        return float(values[0])
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def wait_for_stats() -> None:
    """Let every backend publish its statistics (see :data:`STATS_FLUSH_WAIT`)."""
    await asyncio.sleep(STATS_FLUSH_WAIT)
