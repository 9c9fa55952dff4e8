"""The app's task blueprint, queues and task names: a leaf both the Flask app and the tasks
import (the Flask views defer through ``declared(...)`` without importing the workers' code)."""

from __future__ import annotations

from typing import Any

from backend.declare.registry import TaskBlueprint, TaskDefinition

blueprint = TaskBlueprint()

#: The seed's queues; k9_tasks is the default of every task that names none.
DEFAULT_QUEUE = "k9_tasks"
BACKUPS_QUEUE = "backups"
REPORTS_QUEUE = "reports"
NOTIFICATIONS_QUEUE = "notifications"
SCHEDULES_QUEUE = "schedules"
QUEUES = (DEFAULT_QUEUE, BACKUPS_QUEUE, REPORTS_QUEUE, NOTIFICATIONS_QUEUE, SCHEDULES_QUEUE)

NOTIFY_ASSIGNEE = "fieldops.notify_assignee"
RUN_AUTOMATED_BACKUP = "fieldops.run_automated_backup"
CLEANUP_OLD_NOTIFICATIONS = "fieldops.cleanup_old_notifications"
AUTO_LOCK_YESTERDAY_SCHEDULES = "fieldops.auto_lock_yesterday_schedules"
GENERATE_PDF_REPORT = "fieldops.generate_pdf_report"


def declared(name: str) -> TaskDefinition[Any]:
    """The task ``name`` as ``tasks.py`` declared it."""
    try:
        return blueprint.tasks[name]
    except KeyError:
        raise RuntimeError(
            f"task {name!r} is not declared: import backend.examples.fieldops first"
        ) from None
