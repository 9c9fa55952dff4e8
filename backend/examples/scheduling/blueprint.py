"""The example's task blueprint, queue, task names and job locks: a leaf module.

The writes in ``service.py`` defer the tasks declared on this blueprint, and ``tasks.py``
declares them on it and calls the service, so the imports go one way only::

    tasks -> service -> blueprint
    tasks ----------> blueprint

The package's ``__init__`` imports ``tasks``, so by the time a write runs (never at import
time) every task is declared.
"""

from __future__ import annotations

from typing import Any

from backend.declare.registry import TaskBlueprint, TaskDefinition

blueprint = TaskBlueprint()

QUEUE = "scheduling"
SYNC_SCHEDULE = "scheduling.sync_schedule"
DELETE_REMOTE_SCHEDULE = "scheduling.delete_remote_schedule"
SYNC_EMPLOYEE = "scheduling.sync_employee"
REFRESH_EVENTS = "scheduling.refresh_events"


def declared(name: str) -> TaskDefinition[Any]:
    """The task ``name`` as ``tasks.py`` declared it."""
    try:
        return blueprint.tasks[name]
    except KeyError:
        raise RuntimeError(
            f"task {name!r} is not declared: import backend.examples.scheduling first"
        ) from None


def schedule_lock(schedule_id: int) -> str:
    """The lock of a schedule's jobs: they run one at a time, in the order they were deferred."""
    return f"scheduling.schedule:{schedule_id}"


def employee_lock(employee_id: int) -> str:
    return f"scheduling.employee:{employee_id}"
