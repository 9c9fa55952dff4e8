"""Small helpers shared by enqueue.py, latency.py, status.py and bigtable.py.

They live here, not in measure.py, because the four scripts were written alongside it; each
is small and has no state, so moving them later is cheap.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from psycopg import AsyncConnection, sql

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
#: Schedules no benchmark wants firing mid-run: a nightly pg_dump at 03:00, and pruning (which
#: would delete a big template's old jobs and compete with the work being measured).
QUIET_SCHEDULES = "taskhub.backup_database=off;taskhub.prune_jobs=off"


def progress(section: str, message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(f"[{section}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- databases


def database_url(admin_url: str, dbname: str) -> str:
    """The admin URL with its database replaced (taskhub settings want a URL, not a DSN)."""
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{dbname}"))


def bench_dbname(name: str) -> str:
    """``taskhub_bench_<pid>_<name>``: unique per run, recognisable as a leftover."""
    return f"taskhub_bench_{os.getpid()}_{name}"


async def drop_database(admin_url: str, dbname: str) -> None:
    async with await AsyncConnection.connect(admin_url, autocommit=True) as admin:
        await admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


@contextlib.asynccontextmanager
async def fresh_database(
    admin_url: str, name: str, *, template: str | None = None
) -> AsyncIterator[str]:
    """Create ``taskhub_bench_<pid>_<name>`` (empty, or a file copy of ``template``), yield its
    URL, and drop it whatever happens (even with sessions left)."""
    dbname = bench_dbname(name)
    ident = sql.Identifier(dbname)
    await drop_database(admin_url, dbname)
    async with await AsyncConnection.connect(admin_url, autocommit=True) as admin:
        if template is None:
            await admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        else:
            # FILE_COPY copies the files (after a checkpoint) instead of WAL-logging every
            # block: seconds instead of minutes for a multi-gigabyte template.
            await admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY = FILE_COPY").format(
                    ident, sql.Identifier(template)
                )
            )
    try:
        yield database_url(admin_url, dbname)
    finally:
        await drop_database(admin_url, dbname)


async def fetch_value(conn: AsyncConnection[Any], query: str, *params: Any) -> Any:
    """The first column of the first row, or None."""
    cursor = await conn.execute(query.encode(), params or None)
    row = await cursor.fetchone()
    if row is None:
        return None
    return row[0] if isinstance(row, tuple) else next(iter(row.values()))


async def settle(conn: AsyncConnection[Any]) -> None:
    """Before a timed phase: fresh statistics (autovacuum may be off here) and a checkpoint, so
    that no checkpoint's writes compete with the phase's commits."""
    await conn.execute("ANALYZE procrastinate_jobs")
    await conn.execute("CHECKPOINT")


async def count_listeners(conn: AsyncConnection[Any]) -> int:
    """Sessions of this database sitting in LISTEN: one per idle, listening worker loop."""
    found = await fetch_value(
        conn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND query LIKE %s",
        "LISTEN %",
    )
    return int(found or 0)


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Percentiles:
    """p50/p95/p99/max of a latency sample, in milliseconds."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> Percentiles:
        if not values_ms:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan)
        if len(values_ms) == 1:
            v = values_ms[0]
            return cls(1, v, v, v, v)
        q = statistics.quantiles(values_ms, n=100, method="inclusive")
        return cls(len(values_ms), q[49], q[94], q[98], max(values_ms))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table; the first column left-aligned, the others right-aligned."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---", *["---:"] * (len(headers) - 1)]) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- processes


def taskhub_command() -> list[str]:
    """The ``taskhub`` CLI of the venv running this script."""
    script = Path(sys.executable).parent / "taskhub"
    return [str(script)] if script.exists() else [sys.executable, "-m", "backend"]


def subprocess_env(url: str, **extra: str) -> dict[str, str]:
    """The environment for a taskhub/worker child: this one, pointed at ``url``, quiet."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        TASKHUB_LOG_LEVEL="WARNING",
        TASKHUB_SCHEDULES=QUIET_SCHEDULES,
        PYTHONPATH=os.pathsep.join(filter(None, [str(BENCH), str(REPO), env.get("PYTHONPATH")])),
    )
    env.update(extra)
    return env


def worker_supports_processes() -> bool:
    """Whether ``taskhub worker`` has ``--processes`` (being added alongside this bench)."""
    done = subprocess.run(
        [*taskhub_command(), "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "--processes" in done.stdout


class Children:
    """Child processes started in sessions of their own, stopped (group-wide) on exit.

    Only process groups this object created are signalled. Their output goes to a temporary
    log, whose tail is shown if a child dies early.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []
        self.argvs: list[str] = []

    def start(self, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.logs.append(log)
        proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        self.argvs.append(" ".join(argv))
        return proc

    def check_alive(self) -> None:
        """Raise, with the child's last output, if one of them has exited."""
        for proc, log, argv in zip(self.procs, self.logs, self.argvs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.label}: {argv} exited with {proc.returncode}:\n{self._tail(log)}"
                )

    @staticmethod
    def _tail(log: IO[bytes], size: int = 3000) -> str:
        log.seek(0, os.SEEK_END)
        end = log.tell()
        log.seek(max(0, end - size))
        return log.read().decode(errors="replace")

    def output(self) -> str:
        """The last lines each child printed, for error messages."""
        return "\n".join(
            f"--- {argv}:\n{self._tail(log)}"
            for argv, log in zip(self.argvs, self.logs, strict=True)
        )

    def pgids(self) -> list[int]:
        return [proc.pid for proc in self.procs if proc.poll() is None]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the live children and their descendants."""
        return group_cpu_seconds(self.pgids())

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM each child (a graceful stop; a supervisor forwards it to its own children),
        then SIGKILL whatever is left in its process group."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            below = descendants([proc.pid])
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Whatever it started and is still there (it should have stopped them) is killed.
            for pid in [*descendants([proc.pid]), *below]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if pid != proc.pid and os.getpgid(pid) in (proc.pid, *below):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for log in self.logs:
            log.close()
        self.procs.clear()
        self.logs.clear()
        self.argvs.clear()


@contextlib.contextmanager
def children(label: str) -> Iterator[Children]:
    """Children that are always stopped, even when the bench fails or is interrupted."""
    group = Children(label)
    try:
        yield group
    finally:
        group.stop()


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, pgrp, utime + stime in clock ticks), from /proc."""
    table: dict[int, tuple[int, int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                data = f.read().decode()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = data[data.rindex(")") + 2 :].split()
        # stat fields 4, 5, 14, 15: ppid, pgrp, utime, stime
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12]))
    return table


def descendants(roots: Sequence[int]) -> list[int]:
    """``roots`` and every live process below them or in their process groups (a supervisor's
    worker processes run in sessions of their own, so the group alone would miss them)."""
    table = _proc_table()
    found = {pid for pid, (_, pgrp, _) in table.items() if pgrp in roots or pid in roots}
    grew = True
    while grew:
        below = {pid for pid, (ppid, _, _) in table.items() if ppid in found} - found
        found |= below
        grew = bool(below)
    return sorted(found)


def group_cpu_seconds(roots: Sequence[int]) -> float:
    """CPU time (user + system) of live ``roots`` and their descendants."""
    table = _proc_table()
    ticks = sum(table[pid][2] for pid in descendants(roots) if pid in table)
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> str:
    return f"load average {os.getloadavg()[0]:.2f}"
