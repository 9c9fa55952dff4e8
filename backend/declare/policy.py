"""Execution policy declared next to a task: priority tiers, retry with backoff, schedules.

The seeds' policies, one line each::

    retry=Retry(retries=4, backoff=60)            # 60, 120, 240, 480 s
    retry=Retry(retries=3, backoff=60, factor=1)  # 3 retries, 60 s apart
"""

from __future__ import annotations

import datetime
import json
import random
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

import croniter
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision, RetryValue, get_retry_strategy
from pydantic import BaseModel, ValidationError


class Priority(IntEnum):
    """Priority tiers; higher runs first. Any integer works, these are the usual ones."""

    critical = 100
    high = 50
    normal = 0
    low = -50


@dataclass(frozen=True, kw_only=True)
class Retry(BaseRetryStrategy):
    """Retry a failed job ``retries`` times, waiting ``backoff * factor**(n-1)`` before the n-th.

    ``cap`` bounds the wait, ``jitter`` spreads it by up to that fraction either way (0.1: ±10%)
    so a burst of failures does not come back as a burst, and ``on`` restricts retries to those
    exception types (anything else fails the job at once).
    """

    retries: int
    backoff: float = 0.0
    factor: float = 2.0
    cap: float | None = None
    jitter: float = 0.0
    on: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.factor < 1:
            raise ValueError("retries and backoff must be >= 0, factor >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction: 0 <= jitter < 1")
        if self.cap is not None and self.cap < 0:
            raise ValueError("cap must be >= 0")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first), without jitter."""
        wait = self.backoff * self.factor ** (retry - 1)
        return min(wait, self.cap) if self.cap is not None else wait

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        # job.attempts counts the runs before this one: 0 on the first.
        if job.attempts >= self.retries:
            return None
        if self.on and not isinstance(exception, self.on):
            return None
        wait = self.delay(job.attempts + 1)
        if self.jitter:
            wait *= random.uniform(1 - self.jitter, 1 + self.jitter)
        retry_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=wait)
        return RetryDecision(retry_at=retry_at)

    def describe(self) -> dict[str, Any]:
        return {
            "retries": self.retries,
            "backoff": self.backoff,
            "factor": self.factor,
            "cap": self.cap,
            "jitter": self.jitter,
            "on": sorted(exception.__name__ for exception in self.on) or None,
            "delays": [round(self.delay(n), 3) for n in range(1, min(self.retries, 10) + 1)],
        }


RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


@dataclass(frozen=True)
class RateLimit:
    """At most ``runs`` starts per ``seconds``, across every worker, under ``key``.

    Written ``"100/m"`` (also ``/s``, ``/h``, ``/d``). Tasks sharing a ``key`` share the limit
    (e.g. every task that sends mail through one SMTP account).
    """

    runs: int
    seconds: float
    key: str | None = None

    @classmethod
    def parse(cls, value: str, key: str | None = None) -> RateLimit:
        runs, _, unit = value.strip().partition("/")
        if not runs.isdigit() or int(runs) < 1 or unit not in RATE_UNITS:
            raise ValueError(f"rate limit {value!r}: write it as 100/m (or /s, /h, /d)")
        return cls(runs=int(runs), seconds=RATE_UNITS[unit], key=key)

    def __str__(self) -> str:
        unit = next(name for name, seconds in RATE_UNITS.items() if seconds == self.seconds)
        return f"{self.runs}/{unit}"


def parse_rate_limits(value: str) -> dict[str, RateLimit]:
    """``task=100/m,other.task=5/s`` (TASKHUB_RATE_LIMITS) by task name."""
    limits: dict[str, RateLimit] = {}
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        task, separator, limit = entry.partition("=")
        if not separator or not task.strip():
            raise ValueError(
                f"each entry must be task=limit, e.g. emails.send=100/m (got {entry!r})"
            )
        limits[task.strip()] = RateLimit.parse(limit)
    return limits


def check_cron(cron: str) -> str:
    """A cron expression croniter accepts (5 fields, or 6 with seconds last), else ValueError."""
    if not croniter.croniter.is_valid(cron):
        raise ValueError(
            f"{cron!r} is not a cron expression (minute hour day month weekday, e.g. '0 3 * * *')"
        )
    return cron


def parse_schedules(value: str) -> dict[str, str | None]:
    """``task=0 3 * * *;other.task=off`` (TASKHUB_SCHEDULES): cron by task name, None for off."""
    schedules: dict[str, str | None] = {}
    for entry in (part.strip() for part in value.split(";")):
        if not entry:
            continue
        task, separator, cron = entry.partition("=")
        if not separator or not task.strip():
            raise ValueError(
                f"each entry must be task=cron or task=off, e.g. taskhub.backup_database=0 2 * * * "
                f"(got {entry!r})"
            )
        cron = " ".join(cron.split())
        schedules[task.strip()] = None if cron.lower() == "off" else check_cron(cron)
    return schedules


@dataclass(frozen=True, kw_only=True)
class TaskDefaults:
    """Queue, retry and limits: what a task declares, or what its app gives the tasks that
    declare none. ``None`` leaves the choice to the next level (the task, the operator's
    ``TASKHUB_TASK_DEFAULTS``, the app, taskhub); ``False`` says "none" (no retry, no limit)
    even where a default sets one."""

    queue: str | None = None
    retry: RetryValue | None = None
    rate_limit: str | RateLimit | Literal[False] | None = None
    time_limit: float | Literal[False] | None = None
    soft_time_limit: float | Literal[False] | None = None

    def __post_init__(self) -> None:
        if self.retry is not None and not isinstance(self.retry, BaseRetryStrategy):
            object.__setattr__(self, "retry", get_retry_strategy(self.retry) or False)
        if isinstance(self.rate_limit, str):
            object.__setattr__(self, "rate_limit", RateLimit.parse(self.rate_limit))
        for name in ("time_limit", "soft_time_limit"):
            value = getattr(self, name)
            if value is not None and value is not False and not value > 0:
                raise ValueError(f"{name} must be a number of seconds above 0, or False")

    def over(self, fallback: TaskDefaults) -> TaskDefaults:
        """These values, with ``fallback``'s where these are unset."""
        return TaskDefaults(
            **{
                name: fallback_value if (value := getattr(self, name)) is None else value
                for name, fallback_value in vars(fallback).items()
            }
        )


class TaskDefaultsEntry(BaseModel, extra="forbid"):
    """One app's entry in ``TASKHUB_TASK_DEFAULTS`` (``retry``: a number of attempts)."""

    queue: str | None = None
    retry: int | bool | None = None
    rate_limit: str | Literal[False] | None = None
    time_limit: float | Literal[False] | None = None
    soft_time_limit: float | Literal[False] | None = None


def parse_task_defaults(value: str) -> dict[str, TaskDefaults]:
    """``{"erp": {"time_limit": 1800}, "*": {"queue": "jobs"}}``: per app name, ``*`` for
    every app. ValueError names the entry at fault."""
    if not value.strip():
        return {}
    try:
        raw = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError('must be a JSON object: {"app name or *": {"time_limit": 1800}}')
    parsed: dict[str, TaskDefaults] = {}
    for app, entry in raw.items():
        try:
            fields = TaskDefaultsEntry.model_validate(entry).model_dump(exclude_none=True)
            parsed[app] = TaskDefaults(**fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{app}.{where}: {first['msg']}") from None
        except ValueError as exc:
            raise ValueError(f"{app}: {exc}") from None
    return parsed
