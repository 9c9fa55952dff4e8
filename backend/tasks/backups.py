"""The periodic database backup: one custom-format pg_dump per tick, checked and recorded.

The logic lives in ``backend/maintenance/backups.py``; this module declares the task and hands it
the task's own transactions (the boundary where commits happen).
"""

from __future__ import annotations

from typing import cast

from procrastinate import PsycopgConnector
from psycopg_pool import AsyncConnectionPool

from backend.db import DictConnection
from backend.declare.registry import PeriodicArgs, TaskBlueprint
from backend.maintenance import backups
from backend.runtime.context import TaskContext

blueprint = TaskBlueprint()


def database_conninfo(ctx: TaskContext) -> str:
    """The conninfo the worker's pool connects with: pg_dump dumps that very database."""
    connector = ctx.app.connector
    assert isinstance(connector, PsycopgConnector)
    conninfo = cast(AsyncConnectionPool[DictConnection], connector.pool).conninfo
    assert isinstance(conninfo, str), "build_task_app gives the pool a conninfo string"
    return conninfo


@blueprint.task(
    name="taskhub.backup_database",
    queue="maintenance",
    cron="0 3 * * *",
    # lock: two backups never run at once (a hand-deferred one waits for the periodic one);
    # queueing_lock: no pile of waiting backups while the maintenance queue is not served.
    lock="taskhub.backup_database",
    queueing_lock="taskhub.backup_database",
)
async def backup_database(args: PeriodicArgs, ctx: TaskContext) -> backups.BackupReport:
    """pg_dump the database in custom format into TASKHUB_BACKUP_DIR, check it with
    pg_restore --list, record the run in taskhub.backups and apply TASKHUB_BACKUP_KEEP /
    TASKHUB_BACKUP_KEEP_DAYS. A failure is recorded, raises an alert event and fails the job."""
    return await backups.run_backup(
        backups.BackupRun(
            settings=ctx.settings,
            conninfo=database_conninfo(ctx),
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            transaction=ctx.connection,
            progress=ctx.progress,
        )
    )
