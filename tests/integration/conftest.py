"""Fixtures that run real taskhub services in-process: the API app and a worker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from backend.api import create_app
from backend.declare.registry import TaskBlueprint
from backend.process.runner import WorkerOptions, run_worker
from backend.runtime.app import build_task_app
from backend.settings import Settings
from tests.conftest import (
    BLUEPRINTS,
    OPERATE_TOKEN,
    RUN_ID,
    bearer,
    create_database,
    drop_database,
    eventually,
)


@contextlib.asynccontextmanager
async def running_api(
    app: FastAPI, token: str | None = OPERATE_TOKEN
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, and a client sending ``token`` (operate scope by default)."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://taskhub",
            headers=bearer(token) if token else {},
        ) as client,
    ):
        yield client


@pytest.fixture
async def client(settings: Settings, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(create_app(settings, db_url)) as api_client:
        yield api_client


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings,
    db_url: str,
    *,
    queues: list[str] | None = None,
    concurrency: int = 4,
    blueprints: Iterable[TaskBlueprint] = BLUEPRINTS,
) -> AsyncIterator[None]:
    """A real worker, as `taskhub worker` runs it, on this test's database."""
    app = build_task_app(db_url, settings, blueprints)
    task = asyncio.create_task(
        run_worker(app, settings, WorkerOptions(queues=queues, concurrency=concurrency))
    )
    await wait_until_listening(db_url, task)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until_listening(db_url: str, worker_task: asyncio.Task[None]) -> None:
    """Wait until the worker's LISTEN connection is up, so NOTIFYs reach it."""

    async def listening() -> bool:
        if worker_task.done():
            worker_task.result()  # surface the worker's error
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            cursor = await conn.execute(
                # procrastinate's channels only (the API's job watcher LISTENs too), and
                # idle: the LISTEN has committed, so NOTIFYs from now on reach the worker.
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                " AND query LIKE 'LISTEN \"procrastinate%%' AND state = 'idle'"
            )
            return await cursor.fetchone() is not None

    await eventually(listening, within=15)


@pytest.fixture
async def twin_urls(admin_url: str, template_name: str) -> AsyncIterator[tuple[str, str]]:
    """Two fresh clones of the migrated template: the same sequences, the same ids."""
    names = [f"taskhub_t_{RUN_ID}_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    urls = [create_database(admin_url, name, template=template_name) for name in names]
    try:
        yield urls[0], urls[1]
    finally:
        for name in names:
            drop_database(admin_url, name)
