"""The dashboard's ASGI app: its routes, static files, security headers and error pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast
from urllib.parse import quote

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.dashboard import pages
from backend.dashboard.context import Dashboard, LoginRequired, dashboard_of
from backend.dashboard.rendering import base_path
from backend.dashboard.settings import DashboardSettings
from backend.declare.apps import LoadedApps, load_apps
from backend.errors import DatabaseUnavailable, SettingsError, TaskhubError
from backend.settings import Settings, load_settings

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _login_redirect(request: Request) -> Response:
    here = request.url.path[len(base_path(request)) :] or "/"
    if request.url.query:
        here += "?" + request.url.query
    return RedirectResponse(
        f"{base_path(request)}/login?next={quote(here, safe='')}", status_code=303
    )


def _wants_page(request: Request) -> bool:
    return request.method in ("GET", "HEAD") and "/live/" not in request.url.path


def _install_error_pages(app: FastAPI) -> None:
    async def login_required(request: Request, exc: Exception) -> Response:
        if _wants_page(request):
            return _login_redirect(request)
        return _error_page(request, 401, "log in first: this needs a dashboard session")

    async def taskhub_error(request: Request, exc: Exception) -> Response:
        error = cast(TaskhubError, exc)
        page = _error_page(request, error.status_code, error.message)
        page.headers.update(getattr(error, "headers", None) or {})
        return page

    async def database_gone(request: Request, exc: Exception) -> Response:
        # A restart, a cut network, a failover (to a read-only server, too): a 503 page the
        # user can reload, not a 500 (or a reset connection, when the error came mid-page).
        read_only = isinstance(exc, psycopg.errors.ReadOnlySqlTransaction)
        message = (
            "the database is read-only for now (a failover?); try again shortly"
            if read_only
            else "the database connection was lost; try again shortly"
        )
        page = _error_page(request, 503, message)
        page.headers.update(DatabaseUnavailable.headers)
        return page

    async def invalid(request: Request, exc: Exception) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'][1:])}: {error['msg']}"
            for error in cast(RequestValidationError, exc).errors()
        )
        return _error_page(request, 422, f"invalid input: {problems}")

    async def http_error(request: Request, exc: Exception) -> Response:
        error = cast(StarletteHTTPException, exc)
        if error.status_code == 404:
            return _error_page(request, 404, "no such page")
        return _error_page(request, error.status_code, str(error.detail))

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(TaskhubError, taskhub_error)
    app.add_exception_handler(psycopg.OperationalError, database_gone)
    app.add_exception_handler(psycopg.errors.ReadOnlySqlTransaction, database_gone)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)


def _error_page(request: Request, status: int, message: str) -> Response:
    dashboard = dashboard_of(request)
    return dashboard.templates.page(
        request,
        "error.html",
        session=dashboard.session_of(request),
        status_code=status,
        status=status,
        message=message,
    )


def create_dashboard(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    apps: LoadedApps | None = None,
    dashboard_settings: DashboardSettings | None = None,
) -> FastAPI:
    """The dashboard as an ASGI app, to mount anywhere: ``app.mount("/jobs-ui", ...)``.

    Without arguments it reads DATABASE_URL and the TASKHUB_* settings, as taskhub does.
    """
    settings = settings or load_settings()
    apps = apps or load_apps(settings)
    url = database_url or settings.database_url
    if not url:
        raise SettingsError("DATABASE_URL is not set: the dashboard reads the jobs from it")
    try:
        dashboard_settings = dashboard_settings or DashboardSettings()
    except ValueError as exc:
        raise SettingsError(f"invalid TASKHUB_DASHBOARD_* setting: {exc}") from None

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.dashboard = Dashboard(settings, dashboard_settings, apps, url)
    app.state.resources = app.state.dashboard.resources
    _install_error_pages(app)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            if name == "Cache-Control" and request.url.path.startswith(
                f"{base_path(request)}/static/"
            ):
                continue
            response.headers.setdefault(name, value)
        return response

    app.mount("/static", StaticFiles(packages=[("backend.dashboard", "static")]), name="static")
    app.include_router(pages.router)
    return app
