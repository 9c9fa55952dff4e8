"""A throwaway PostgreSQL 15 cluster for one bench run, with pg_stat_statements preloaded.

The shared server on 127.0.0.1:5432 does not preload ``pg_stat_statements`` and must not be
restarted, so a run that wants per-statement figures (``bench/statements.py``), or a server of
its own for the whole run (``bench/run.py --dedicated-server``), starts one of these:

- ``initdb`` and ``pg_ctl`` from ``/usr/lib/postgresql/15/bin``, run as the ``postgres`` OS user
  (``runuser -u postgres --``: PostgreSQL refuses to run as root); the data directory is a new
  ``/tmp/taskhub_bench_pg_*``, the unix socket in ``/tmp``, TCP on 127.0.0.1 at a free port, trust
  authentication (initdb's ``--auth=trust``: local and 127.0.0.1/::1 connections);
- the settings that shape a bench's figures copied from the shared server (:data:`COPIED`,
  read from its ``pg_settings``: memory, connections, WAL and commit, checkpoints, planner
  costs, JIT), so that figures stay comparable with runs on the shared server;
- autovacuum on with ``autovacuum_naptime = 10s``, as on a production server (the shared one
  has it off; docs/worker.md, "Tuning"), the same for every system measured;
- plus ``shared_preload_libraries = pg_stat_statements`` with ``pg_stat_statements.track =
  all`` (statements run inside plpgsql functions and triggers are counted too, as rows of their
  own with ``toplevel = false``; their time is also inside their caller's),
  ``pg_stat_statements.track_planning = on`` (planning time apart from execution time),
  ``pg_stat_statements.max = 10000`` and ``track_io_timing = on``.

It is stopped (``pg_ctl stop -m fast``, then ``immediate``) and its directory removed when the
block ends, on errors, Ctrl-C and SIGTERM too.

Use::

    with dedicated_server() as admin_url:   # postgresql://postgres@127.0.0.1:<port>/postgres
        ...

or from the shell (prints the URL, serves until Ctrl-C; or runs a command, ``{url}`` replaced
by the admin URL, and stops the server when it exits)::

    .venv/bin/python bench/server.py
    .venv/bin/python bench/server.py -- .venv/bin/python bench/latency.py --database-url {url}
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final

import psycopg

DEFAULT_SOURCE_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
BIN_DIR: Final = Path("/usr/lib/postgresql/15/bin")
OS_USER: Final = "postgres"
SOCKET_DIR: Final = "/tmp"
START_TIMEOUT: Final = 60
#: Settings read from the shared server and written into the dedicated one's postgresql.conf
#: (each as pg_settings.setting, in the setting's base unit). Those missing there are skipped.
COPIED: Final = (
    "shared_buffers",
    "max_connections",
    "work_mem",
    "maintenance_work_mem",
    "effective_cache_size",
    "huge_pages",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "wal_level",
    "wal_buffers",
    "wal_compression",
    "wal_writer_delay",
    "wal_writer_flush_after",
    "commit_delay",
    "commit_siblings",
    "checkpoint_timeout",
    "checkpoint_completion_target",
    "max_wal_size",
    "min_wal_size",
    "max_wal_senders",
    "bgwriter_delay",
    "bgwriter_lru_maxpages",
    "random_page_cost",
    "seq_page_cost",
    "effective_io_concurrency",
    "default_statistics_target",
    "jit",
    "max_worker_processes",
    "max_parallel_workers",
    "max_parallel_workers_per_gather",
    "max_locks_per_transaction",
    "track_activity_query_size",
    "TimeZone",
)
#: Always set on the dedicated server, over whatever was copied. Autovacuum runs, as on any
#: production server (this machine's shared one has it off), waking every 10 s, as
#: docs/operations.md recommends for a job queue: every system measured gets the same.
ADDED: Final = {
    "autovacuum": "on",
    "autovacuum_naptime": "10s",
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "all",
    "pg_stat_statements.track_planning": "on",
    "pg_stat_statements.track_utility": "on",
    "pg_stat_statements.max": "10000",
    "track_io_timing": "on",
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": SOCKET_DIR,
    "logging_collector": "off",
}


def log(message: str) -> None:
    print(f"[server] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class DedicatedServer:
    """A running throwaway cluster."""

    data_dir: Path
    port: int
    settings: dict[str, str] = field(default_factory=dict)  # everything written to its conf

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"


def read_settings(source_url: str, names: Sequence[str] = COPIED) -> dict[str, str]:
    """``names`` as the server at ``source_url`` has them (pg_settings.setting)."""
    with psycopg.connect(source_url, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE lower(name) = ANY(%s)",
            ([name.lower() for name in names],),
        ).fetchall()
    found = {str(name).lower(): str(value) for name, value in rows}
    return {name: found[name.lower()] for name in names if name.lower() in found}


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _as_postgres(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", OS_USER, "--", *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd="/tmp",  # runuser keeps the cwd, which the postgres user may not be able to read
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, deadline: float) -> None:
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def start(source_url: str | None = DEFAULT_SOURCE_URL) -> DedicatedServer:
    """initdb + pg_ctl start; the caller must :func:`stop` it (see :func:`dedicated_server`)."""
    if os.geteuid() != 0:
        raise RuntimeError("bench/server.py runs initdb as the postgres user: run it as root")
    settings = read_settings(source_url) if source_url else {}
    settings.update(ADDED)
    data_dir = Path(tempfile.mkdtemp(prefix="taskhub_bench_pg_", dir="/tmp"))
    server = DedicatedServer(data_dir=data_dir, port=0, settings=settings)
    try:
        shutil.chown(data_dir, OS_USER, OS_USER)
        os.chmod(data_dir, 0o700)
        done = _as_postgres(
            [
                str(BIN_DIR / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        for attempt in range(5):
            port = _free_port()
            server = DedicatedServer(data_dir=data_dir, port=port, settings={**settings})
            server.settings["port"] = str(port)
            conf = data_dir / "postgresql.auto.conf"
            lines = ["# written by bench/server.py", *_conf_lines(server.settings)]
            conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
            shutil.chown(conf, OS_USER, OS_USER)
            server.log_file.touch()
            shutil.chown(server.log_file, OS_USER, OS_USER)
            done = _as_postgres(
                [
                    str(BIN_DIR / "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    str(START_TIMEOUT),
                    "-D",
                    str(data_dir),
                    "-l",
                    str(server.log_file),
                ]
            )
            if done.returncode == 0:
                break
            tail = server.log_file.read_text(errors="replace")[-2000:]
            if "already in use" not in tail or attempt == 4:
                raise RuntimeError(f"pg_ctl start failed ({done.returncode}):\n{done.stderr}{tail}")
        _wait_ready(server.admin_url, time.monotonic() + START_TIMEOUT)
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    except BaseException:
        stop(server)
        raise
    log(f"PostgreSQL 15 at {server.admin_url} (data in {data_dir})")
    return server


def _conf_lines(settings: dict[str, str]) -> list[str]:
    return [f"{name} = {_quote(value)}" for name, value in settings.items()]


def stop(server: DedicatedServer) -> None:
    """Stop the cluster (fast, then immediate) and remove its directory and log."""
    if (server.data_dir / "postmaster.pid").exists():
        for mode in ("fast", "immediate"):
            done = _as_postgres(
                [
                    str(BIN_DIR / "pg_ctl"),
                    "stop",
                    "-w",
                    "-t",
                    "60",
                    "-m",
                    mode,
                    "-D",
                    str(server.data_dir),
                ]
            )
            if done.returncode == 0:
                break
            log(f"pg_ctl stop -m {mode} failed: {done.stderr.strip()}")
    shutil.rmtree(server.data_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        server.log_file.unlink()
    log(f"stopped and removed {server.data_dir}")


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def dedicated_server(source_url: str | None = DEFAULT_SOURCE_URL) -> Iterator[str]:
    """A throwaway cluster for the block (settings copied from ``source_url``; None: initdb's
    defaults); yields its admin URL. Stopped and removed afterwards, whatever happens (SIGTERM
    is turned into SystemExit meanwhile, when called from the main thread)."""
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: leave SIGTERM alone
        previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        server = start(source_url)
        try:
            yield server.admin_url
        finally:
            stop(server)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Without a command: print the admin URL and serve until Ctrl-C or SIGTERM.",
    )
    parser.add_argument(
        "--copy-from",
        default=DEFAULT_SOURCE_URL,
        help="server whose settings to copy (default: %(default)s); 'none': initdb's defaults",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- command ({url} replaced)")
    ns = parser.parse_args(argv)
    command = [part for part in ns.command if part != "--"] if ns.command else []
    source = None if ns.copy_from == "none" else ns.copy_from
    with dedicated_server(source) as url:
        if not command:
            print(url, flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
            return 0
        env = {**os.environ, "BENCH_DATABASE_URL": url}
        argv_ = [part.replace("{url}", url) for part in command]
        with subprocess.Popen(argv_, env=env) as child:
            try:
                return child.wait()
            except BaseException:
                child.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=30)
                raise


if __name__ == "__main__":
    sys.exit(main())
