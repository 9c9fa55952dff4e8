"""procrastinate's periodic deferrer, cron in a timezone (rules: backend.declare.schedules)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from procrastinate.periodic import PeriodicDeferrer, PeriodicRegistry, PeriodicTask

from backend.declare.schedules import ON_TIME, next_tick, previous_tick, ticks


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
