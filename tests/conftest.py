"""Shared fixtures: a real PostgreSQL server, a migrated template, a fresh clone per test.

``TEST_DATABASE_URL`` selects the server (its database is the admin connection);
without it, one embedded server is started for the whole session.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from backend.db import DictConnection
from backend.declare.apps import builtin_apps
from backend.process import migrate
from backend.process.embedded import embedded_server
from backend.settings import Settings, load_settings

#: taskhub's own task blueprints, as every process loads them.
BLUEPRINTS = builtin_apps().blueprints

RUN_ID = uuid.uuid4().hex[:8]


def with_database(url: str, name: str) -> str:
    """The same server URL, pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


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


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Not under pytest's basetemp: another pytest run may prune that while the server runs.
    home = Path(tempfile.mkdtemp(prefix="taskhub-test-pg-"))
    try:
        with embedded_server(home / "pgdata") as url:
            yield url
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def template_name(admin_url: str) -> Iterator[str]:
    """A database migrated once to head; tests clone it."""
    name = f"taskhub_tpl_{RUN_ID}"
    url = create_database(admin_url, name)
    migrate.upgrade(url)
    yield name
    drop_database(admin_url, name)


@pytest.fixture
def db_url(admin_url: str, template_name: str) -> Iterator[str]:
    """A fresh, migrated database for one test, visible to every connection and process."""
    name = f"taskhub_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name, template=template_name)
    yield url
    drop_database(admin_url, name)


@pytest.fixture
def empty_db_url(admin_url: str) -> Iterator[str]:
    """A fresh database with no schema at all."""
    name = f"taskhub_e_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    yield url
    drop_database(admin_url, name)


ADMIN_TOKEN = "admin-token-0123456789"
OPERATE_TOKEN = "operate-token-0123456789"
READ_TOKEN = "read-token-0123456789"
TOKENS = f"root=admin:{ADMIN_TOKEN},ops=operate:{OPERATE_TOKEN},viewer=read:{READ_TOKEN}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return load_settings(database_url=db_url, data_dir=tmp_path / ".taskhub", tokens=TOKENS)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[DictConnection]:
    async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as connection:
        yield connection


async def count_jobs(conn: DictConnection) -> int:
    cursor = await conn.execute("SELECT count(*) AS n FROM procrastinate_jobs")
    row = await cursor.fetchone()
    assert row is not None
    return int(row["n"])


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait until ``check()`` is true; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.05)
