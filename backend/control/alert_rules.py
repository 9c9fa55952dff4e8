"""Alert rules: find the conditions that hold now, and turn their changes into transitions.

Each rule's state (firing since, resolved at) is a row of ``taskhub.alert_states``. An
evaluation holds an advisory lock for its transaction, so a condition notifies once when it
starts and once when it resolves, however many evaluators run at once. Each transition is
logged (WARNING when firing, INFO when resolved) and stored in ``taskhub.alert_events``; the
caller delivers it further (webhooks) in the same transaction.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Iterable
from typing import Any, Literal

from psycopg.types.json import Jsonb
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from backend.control.alerts import AlertEvent, Severity
from backend.db import DictConnection
from backend.declare.schedules import Schedule, previous_tick
from backend.queries import QUERIES
from backend.settings import Settings

logger = logging.getLogger(__name__)

#: A schedule's tick counts as missed once it is this late, at least (TASKHUB_SCHEDULE_CATCH_UP
#: may be shorter, or 0).
MIN_SCHEDULE_GRACE = 60.0


@dataclasses.dataclass(frozen=True)
class Condition:
    """A rule that holds now for one subject (a queue, a task, a worker, a job, ...)."""

    rule: str
    subject: str
    severity: Severity
    message: str
    details: dict[str, Any]


class AlertState(BaseModel):
    """A rule's state for one subject."""

    rule: str
    subject: str
    firing: bool
    severity: Severity
    message: str
    details: dict[str, Any]
    firing_since: datetime.datetime
    resolved_at: datetime.datetime | None
    evaluated_at: datetime.datetime


class Transition(BaseModel):
    """A condition that started or stopped holding, and the event that records it."""

    state: Literal["firing", "resolved"]
    alert: AlertState
    event: AlertEvent


async def find_conditions(
    conn: DictConnection,
    settings: Settings,
    schedules: Iterable[Schedule],
    now: datetime.datetime | None = None,
) -> list[Condition]:
    """Every rule's condition that holds now."""
    cursor = await conn.execute(
        QUERIES["alert_conditions"],
        {
            "backlog": settings.alert_backlog,
            "oldest_age": settings.alert_oldest_age,
            "failure_rate": settings.alert_failure_rate,
            "failure_min_jobs": settings.alert_failure_min_jobs,
            "window": settings.alert_window,
            "critical_queues": settings.critical_queues,
            "stalled_after": settings.alert_stalled_after,
            "rescue_after": settings.rescue_after,
            "backup_age": settings.alert_backup_age,
        },
    )
    conditions = [Condition(**row) for row in await cursor.fetchall()]
    return conditions + await missed_schedules(conn, settings, schedules, now)


async def missed_schedules(
    conn: DictConnection,
    settings: Settings,
    schedules: Iterable[Schedule],
    now: datetime.datetime | None = None,
) -> list[Condition]:
    """Schedules whose latest due tick has no job, or a job still waiting, past the catch-up
    window. A schedule that never deferred a job here (a new install) is not judged."""
    enabled = [schedule for schedule in schedules if schedule.cron]
    if not enabled:
        return []
    cursor = await conn.execute(
        QUERIES["last_schedule_runs"], {"tasks": [schedule.task_name for schedule in enabled]}
    )
    last_runs = {row["task_name"]: row for row in await cursor.fetchall()}
    grace = max(settings.schedule_catch_up, MIN_SCHEDULE_GRACE)
    at = (now or datetime.datetime.now(datetime.UTC)).timestamp()
    timezone = settings.tzinfo()
    missed = []
    for schedule in enabled:
        assert schedule.cron is not None
        run = last_runs.get(schedule.task_name)
        if run is None:
            continue
        due = previous_tick(schedule.cron, timezone, at - grace)
        last = int(run["defer_timestamp"])
        if last > due or (last == due and run["status"] != "todo"):
            continue
        due_at = datetime.datetime.fromtimestamp(due, timezone)
        missed.append(
            Condition(
                rule="missed_schedule",
                subject=schedule.task_name,
                severity="error",
                message=f"schedule {schedule.task_name} ({schedule.cron}): the tick of "
                f"{due_at.isoformat()} has not run",
                details={
                    "task": schedule.task_name,
                    "cron": schedule.cron,
                    "tick_at": due_at.isoformat(),
                    "last_tick_at": datetime.datetime.fromtimestamp(last, timezone).isoformat(),
                    "last_job_id": run["job_id"],
                    "last_status": run["status"],
                },
            )
        )
    return missed


async def evaluate(
    conn: DictConnection,
    settings: Settings,
    schedules: Iterable[Schedule],
    now: datetime.datetime | None = None,
) -> list[Transition]:
    """Compare the conditions with the stored states, in ``conn``'s transaction (not
    committed here): one transition per condition that started or stopped holding."""
    await conn.execute(QUERIES["alert_evaluation_lock"])
    current = {
        (c.rule, c.subject): c for c in await find_conditions(conn, settings, schedules, now)
    }
    cursor = await conn.execute(QUERIES["firing_alert_states"])
    firing = {(row["rule"], row["subject"]) for row in await cursor.fetchall()}
    transitions = []
    for key, condition in current.items():
        params = {
            "rule": condition.rule,
            "subject": condition.subject,
            "severity": condition.severity,
            "message": condition.message,
            "details": Jsonb(to_jsonable_python(condition.details)),
        }
        if key in firing:
            await conn.execute(QUERIES["hold_alert_state"], params)
            continue
        cursor = await conn.execute(QUERIES["fire_alert_state"], params)
        row = await cursor.fetchone()
        assert row is not None
        transitions.append(await _record(conn, "firing", AlertState.model_validate(row)))
    for rule, subject in sorted(firing - current.keys()):
        cursor = await conn.execute(
            QUERIES["resolve_alert_state"], {"rule": rule, "subject": subject}
        )
        row = await cursor.fetchone()
        assert row is not None
        transitions.append(await _record(conn, "resolved", AlertState.model_validate(row)))
    return transitions


async def _record(
    conn: DictConnection, state: Literal["firing", "resolved"], alert: AlertState
) -> Transition:
    """Store the transition in taskhub.alert_events and log it."""
    message = alert.message if state == "firing" else f"resolved: {alert.message}"
    cursor = await conn.execute(
        QUERIES["insert_alert_event"],
        {
            "kind": alert.rule,
            "severity": alert.severity if state == "firing" else "info",
            "message": message,
            "details": Jsonb(
                to_jsonable_python(
                    {
                        **alert.details,
                        "state": state,
                        "subject": alert.subject,
                        "firing_since": alert.firing_since,
                        "resolved_at": alert.resolved_at,
                    }
                )
            ),
            "job_id": None,
        },
    )
    row = await cursor.fetchone()
    assert row is not None
    event = AlertEvent.model_validate(row)
    logger.log(
        logging.WARNING if state == "firing" else logging.INFO,
        "alert %s %s (%s): %s",
        alert.rule,
        state,
        alert.subject,
        message,
        extra={"action": f"alert_{state}", "alert_id": event.id, "alert_kind": alert.rule},
    )
    return Transition(state=state, alert=alert, event=event)


async def firing_alerts(conn: DictConnection) -> list[AlertState]:
    """The rules firing now, oldest first."""
    cursor = await conn.execute(QUERIES["firing_alert_states"])
    return [AlertState.model_validate(row) for row in await cursor.fetchall()]
