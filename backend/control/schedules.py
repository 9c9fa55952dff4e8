"""Schedules as operators see them: the next tick, computed here, and the last run's job."""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel, Field

from backend.declare.registry import TaskBlueprint
from backend.declare.schedules import configured_schedules, next_tick
from backend.queries import QUERIES
from backend.settings import Settings


class ScheduleRun(BaseModel):
    """The job of a schedule's latest tick."""

    job_id: int | None = Field(description="Null when the job has since been pruned.")
    status: str | None
    tick_at: datetime.datetime = Field(description="The tick the job ran for.")
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None


class ScheduleView(BaseModel):
    """A schedule: when it runs next, and how its latest run went."""

    task: str
    cron: str | None = Field(description="Null when turned off in TASKHUB_SCHEDULES.")
    declared_cron: str | None = Field(description="The cron the task declares in code.")
    timezone: str
    queue: str
    enabled: bool
    next_run_at: datetime.datetime | None = Field(description="In the schedule's timezone.")
    last_run: ScheduleRun | None


async def list_schedules(
    conn: AsyncConnection[Any],
    settings: Settings,
    *,
    now: datetime.datetime | None = None,
    blueprints: Iterable[TaskBlueprint],
) -> list[ScheduleView]:
    """Every schedule with its next tick (computed here) and last run (from the database)."""
    timezone = settings.tzinfo()
    at = (now or datetime.datetime.now(datetime.UTC)).timestamp()
    schedules = configured_schedules(settings, blueprints)
    cursor = await conn.execute(
        QUERIES["last_schedule_runs"], {"tasks": [schedule.task_name for schedule in schedules]}
    )
    last_runs = {row["task_name"]: row for row in await cursor.fetchall()}
    views = []
    for schedule in schedules:
        run = last_runs.get(schedule.task_name)
        views.append(
            ScheduleView(
                task=schedule.task_name,
                cron=schedule.cron,
                declared_cron=schedule.declared_cron,
                timezone=settings.timezone,
                queue=schedule.queue,
                enabled=schedule.enabled,
                next_run_at=datetime.datetime.fromtimestamp(
                    next_tick(schedule.cron, timezone, at), zoneinfo.ZoneInfo(settings.timezone)
                )
                if schedule.cron
                else None,
                last_run=ScheduleRun(
                    job_id=run["job_id"],
                    status=run["status"],
                    tick_at=datetime.datetime.fromtimestamp(run["defer_timestamp"], timezone),
                    started_at=run["started_at"],
                    finished_at=run["finished_at"],
                )
                if run
                else None,
            )
        )
    return views
