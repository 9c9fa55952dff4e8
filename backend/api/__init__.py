"""The FastAPI app factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from backend.api.errors import install_error_handlers
from backend.api.middleware import BodySizeLimit
from backend.api.openapi import TaskhubAPI
from backend.api.routers import (
    alerts,
    backups,
    health,
    jobs,
    queues,
    schedules,
    stats,
    tasks,
    workers,
)
from backend.api.schemas import MAX_BODY_BYTES
from backend.control.waiting import JobWatcher
from backend.dashboard import create_dashboard
from backend.db import create_pool
from backend.declare.apps import LoadedApps, load_apps
from backend.declare.schedules import configured_schedules
from backend.errors import SettingsError
from backend.settings import Settings, load_settings

DESCRIPTION = """\
Enqueue jobs, follow them and control them. Jobs are rows in your PostgreSQL (procrastinate's
`procrastinate_jobs`); workers pick them up through LISTEN/NOTIFY.

Every endpoint but `/health` needs `Authorization: Bearer <token>`: reading needs a token of
scope read or above, enqueueing, cancelling and retrying need operate or above. Errors answer
`{"detail": "..."}`, or, for invalid input (422), `{"detail": [{"loc": [...], "msg": ...,
"type": ...}]}` with one entry per invalid field.
"""

TAGS: list[dict[str, Any]] = [
    {"name": "jobs", "description": "Enqueue, list, read, wait for, cancel and retry jobs."},
    {"name": "tasks", "description": "The registered tasks and the arguments they take."},
    {"name": "queues", "description": "Jobs per queue; pause, resume or purge a queue."},
    {"name": "workers", "description": "Worker processes: live or dead, jobs running and done."},
    {"name": "schedules", "description": "Periodic tasks: next tick, last run."},
    {"name": "backups", "description": "The database's own backups: runs, files, failures."},
    {"name": "alerts", "description": "Alert rules firing now and recent transitions."},
    {"name": "stats", "description": "Statistics that outlive pruning; Prometheus metrics."},
    {"name": "health", "description": "Whether the API and its database can serve."},
]


def create_app(
    settings: Settings | None = None,
    database_url: str | None = None,
    apps: LoadedApps | None = None,
) -> FastAPI:
    """Build the API: taskhub's routers and every app's. The lifespan opens the pool without
    waiting, so /health can say 503."""
    settings = settings or load_settings()
    apps = apps or load_apps(settings)
    # Refuse a bad TASKHUB_SCHEDULES at start, not per request.
    configured_schedules(settings, apps.blueprints)
    url = database_url or settings.database_url
    if not url:
        raise SettingsError(
            "DATABASE_URL is not set (run `taskhub api` to use the embedded server)"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = create_pool(url, settings)
        await pool.open(wait=False)
        watcher = JobWatcher(url)
        await watcher.start()
        app.state.pool, app.state.watcher = pool, watcher
        try:
            yield
        finally:
            await dashboard.state.resources.close()
            await watcher.stop()
            await pool.close()

    app = TaskhubAPI(
        title="taskhub",
        version="0.1.0",
        summary="Background tasks on PostgreSQL alone: status, results and control.",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.apps = apps
    app.state.tokens = settings.api_tokens()
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    install_error_handlers(app)

    app.include_routers(
        health.router,
        tasks.router,
        jobs.router,
        queues.router,
        schedules.router,
        backups.router,
        workers.router,
        alerts.router,
        stats.router,
        *apps.routers,
    )
    dashboard = create_dashboard(settings, database_url=url, apps=apps)
    app.mount("/dashboard", dashboard)
    return app
