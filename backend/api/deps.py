"""Request dependencies: the pool, the transaction boundary, the caller's token."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from backend.auth import ApiToken, LoginThrottle, Scope, authenticate
from backend.control.waiting import JobWatcher
from backend.db import DictConnection
from backend.declare.apps import LoadedApps
from backend.errors import DatabaseUnavailable, TaskhubError

logger = logging.getLogger(__name__)


class Unauthenticated(TaskhubError):
    """No valid API token."""

    status_code = 401


class TooManyFailures(TaskhubError):
    """Too many bad tokens from this address lately: guessing stays slow."""

    status_code = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(int(retry_after))}


class Forbidden(TaskhubError):
    """The token's scope does not allow this."""

    status_code = 403


async def get_pool(request: Request) -> AsyncConnectionPool[DictConnection]:
    # async, as every dependency here: FastAPI runs a plain ``def`` in its thread pool.
    return cast(AsyncConnectionPool[DictConnection], request.app.state.pool)


async def get_watcher(request: Request) -> JobWatcher:
    return cast(JobWatcher, request.app.state.watcher)


async def get_apps(request: Request) -> LoadedApps:
    """The apps this API serves: their tasks, and their settings as read at start."""
    return cast(LoadedApps, request.app.state.apps)


Apps = Annotated[LoadedApps, Depends(get_apps)]


@contextlib.asynccontextmanager
async def connection(
    pool: AsyncConnectionPool[DictConnection], timeout: float
) -> AsyncIterator[DictConnection]:
    """A pooled connection, or a 503 when none comes within ``timeout`` seconds."""
    try:
        async with pool.connection(timeout=timeout) as conn:
            yield conn
    except PoolTimeout:
        raise DatabaseUnavailable("the database is unreachable; try again shortly") from None


async def get_conn(
    request: Request,
    pool: Annotated[AsyncConnectionPool[DictConnection], Depends(get_pool)],
) -> AsyncIterator[DictConnection]:
    """One transaction per request: committed before the response is sent, rolled back on error."""
    async with (
        connection(pool, request.app.state.settings.database_timeout) as conn,
        conn.transaction(),
    ):
        yield conn


def token_throttle(request: Request) -> LoginThrottle:
    """Bad tokens per client address, as the dashboard counts failed logins."""
    throttle = getattr(request.app.state, "token_throttle", None)
    if throttle is None:
        throttle = request.app.state.token_throttle = LoginThrottle()
    return cast(LoginThrottle, throttle)


bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="opaque token",
    description=(
        "An API token from TASKHUB_TOKENS (`[name=]scope:token`, scopes read < operate < admin),"
        " or, when none is configured, the admin token taskhub generates in"
        " `<TASKHUB_DATA_DIR>/admin-token`. Reading needs read; enqueueing, cancelling and"
        " retrying need operate."
    ),
)


def require(scope: Scope) -> Callable[..., Coroutine[Any, Any, ApiToken]]:
    """A dependency admitting tokens of ``scope`` or above; it returns the caller's token."""

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> ApiToken:
        if credentials is None:
            raise Unauthenticated("a valid API token is required: Authorization: Bearer <token>")
        throttle = token_throttle(request)
        client = request.client.host if request.client else "unknown"
        wait = throttle.retry_after(client)
        if wait is not None:
            raise TooManyFailures(
                f"too many invalid API tokens from {client}: try again in {wait:.0f} s", wait
            )
        token = authenticate(request.app.state.tokens, credentials.credentials)
        if token is None:
            throttle.failed(client)
            # Never the token itself: a near-miss of a real one would leak it.
            logger.warning(
                "refused an invalid API token from %s (%s %s)",
                client,
                request.method,
                request.url.path,
            )
            raise Unauthenticated("a valid API token is required: Authorization: Bearer <token>")
        if token.scope < scope:
            raise Forbidden(f"this needs the {scope.name} scope; the token has {token.scope.name}")
        return token

    return check


Pool = Annotated[AsyncConnectionPool[DictConnection], Depends(get_pool)]
Conn = Annotated[DictConnection, Depends(get_conn, scope="function")]
Watcher = Annotated[JobWatcher, Depends(get_watcher)]
Reader = Annotated[ApiToken, Depends(require(Scope.read))]
Operator = Annotated[ApiToken, Depends(require(Scope.operate))]
