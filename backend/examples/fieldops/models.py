"""The Flask app's SQLAlchemy models: schedules, notifications, the audit trail, reports.

Their tables are created by the app's migrations (``migrations/``), not by ``create_all``:
the workers read the same rows with the named SQL in ``sql/fieldops.sql``.
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, DateTime, ForeignKey, MetaData, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "fieldops"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class Schedule(Base):
    """A team's duty on one day; locked the day after, then never edited."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    day: Mapped[datetime.date] = mapped_column(Date)
    assignee: Mapped[str] = mapped_column(String(100))
    locked_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "day": self.day.isoformat(),
            "assignee": self.assignee,
            "locked": self.locked_at is not None,
        }


class Notification(Base):
    """A message for one user; read ones are removed after the retention."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(String(500))
    read_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class AuditEntry(Base):
    """Who changed what: the web app's writes and the workers' locks alike."""

    __tablename__ = "audit_trail"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    action: Mapped[str] = mapped_column(String(50))
    schedule_id: Mapped[int | None] = mapped_column(ForeignKey("schedules.id"))
    actor: Mapped[str] = mapped_column(String(100))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Report(Base):
    """A PDF report asked for in a request and written by ``fieldops.generate_pdf_report``."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    day_from: Mapped[datetime.date] = mapped_column(Date)
    day_to: Mapped[datetime.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    file_name: Mapped[str | None] = mapped_column(String(200))
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "day_from": self.day_from.isoformat(),
            "day_to": self.day_to.isoformat(),
            "status": self.status,
            "job_id": self.job_id,
        }
