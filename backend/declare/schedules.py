"""Cron schedules in the configured timezone, on procrastinate's periodic deferrer.

Every worker runs a deferrer; procrastinate's ``procrastinate_periodic_defers`` table (unique
per task and tick) makes one job per tick however many workers run. taskhub changes three
things in how ticks are computed (:class:`ZonedDeferrer`):

- cron fields are read in ``TASKHUB_TIMEZONE``, not UTC;
- after downtime, missed ticks are not replayed one by one: only the latest runs, if it is at
  most ``TASKHUB_SCHEDULE_CATCH_UP`` seconds late (procrastinate would replay every tick missed
  while a worker was up but busy, and forget the schedule until its next tick after a restart);
- when clocks go back, a fixed-hour schedule (``30 2 * * *``) runs once, not twice, as cron does;
  a schedule with ``*`` in its hour field runs in both repeated hours.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import zoneinfo
from collections.abc import Iterable, Iterator
from typing import Any

import croniter
from procrastinate.periodic import PeriodicDeferrer, PeriodicRegistry, PeriodicTask
from psycopg import AsyncConnection
from pydantic import BaseModel, Field

from backend.declare.registry import TaskBlueprint
from backend.errors import SettingsError
from backend.queries import QUERIES
from backend.settings import Settings
from backend.tasks import BLUEPRINTS

#: A tick reached this many seconds late still counts as on time (the deferrer wakes a little
#: after each tick, later when its event loop is busy).
ON_TIME = 5.0


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A periodic task as it runs here: its declared cron, or the operator's replacement."""

    task_name: str
    queue: str
    declared_cron: str | None
    cron: str | None  # None: turned off in TASKHUB_SCHEDULES

    @property
    def enabled(self) -> bool:
        return self.cron is not None


def configured_schedules(
    settings: Settings, blueprints: Iterable[TaskBlueprint] = BLUEPRINTS
) -> list[Schedule]:
    """Each declared or operator-added schedule; SettingsError for an unusable override."""
    overrides = settings.schedule_overrides()
    definitions = {task.name: task for blueprint in blueprints for task in blueprint}
    unknown = sorted(set(overrides) - set(definitions))
    if unknown:
        raise SettingsError(
            f"invalid setting TASKHUB_SCHEDULES: unknown task {unknown[0]!r}; "
            f"registered tasks: {', '.join(sorted(definitions))}"
        )
    schedules = []
    for name, definition in sorted(definitions.items()):
        cron = overrides.get(name, definition.cron)
        if name in overrides and cron and "timestamp" not in definition.args_model.model_fields:
            raise SettingsError(
                f"invalid setting TASKHUB_SCHEDULES: task {name!r} cannot be scheduled: "
                "its arguments model has no timestamp field (see PeriodicArgs)"
            )
        if definition.cron or name in overrides:
            schedules.append(
                Schedule(name, definition.queue, declared_cron=definition.cron, cron=cron)
            )
    return schedules


def cron_iterator(cron: str, timezone: datetime.tzinfo) -> croniter.croniter:
    """A croniter that reads its fields in ``timezone`` (float times are Unix timestamps)."""
    return croniter.croniter(cron, start_time=datetime.datetime.now(timezone))


def _fixed_hour(cron: str) -> bool:
    return "*" not in cron.split()[1]


def is_repeated_wall_time(timestamp: float, timezone: datetime.tzinfo) -> bool:
    """Whether this instant is the second pass of a wall-clock time (clocks went back)."""
    local = datetime.datetime.fromtimestamp(timestamp, timezone)
    return local.fold == 1 and local.replace(fold=0).timestamp() != timestamp


def ticks(cron: str, timezone: datetime.tzinfo, after: float, until: float) -> Iterator[int]:
    """The ticks of ``cron`` in (after, until], as Unix timestamps, as taskhub runs them."""
    iterator = cron_iterator(cron, timezone)
    iterator.set_current(start_time=after)
    fixed_hour = _fixed_hour(cron)
    while (tick := round(iterator.get_next(ret_type=float))) <= until:
        if not (fixed_hour and is_repeated_wall_time(tick, timezone)):
            yield tick


def next_tick(cron: str, timezone: datetime.tzinfo, after: float) -> int:
    return next(ticks(cron, timezone, after, float("inf")))


def previous_tick(cron: str, timezone: datetime.tzinfo, at: float) -> int:
    """The latest tick at or before ``at``."""
    iterator = cron_iterator(cron, timezone)
    # Ticks fall on whole seconds: from just after the last whole second, get_prev includes it.
    iterator.set_current(start_time=math.floor(at) + 0.5)
    while True:
        tick = round(iterator.get_prev(ret_type=float))
        if not (_fixed_hour(cron) and is_repeated_wall_time(tick, timezone)):
            return tick


class ZonedDeferrer(PeriodicDeferrer):
    """procrastinate's deferrer with cron in a timezone and taskhub's rule for missed ticks."""

    def __init__(
        self, registry: PeriodicRegistry, *, timezone: datetime.tzinfo, catch_up: float
    ) -> None:
        super().__init__(registry=registry, max_delay=catch_up)
        self.timezone = timezone

    def get_next_tick(self, at: float) -> float:
        return (
            min(
                next_tick(task.cron, self.timezone, at)
                for task in self.registry.periodic_tasks.values()
            )
            - at
        )

    def get_previous_tasks(self, at: float) -> Iterable[tuple[PeriodicTask[Any, Any, Any], int]]:
        for key, task in self.registry.periodic_tasks.items():
            since = self.last_defers.get(key)
            latest = (
                max(ticks(task.cron, self.timezone, since, at), default=None)
                if since is not None
                else previous_tick(task.cron, self.timezone, at)
            )
            if latest is None:
                continue
            # Seen either way: a tick skipped as too late is not looked at again.
            self.last_defers[key] = latest
            if at - latest <= max(self.max_delay, ON_TIME):
                yield task, latest


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
    blueprints: Iterable[TaskBlueprint] = BLUEPRINTS,
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
