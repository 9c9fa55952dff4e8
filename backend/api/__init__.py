"""The FastAPI app factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from backend.api.routers import health, jobs, tasks
from backend.db import create_pool
from backend.errors import InvalidJobArguments, SettingsError, TaskhubError
from backend.settings import Settings, load_settings
from backend.waiting import JobWatcher


def create_app(settings: Settings | None = None, database_url: str | None = None) -> FastAPI:
    """Build the API. The lifespan opens the pool without waiting, so /health can say 503."""
    settings = settings or load_settings()
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
            await watcher.stop()
            await pool.close()

    app = FastAPI(
        title="taskhub",
        version="0.1.0",
        summary="Background tasks on PostgreSQL alone: status, results and control.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.tokens = settings.api_tokens()

    @app.exception_handler(TaskhubError)
    async def taskhub_error(request: Request, exc: TaskhubError) -> JSONResponse:
        if isinstance(exc, InvalidJobArguments):
            # The same shape as FastAPI's own 422, with the field at fault under "body".
            detail = [{**error, "loc": ["body", *error["loc"]]} for error in exc.errors]
            return JSONResponse({"detail": detail}, status_code=exc.status_code)
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    for module in (health, tasks, jobs):
        app.include_router(module.router)
    return app
