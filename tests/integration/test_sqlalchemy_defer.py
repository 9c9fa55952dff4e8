"""A job deferred on a SQLAlchemy session commits with the session's rows, or not at all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, String, create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from backend.errors import AlreadyQueued, InvalidJobArguments
from backend.integrations import sqlalchemy as th
from backend.tasks.builtin import PingArgs, ping


class Base(DeclarativeBase):
    pass


class Visit(Base):
    __tablename__ = "visits"
    id: Mapped[int] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(String(50))


def with_driver(db_url: str, driver: str) -> str:
    return make_url(db_url).set(drivername=f"postgresql+{driver}").render_as_string(False)


def committed(db_url: str) -> tuple[list[str], list[Any]]:
    """What another connection sees: the visits' sites and the jobs' messages."""
    with psycopg.connect(db_url) as conn:
        sites = [r[0] for r in conn.execute("SELECT site FROM visits ORDER BY id")]
        messages = [
            r[0]
            for r in conn.execute("SELECT args->>'message' FROM procrastinate_jobs ORDER BY id")
        ]
    return sites, messages


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_engine(with_driver(db_url, "psycopg"))
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(db_url: str, engine: Engine) -> AsyncIterator[AsyncEngine]:
    """An async engine on the same database; ``engine`` has created the table."""
    async_engine = create_async_engine(with_driver(db_url, "psycopg"))
    yield async_engine
    await async_engine.dispose()


# Sync Session


def test_commit_keeps_the_row_and_the_job(engine: Engine, db_url: str) -> None:
    with Session(engine) as session:
        visit = Visit(site="north gate")
        session.add(visit)
        session.flush()
        job_id = th.defer(session, ping, PingArgs(message=f"visit {visit.id}"))
        assert job_id > 0
        # Not visible to anyone else before the session commits.
        assert committed(db_url) == ([], [])
        session.commit()
    assert committed(db_url) == (["north gate"], ["visit 1"])


def test_rollback_leaves_neither(engine: Engine, db_url: str) -> None:
    with Session(engine) as session:
        session.add(Visit(site="north gate"))
        ids = th.batch_defer(session, ping, [{"message": "a"}, {"message": "b"}])
        assert len(ids) == 2
        session.rollback()
    assert committed(db_url) == ([], [])


def test_an_exception_in_session_begin_rolls_the_job_back(engine: Engine, db_url: str) -> None:
    with pytest.raises(RuntimeError, match="declined"), Session(engine) as session, session.begin():
        session.add(Visit(site="north gate"))
        th.defer(session, ping, {"message": "visit"})
        raise RuntimeError("declined")
    assert committed(db_url) == ([], [])


def test_a_rolled_back_savepoint_drops_only_its_job(engine: Engine, db_url: str) -> None:
    with Session(engine) as session:
        session.add(Visit(site="kept"))
        th.defer(session, ping, {"message": "outer"})
        nested = session.begin_nested()
        session.add(Visit(site="dropped"))
        th.defer(session, ping, {"message": "inner"})
        nested.rollback()
        session.commit()
    assert committed(db_url) == (["kept"], ["outer"])


def test_bad_arguments_raise_before_writing_and_the_session_goes_on(
    engine: Engine, db_url: str
) -> None:
    with Session(engine) as session:
        session.add(Visit(site="north gate"))
        with pytest.raises(InvalidJobArguments, match="sleep"):
            th.defer(session, ping, {"message": "x", "sleep": -1})
        with pytest.raises(InvalidJobArguments, match="sleep"):
            th.batch_defer(session, ping, [{"message": "ok"}, {"sleep": "soon"}])
        th.defer(session, ping, {"message": "valid"})
        session.commit()
    assert committed(db_url) == (["north gate"], ["valid"])


def test_a_taken_queueing_lock_in_a_savepoint_keeps_the_session(
    engine: Engine, db_url: str
) -> None:
    with Session(engine) as session:
        th.defer(session, ping, {"message": "first"}, queueing_lock="visit-1")
        session.add(Visit(site="north gate"))
        session.flush()
        with pytest.raises(AlreadyQueued, match="visit-1"), session.begin_nested():
            th.defer(session, ping, {"message": "second"}, queueing_lock="visit-1")
        assert session.scalar(select(func.count()).select_from(Visit)) == 1
        session.commit()
    assert committed(db_url) == (["north gate"], ["first"])


def test_psycopg2_is_refused_with_the_url_to_use(db_url: str) -> None:
    engine = create_engine(with_driver(db_url, "psycopg2"))
    try:
        with Session(engine) as session:
            with pytest.raises(TypeError, match=r"postgresql\+psycopg2.*'postgresql\+psycopg://'"):
                th.defer(session, ping, {"message": "x"})
            assert not session.in_transaction()
    finally:
        engine.dispose()
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone() == (0,)


def test_another_database_is_refused() -> None:
    engine = create_engine("sqlite://")
    try:
        with (
            Session(engine) as session,
            pytest.raises(TypeError, match=r"sqlite\+pysqlite.*'postgresql\+psycopg://'"),
        ):
            th.defer(session, ping, {"message": "x"})
    finally:
        engine.dispose()


# AsyncSession


async def test_async_commit_keeps_the_row_and_the_job(
    async_engine: AsyncEngine, db_url: str
) -> None:
    async with AsyncSession(async_engine) as session:
        session.add(Visit(site="east yard"))
        await session.flush()
        assert await th.defer_async(session, ping, {"message": "visit"}) > 0
        assert await th.batch_defer_async(session, ping, []) == []
        assert committed(db_url) == ([], [])
        await session.commit()
    assert committed(db_url) == (["east yard"], ["visit"])


async def test_async_rollback_leaves_neither(async_engine: AsyncEngine, db_url: str) -> None:
    with pytest.raises(RuntimeError, match="declined"):
        async with AsyncSession(async_engine) as session, session.begin():
            session.add(Visit(site="east yard"))
            ids = await th.batch_defer_async(session, ping, [{"message": "a"}, {"message": "b"}])
            assert len(ids) == 2
            raise RuntimeError("declined")
    assert committed(db_url) == ([], [])


async def test_async_rolled_back_savepoint_drops_only_its_job(
    async_engine: AsyncEngine, db_url: str
) -> None:
    async with AsyncSession(async_engine) as session:
        session.add(Visit(site="kept"))
        await th.defer_async(session, ping, {"message": "outer"})
        nested = await session.begin_nested()
        session.add(Visit(site="dropped"))
        await th.defer_async(session, ping, {"message": "inner"})
        await nested.rollback()
        await session.commit()
    assert committed(db_url) == (["kept"], ["outer"])


async def test_async_bad_arguments_raise_before_writing(
    async_engine: AsyncEngine, db_url: str
) -> None:
    async with AsyncSession(async_engine) as session:
        session.add(Visit(site="east yard"))
        with pytest.raises(InvalidJobArguments, match="sleep"):
            await th.defer_async(session, ping, {"sleep": -1})
        await th.defer_async(session, ping, {"message": "valid"})
        await session.commit()
    assert committed(db_url) == (["east yard"], ["valid"])


async def test_asyncpg_is_refused_with_the_url_to_use(db_url: str) -> None:
    engine = create_async_engine(with_driver(db_url, "asyncpg"))
    try:
        async with AsyncSession(engine) as session:
            with pytest.raises(TypeError, match=r"postgresql\+asyncpg.*'postgresql\+psycopg://'"):
                await th.defer_async(session, ping, {"message": "x"})
            assert not session.in_transaction()
    finally:
        await engine.dispose()
