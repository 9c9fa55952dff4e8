"""Deferring from a SQLAlchemy session: the job joins the session's transaction.

The job is inserted on the psycopg 3 connection the session already holds, reached through
SQLAlchemy's public ``driver_connection``, so it commits with the session's rows, vanishes
on rollback (or with a rolled-back ``begin_nested()``), and nothing here commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session
from sqlalchemy.orm import Session, scoped_session

from backend import defer as core
from backend.declare.registry import TaskDefinition

__all__ = ["batch_defer", "batch_defer_async", "defer", "defer_async"]

#: A session, or a scoped one such as Flask-SQLAlchemy's ``db.session``.
AnySession = Session | scoped_session[Any]
AnyAsyncSession = AsyncSession | async_scoped_session[Any]


def _require_psycopg(dialect: Dialect) -> None:
    """Refuse before connecting: only psycopg 3 shares its connection with taskhub."""
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        raise TypeError(
            "taskhub defers on PostgreSQL through psycopg 3, but this session's engine uses "
            f"{dialect.name}+{dialect.driver}; create the engine from a "
            "'postgresql+psycopg://' URL (create_engine or create_async_engine)"
        )


def _sync_connection(session: AnySession) -> psycopg.Connection[Any]:
    _require_psycopg(session.get_bind().dialect)
    driver = session.connection().connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(
            f"expected a psycopg.Connection under the session, got {type(driver).__name__}; "
            "use defer_async with an AsyncSession"
        )
    return driver


async def _async_connection(session: AnyAsyncSession) -> psycopg.AsyncConnection[Any]:
    _require_psycopg(session.get_bind().dialect)
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, psycopg.AsyncConnection):
        raise TypeError(
            f"expected a psycopg.AsyncConnection under the session, got {type(driver).__name__}; "
            "create the engine with create_async_engine('postgresql+psycopg://...')"
        )
    return driver


def defer(session: AnySession, task: TaskDefinition[Any], args: core.Args, **options: Any) -> int:
    """Enqueue one job in ``session``'s transaction; the session's commit commits it."""
    return batch_defer(session, task, [args], **options)[0]


def batch_defer(
    session: AnySession, task: TaskDefinition[Any], many_args: Iterable[core.Args], **options: Any
) -> list[int]:
    """Enqueue many jobs of one task in one statement, in ``session``'s transaction."""
    return core.batch_defer_sync(_sync_connection(session), task, many_args, **options)


async def defer_async(
    session: AnyAsyncSession, task: TaskDefinition[Any], args: core.Args, **options: Any
) -> int:
    """Like :func:`defer`, for an ``AsyncSession``."""
    return (await batch_defer_async(session, task, [args], **options))[0]


async def batch_defer_async(
    session: AnyAsyncSession,
    task: TaskDefinition[Any],
    many_args: Iterable[core.Args],
    **options: Any,
) -> list[int]:
    """Like :func:`batch_defer`, for an ``AsyncSession``."""
    jobs = [core.make_job(task, args, **options) for args in many_args]
    return await core.insert_jobs(await _async_connection(session), jobs)
