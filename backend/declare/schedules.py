"""Cron schedules in the configured timezone, on procrastinate's periodic deferrer.

Every worker runs a deferrer; procrastinate's ``procrastinate_periodic_defers`` table (unique
per task and tick) makes one job per tick however many workers run. taskhub changes three
things in how ticks are computed (``backend.runtime.periodic.ZonedDeferrer``):

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
from collections.abc import Iterable, Iterator

import croniter

from backend.declare.registry import TaskBlueprint
from backend.errors import SettingsError
from backend.settings import Settings

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


def configured_schedules(settings: Settings, blueprints: Iterable[TaskBlueprint]) -> list[Schedule]:
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
