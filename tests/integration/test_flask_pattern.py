"""The Flask pattern (docs/flask.md): defer in the request's session, app context in tasks."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from flask import Flask, current_app, request
from pydantic import BaseModel
from sqlalchemy import Engine, String, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, scoped_session, sessionmaker

from backend.declare.registry import TaskBlueprint
from backend.integrations.flask import app_context, flask_app, forget_apps
from backend.integrations.sqlalchemy import defer
from backend.runtime.context import TaskContext
from backend.settings import Settings
from tests.conftest import eventually
from tests.integration.conftest import running_worker

DB_ENV = "FIELDTEST_DATABASE_URL"


class Base(DeclarativeBase):
    pass


class Visit(Base):
    __tablename__ = "visits"
    id: Mapped[int] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(String(50))
    notified_by: Mapped[str | None] = mapped_column(String(50))
    notified_pid: Mapped[int | None]


#: The process ids that built the app, and the engines to dispose after each test.
BUILDS: list[int] = []
ENGINES: list[Engine] = []


def create_app() -> Flask:
    """The team's factory, as Flask's docs write it: settings from the environment."""
    BUILDS.append(os.getpid())
    app = Flask(__name__)
    app.config["SITE_NAME"] = "fieldops-test"
    url = make_url(os.environ[DB_ENV]).set(drivername="postgresql+psycopg")
    engine = create_engine(url)
    ENGINES.append(engine)
    db_session = scoped_session(sessionmaker(engine))
    app.extensions["db_session"] = db_session

    @app.teardown_appcontext
    def remove_session(exc: BaseException | None) -> None:
        db_session.remove()  # rolls back whatever the request or task did not commit

    @app.post("/visits")
    def create_visit() -> tuple[dict[str, Any], int]:
        visit = Visit(site=request.form["site"])
        db_session.add(visit)
        db_session.flush()
        task = audit_visit if request.form.get("audit") else notify_visit
        defer(db_session, task, {"visit_id": visit.id})
        if request.form.get("fail"):
            raise RuntimeError("inspection failed")
        db_session.commit()
        return {"id": visit.id}, 201

    return app


class VisitArgs(BaseModel):
    visit_id: int


blueprint = TaskBlueprint()


def mark_notified(visit_id: int) -> None:
    db_session = current_app.extensions["db_session"]
    visit = db_session.get(Visit, visit_id)
    visit.notified_by = current_app.config["SITE_NAME"]
    visit.notified_pid = os.getpid()
    db_session.commit()


@blueprint.task(name="fieldtest.notify_visit")
@app_context(create_app)
def notify_visit(args: VisitArgs) -> None:
    """A sync task, run in a worker thread."""
    mark_notified(args.visit_id)


@blueprint.task(name="fieldtest.audit_visit", time_limit=60)
@app_context(create_app)
def audit_visit(args: VisitArgs, ctx: TaskContext) -> None:
    """A sync task with a time limit: it runs in a child forked from the worker."""
    mark_notified(args.visit_id)


@blueprint.task(name="fieldtest.site_name")
@app_context(create_app)
async def site_name(args: VisitArgs) -> str:
    return f"{current_app.config['SITE_NAME']}:{args.visit_id}"


@pytest.fixture
def app(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.setenv(DB_ENV, db_url)
    forget_apps()
    BUILDS.clear()
    app = flask_app(create_app)
    Base.metadata.create_all(ENGINES[0])
    yield app
    forget_apps()
    while ENGINES:
        ENGINES.pop().dispose()


def rows(db_url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with psycopg.connect(db_url) as conn:
        visits = conn.execute("SELECT site, notified_by FROM visits ORDER BY id").fetchall()
        jobs = conn.execute("SELECT task_name, args FROM procrastinate_jobs ORDER BY id").fetchall()
    return visits, jobs


def test_a_post_commits_the_row_and_its_job(app: Flask, db_url: str) -> None:
    response = app.test_client().post("/visits", data={"site": "north gate"})
    assert response.status_code == 201
    visit_id = response.json["id"] if response.json else None
    assert rows(db_url) == (
        [("north gate", None)],
        [("fieldtest.notify_visit", {"visit_id": visit_id})],
    )


def test_a_handler_that_raises_leaves_no_row_and_no_job(app: Flask, db_url: str) -> None:
    client = app.test_client()
    assert client.post("/visits", data={"site": "north gate", "fail": "1"}).status_code == 500
    assert rows(db_url) == ([], [])
    # The failed request's session was removed: the next request works.
    assert client.post("/visits", data={"site": "east yard"}).status_code == 201
    assert rows(db_url)[0] == [("east yard", None)]


async def test_the_worker_runs_jobs_with_current_app_built_once(
    app: Flask, db_url: str, settings: Settings
) -> None:
    client = app.test_client()
    for site in ("north gate", "east yard"):
        assert client.post("/visits", data={"site": site}).status_code == 201
    async with running_worker(settings, db_url, blueprints=[blueprint]):

        async def notified() -> bool:
            return rows(db_url)[0] == [
                ("north gate", "fieldops-test"),
                ("east yard", "fieldops-test"),
            ]

        await eventually(notified)
    # The worker's threads share the app the test built: one process, one app.
    assert BUILDS.count(os.getpid()) == len(BUILDS) == 1


async def test_a_forked_sync_task_builds_its_own_app(
    app: Flask, db_url: str, settings: Settings
) -> None:
    response = app.test_client().post("/visits", data={"site": "north gate", "audit": "1"})
    assert response.status_code == 201
    async with running_worker(settings, db_url, blueprints=[blueprint]):

        async def audited() -> bool:
            with psycopg.connect(db_url) as conn:
                row = conn.execute("SELECT notified_by, notified_pid FROM visits").fetchone()
            return row is not None and row[0] == "fieldops-test"

        await eventually(audited)
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT notified_pid FROM visits").fetchone()
    assert row is not None
    assert row[0] != os.getpid()


async def test_an_async_task_sees_current_app(app: Flask) -> None:
    assert await site_name.func(VisitArgs(visit_id=7)) == "fieldops-test:7"


def test_outside_the_decorator_there_is_no_app_context() -> None:
    with pytest.raises(RuntimeError, match="application context"):
        mark_notified(1)


def test_the_decorated_task_keeps_its_declaration() -> None:
    assert notify_visit.args_model is VisitArgs
    assert audit_visit.takes_context
    assert not notify_visit.takes_context
    assert site_name.is_async
    assert not notify_visit.is_async


def test_the_app_is_built_once_under_concurrent_first_use() -> None:
    built: list[Flask] = []
    release = threading.Event()

    def slow_factory() -> Flask:
        release.wait(1)
        built.append(Flask("slow"))
        return built[-1]

    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(flask_app, slow_factory) for _ in range(8)]
            release.set()
            apps = {id(future.result()) for future in futures}
    finally:
        forget_apps()
    assert len(built) == 1
    assert apps == {id(built[0])}
