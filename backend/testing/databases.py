"""Test databases on a real PostgreSQL: a server for the session, a template migrated once per
set of apps, a fresh clone of it per test (``CREATE DATABASE ... TEMPLATE``, milliseconds)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from backend.declare.apps import load_apps
from backend.process import migrate
from backend.settings import load_settings

#: Where the server is: taskhub's own variable first, then the one taskhub's tests read.
SERVER_VARIABLES = ("TASKHUB_TEST_DATABASE_URL", "TEST_DATABASE_URL")


def with_database(url: str, name: str) -> str:
    """The same server URL, pointing at another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(query)
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextlib.contextmanager
def database_server() -> Iterator[str]:
    """An admin URL: ``TASKHUB_TEST_DATABASE_URL`` or ``TEST_DATABASE_URL`` if set, else an
    embedded server started for the block (in a temporary directory, removed after)."""
    for variable in SERVER_VARIABLES:
        if url := os.environ.get(variable):
            yield url
            return
    from backend.process.embedded import embedded_server  # imports the server's binaries

    home = Path(tempfile.mkdtemp(prefix="taskhub-test-pg-"))
    try:
        with embedded_server(home / "pgdata") as url:
            yield url
    finally:
        shutil.rmtree(home, ignore_errors=True)


class Templates:
    """One migrated template per set of apps, made when first asked for, dropped at close."""

    def __init__(self, admin_url: str, prefix: str = "taskhub_") -> None:
        self.admin_url = admin_url
        self.run_id = f"{prefix}{uuid.uuid4().hex[:8]}"
        self._made: dict[tuple[str, ...], str] = {}
        self._lock = threading.Lock()

    def template(self, apps: Sequence[str] = ()) -> str:
        """The name of a database migrated to head: taskhub's schema, then each app's."""
        key = tuple(dict.fromkeys(apps))
        with self._lock:
            if key not in self._made:
                loaded = load_apps(load_settings(apps=[]), key)
                name = f"{self.run_id}_tpl{len(self._made)}"
                url = create_database(self.admin_url, name)
                try:
                    migrate.upgrade(url, apps=loaded.apps)
                except BaseException:
                    drop_database(self.admin_url, name)
                    raise
                self._made[key] = name
            return self._made[key]

    @contextlib.contextmanager
    def clone(self, apps: Sequence[str] = ()) -> Iterator[str]:
        """A fresh copy of the apps' template for one test; dropped after the block."""
        name = f"{self.run_id}_{uuid.uuid4().hex[:8]}"
        url = create_database(self.admin_url, name, template=self.template(apps))
        try:
            yield url
        finally:
            drop_database(self.admin_url, name)

    def close(self) -> None:
        with self._lock:
            for name in self._made.values():
                drop_database(self.admin_url, name)
            self._made.clear()
