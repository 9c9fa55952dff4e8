"""The field operations web app (Flask, SQLAlchemy), as the seed's team runs it.

Each request has one SQLAlchemy session; it commits when the response is a success and rolls
back otherwise (an error response, an exception). Jobs are deferred *in that session*
(``backend.integrations.sqlalchemy.defer``): a schedule and its notification job, a report row
and its PDF job commit together or not at all. That is why the seed's APScheduler dual-run
fallback (enqueue to Celery, else run the work in the web process) is gone: deferring is an
INSERT in the request's own transaction, so it cannot fail apart from the business write,
and a worker that is down only delays the job, which waits in PostgreSQL.

Run it with ``flask --app backend.examples.fieldops.web:create_app run``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, abort, g, jsonify, request, send_from_directory
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from backend.declare.apps import load_app_settings
from backend.examples.fieldops.blueprint import GENERATE_PDF_REPORT, NOTIFY_ASSIGNEE, declared
from backend.examples.fieldops.models import AuditEntry, Notification, Report, Schedule
from backend.examples.fieldops.settings import FieldopsSettings
from backend.integrations.sqlalchemy import defer
from backend.settings import load_settings

views = Blueprint("fieldops", __name__)


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    day: datetime.date
    assignee: str = Field(min_length=1, max_length=100)


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedules: list[ScheduleIn] = Field(min_length=1, max_length=500)


class ScheduleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=200)
    assignee: str | None = Field(default=None, min_length=1, max_length=100)


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day_from: datetime.date
    day_to: datetime.date

    @model_validator(mode="after")
    def _ordered(self) -> ReportIn:
        if self.day_from > self.day_to:
            raise ValueError("day_from must not be after day_to")
        return self


@dataclass(frozen=True)
class FieldopsState:
    engine: Engine
    sessions: sessionmaker[Session]
    reports_dir: Path


def sqlalchemy_url(url: str) -> str:
    """``postgresql://...`` as SQLAlchemy's psycopg 3 dialect names it."""
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def create_app(
    settings: FieldopsSettings | None = None,
    *,
    database_url: str | None = None,
    data_dir: Path | None = None,
) -> Flask:
    """The app factory. The database is ``database_url``, else TASKHUB_FIELDOPS_DATABASE_URL,
    else taskhub's DATABASE_URL; reports are read where the workers write them."""
    settings = settings or load_app_settings(FieldopsSettings)
    url = database_url or settings.database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError(
            "the field operations app needs a database: set TASKHUB_FIELDOPS_DATABASE_URL "
            "or DATABASE_URL (postgresql://...)"
        )
    engine = create_engine(sqlalchemy_url(url), pool_pre_ping=True)
    app = Flask(__name__)
    app.extensions["fieldops"] = FieldopsState(
        engine=engine,
        sessions=sessionmaker(engine),
        reports_dir=settings.reports_path(data_dir or load_settings().data_dir),
    )
    app.register_blueprint(views)
    app.before_request(_open_session)
    app.after_request(_finish_session)
    app.teardown_request(_close_session)
    app.register_error_handler(ValidationError, _invalid)
    app.register_error_handler(IntegrityError, _conflict)
    return app


def state() -> FieldopsState:
    from flask import current_app

    found: FieldopsState = current_app.extensions["fieldops"]
    return found


def session() -> Session:
    """The request's session."""
    found: Session = g.fieldops_session
    return found


def _open_session() -> None:
    g.fieldops_session = state().sessions()


def _finish_session(response: Response) -> Response:
    # The boundary: a success commits the rows and their jobs; anything else rolls both back.
    if response.status_code < 400:
        session().commit()
    else:
        session().rollback()
    return response


def _close_session(exc: BaseException | None) -> None:
    found = g.pop("fieldops_session", None)
    if found is not None:
        found.close()  # rolls back what was not committed (an unhandled exception)


def _invalid(exc: ValidationError) -> tuple[Response, int]:
    errors = [
        {"loc": list(error["loc"]), "msg": error["msg"]} for error in exc.errors(include_url=False)
    ]
    return jsonify(error="invalid request", details=errors), 422


def _conflict(exc: IntegrityError) -> tuple[Response, int]:
    return jsonify(error="a schedule with this title already exists on that day"), 409


def _body(model: type[BaseModel]) -> Any:
    return model.model_validate(request.get_json(force=True, silent=False))


def _add_schedule(db: Session, data: ScheduleIn, actor: str) -> tuple[Schedule, int]:
    schedule = Schedule(title=data.title, day=data.day, assignee=data.assignee)
    db.add(schedule)
    db.flush()  # the id, and a duplicate refused here
    job = defer(db, declared(NOTIFY_ASSIGNEE), {"schedule_id": schedule.id})
    db.add(AuditEntry(action="schedule_created", schedule_id=schedule.id, actor=actor, details={}))
    return schedule, job


def _actor() -> str:
    return request.headers.get("X-User", "anonymous")


@views.post("/schedules")
def create_schedule() -> tuple[Response, int]:
    schedule, job = _add_schedule(session(), _body(ScheduleIn), _actor())
    return jsonify(schedule=schedule.as_dict(), job_id=job), 201


@views.post("/schedules/bulk")
def create_schedules() -> tuple[Response, int]:
    """All or nothing: one duplicate refuses the batch, and none of its jobs is left."""
    db, actor = session(), _actor()
    created = [_add_schedule(db, item, actor) for item in _body(BulkIn).schedules]
    return jsonify(
        schedules=[schedule.as_dict() for schedule, _ in created],
        job_ids=[job for _, job in created],
    ), 201


@views.patch("/schedules/<int:schedule_id>")
def change_schedule(schedule_id: int) -> tuple[Response, int]:
    db = session()
    change = _body(ScheduleChange)
    schedule = db.get(Schedule, schedule_id, with_for_update=True)
    if schedule is None:
        abort(404, f"schedule {schedule_id} does not exist")
    if schedule.locked_at is not None:
        return jsonify(
            error=f"schedule {schedule_id} was locked on {schedule.locked_at:%Y-%m-%d}"
            ": past days are read-only"
        ), 409
    before = schedule.as_dict()
    for name, value in change.model_dump(exclude_none=True).items():
        setattr(schedule, name, value)
    db.add(
        AuditEntry(
            action="schedule_changed",
            schedule_id=schedule.id,
            actor=_actor(),
            details={"before": before, "after": schedule.as_dict()},
        )
    )
    return jsonify(schedule=schedule.as_dict()), 200


@views.get("/schedules/<int:schedule_id>/audit")
def schedule_audit(schedule_id: int) -> tuple[Response, int]:
    rows = session().scalars(
        select(AuditEntry).where(AuditEntry.schedule_id == schedule_id).order_by(AuditEntry.id)
    )
    return jsonify(
        audit=[{"action": row.action, "actor": row.actor, "details": row.details} for row in rows]
    ), 200


@views.post("/notifications/<int:notification_id>/read")
def read_notification(notification_id: int) -> tuple[Response, int]:
    notification = session().get(Notification, notification_id)
    if notification is None:
        abort(404, f"notification {notification_id} does not exist")
    notification.read_at = notification.read_at or datetime.datetime.now(datetime.UTC)
    return jsonify(id=notification.id, read_at=notification.read_at.isoformat()), 200


@views.post("/reports")
def request_report() -> tuple[Response, int]:
    db, data = session(), _body(ReportIn)
    report = Report(day_from=data.day_from, day_to=data.day_to, status="pending")
    db.add(report)
    db.flush()
    report.job_id = defer(db, declared(GENERATE_PDF_REPORT), {"report_id": report.id})
    return jsonify(report=report.as_dict()), 202


@views.get("/reports/<int:report_id>")
def show_report(report_id: int) -> tuple[Response, int]:
    report = session().get(Report, report_id)
    if report is None:
        abort(404, f"report {report_id} does not exist")
    return jsonify(report=report.as_dict()), 200


@views.get("/reports/<int:report_id>/pdf")
def download_report(report_id: int) -> Response:
    report = session().get(Report, report_id)
    if report is None or report.file_name is None:
        abort(404, f"report {report_id} is not ready (or does not exist)")
    return send_from_directory(state().reports_dir, report.file_name, mimetype="application/pdf")
