"""What every dashboard request needs: its resources (opened on first use), the session, and
the checks an action passes (operate scope, same origin, CSRF token).

Mounted apps get no lifespan events from their parent, so the pool and the LISTEN connection
open on the first request that needs them; ``app.state.resources.close()`` ends them (taskhub's
API does so when it stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

from fastapi import Request
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from backend.auth import Scope
from backend.dashboard.live import LiveHub
from backend.dashboard.passwords import parse_users
from backend.dashboard.rendering import Templates
from backend.dashboard.sessions import (
    COOKIE,
    CookieSigner,
    Logins,
    LoginThrottle,
    Session,
    derived_secret,
)
from backend.dashboard.settings import DashboardSettings
from backend.db import DictConnection, create_pool
from backend.declare.apps import LoadedApps
from backend.errors import DatabaseUnavailable, TaskhubError
from backend.settings import Settings

#: Pages, the live streams and form posts: the dashboard's connections stay few.
POOL_MAX_SIZE = 4


class DashboardError(TaskhubError):
    """A refusal shown as a page with its status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class LoginRequired(Exception):
    """No valid session: a page redirects to the login form; anything else answers 401."""


class Resources:
    """The pool and the live hub, opened on first use."""

    def __init__(self, url: str, settings: Settings) -> None:
        self._url = url
        self._settings = settings.model_copy(
            update={"pool_min_size": 0, "pool_max_size": POOL_MAX_SIZE}
        )
        self._pool: AsyncConnectionPool[DictConnection] | None = None
        self.hub = LiveHub(url)
        self._lock = asyncio.Lock()

    async def pool(self) -> AsyncConnectionPool[DictConnection]:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    pool = create_pool(self._url, self._settings)
                    await pool.open(wait=False)
                    self.hub.start()
                    self._pool = pool
        return self._pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[DictConnection]:
        """An autocommit connection; a 503 page when none comes in time."""
        pool = await self.pool()
        try:
            async with pool.connection(timeout=self._settings.database_timeout) as conn:
                yield conn
        except PoolTimeout:
            raise DatabaseUnavailable("the database is unreachable; try again shortly") from None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[DictConnection]:
        """One transaction: an action and its audit row commit together."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def close(self) -> None:
        await self.hub.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class Dashboard:
    """What every request needs: settings, apps, logins, the cookie signer and resources."""

    def __init__(
        self,
        settings: Settings,
        dashboard_settings: DashboardSettings,
        apps: LoadedApps,
        url: str,
    ) -> None:
        self.settings = settings
        self.dashboard_settings = dashboard_settings
        self.apps = apps
        tokens, users = settings.api_tokens(), parse_users(dashboard_settings.users)
        self.logins = Logins(tokens, users)
        secret = dashboard_settings.secret
        self.signer = CookieSigner(
            secret.get_secret_value() if secret else derived_secret(tokens, users),
            max_age=dashboard_settings.session_hours * 3600,
        )
        self.resources = Resources(url, settings)
        self.throttle = LoginThrottle()
        self.templates = Templates()

    def session_of(self, request: Request) -> Session | None:
        cookie = request.cookies.get(COOKIE)
        payload = self.signer.load(cookie) if cookie else None
        return self.logins.resume(payload) if payload else None

    def cookie_secure(self, request: Request) -> bool:
        configured = self.dashboard_settings.cookie_secure
        return configured if configured is not None else request.url.scheme == "https"


def dashboard_of(request: Request) -> Dashboard:
    return cast(Dashboard, request.app.state.dashboard)


async def viewer(request: Request) -> Session:
    """The logged-in user (any scope), or LoginRequired."""
    session = dashboard_of(request).session_of(request)
    if session is None:
        raise LoginRequired
    return session


def _same_origin(request: Request) -> bool:
    """A browser's Origin (or Referer) names this host; requests without either pass (the
    CSRF token still guards them)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def operator(request: Request) -> Session:
    """A user with the operate scope whose form carries the session's CSRF token."""
    session = await viewer(request)
    if not _same_origin(request):
        raise DashboardError(403, "this action came from another site and was refused")
    form = await request.form()
    presented = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
    if not hmac.compare_digest(presented.encode(), session.csrf.encode()):
        raise DashboardError(
            403, "the form's CSRF token is missing or stale: reload the page and try again"
        )
    if session.scope < Scope.operate:
        raise DashboardError(
            403, f"this needs the operate scope; {session.user} has {session.scope.name}"
        )
    return session
