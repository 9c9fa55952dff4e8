"""The sync family's tasks, on the seed's sync queues with their priorities.

=====================================  ================  ========================================
``manufacturing.sync_external_data``   sync.normal       hourly: the ERP's sites and equipment
``manufacturing.archive_old_rows``     sync.maintenance  daily 02:30: finished rows to the archive
``manufacturing.backup_critical_data`` sync.backup       every 6 hours: taskhub's own backup job
=====================================  ================  ========================================

The seed lists "external API synchronization" without a schedule; hourly is our choice (its
other hourly jobs are reconciliations). Its "cleanup old data" runs daily, its "backup critical
data" every 6 hours.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field

from backend import defer
from backend.db import DictConnection
from backend.declare.policy import Retry
from backend.declare.registry import PeriodicArgs, TaskBlueprint
from backend.errors import AlreadyQueued, TaskhubError
from backend.examples.manufacturing.queues import priority
from backend.examples.manufacturing.settings import ManufacturingSettings
from backend.examples.manufacturing.sync import erp
from backend.queries import load_queries
from backend.runtime.context import TaskContext
from backend.tasks.backups import backup_database

logger = logging.getLogger(__name__)

#: The named statements of sql/sync.sql.
QUERIES = load_queries("backend.examples.manufacturing.sync.sql")

blueprint = TaskBlueprint()

#: The seed's backoff (60, 120, 240, 480 s) for what a retry may fix: the ERP down, slow or
#: overloaded. Each retry resumes after the last committed page. A bad token fails at once.
RETRY = Retry(retries=4, backoff=60, factor=2, on=(erp.ErpUnavailable,))
UPSERTS: dict[erp.Resource, str] = {
    "locations": "sync_upsert_locations_page",
    "assets": "sync_upsert_assets_page",
}
#: The live tables archive_old_rows moves rows from, in this order, with their statements.
ARCHIVES: dict[str, str] = {
    "emails": "archive_emails",
    "payments": "archive_payments",
    "orders": "archive_orders",
}


class SyncArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{}]})

    timestamp: int | None = None
    force_full_sync: bool = Field(
        default=False,
        description="Fetch every record (dropping a checkpoint in progress); otherwise only "
        "those changed since the last complete sync.",
    )


class ResourceSync(BaseModel):
    """What one resource's sync did (counters cover its resumed attempts too)."""

    resource: erp.Resource
    full_sync: bool
    resumed_at_page: int | None = Field(description="The checkpoint a retry started from.")
    pages_fetched: int = Field(description="Pages this attempt fetched.")
    processed: int
    created: int
    updated: int


class SyncOutcome(BaseModel):
    """What manufacturing.sync_external_data did."""

    resources: list[ResourceSync]


class ArchivedTable(BaseModel):
    table: str
    moved: int
    related: int = Field(
        default=0, description="Email attempts or order events moved with their rows."
    )
    batches: int


class ArchiveRun(BaseModel):
    """What manufacturing.archive_old_rows moved."""

    cutoff: str
    tables: list[ArchivedTable]


class BackupQueued(BaseModel):
    """The core backup job manufacturing.backup_critical_data asked for."""

    task: str
    job_id: int | None = Field(description="None: the waiting backup started just now.")
    already_queued: bool = Field(description="A backup was already waiting: no second one.")


def _settings(ctx: TaskContext) -> ManufacturingSettings:
    return ctx.settings_of(ManufacturingSettings)


async def _row(conn: DictConnection, query: str, params: dict[str, Any]) -> dict[str, Any] | None:
    cursor = await conn.execute(QUERIES[query], params)
    return await cursor.fetchone()


async def _sync_resource(
    ctx: TaskContext, client: httpx.AsyncClient, resource: erp.Resource, force_full: bool
) -> ResourceSync:
    """Page one resource from its checkpoint to the last page: each page's upsert and the
    checkpoint commit together, so a retry loses at most the page in flight."""
    page_size = _settings(ctx).erp_page_size
    async with ctx.connection() as conn:
        state = await _row(
            conn,
            "sync_begin",
            {"resource": resource, "job_id": ctx.job_id, "force_full": force_full},
        )
    assert state is not None
    resumed_at = state["next_page"] if state["next_page"] > 1 else None
    since = state["run_since"]
    number, fetched = state["next_page"], 0
    try:
        while True:
            ctx.raise_if_aborted()
            page = await erp.fetch_page(client, resource, number, page_size, since)
            fetched += 1
            async with ctx.connection() as conn:
                moved = await _row(
                    conn,
                    UPSERTS[resource],
                    {"items": Jsonb(page.records), "next_page": number + 1},
                )
            assert moved is not None, "sync_begin left a sync in progress"
            ctx.progress(message=f"{resource}: page {number}/{page.total_pages}")
            if number >= page.total_pages or not page.records:
                break
            number += 1
        async with ctx.connection() as conn:
            finished = await _row(conn, "sync_finish", {"resource": resource})
    except TaskhubError as exc:
        async with ctx.connection() as conn:
            await conn.execute(
                QUERIES["sync_record_error"], {"resource": resource, "error": exc.message}
            )
        raise
    assert finished is not None
    return ResourceSync(
        resource=resource,
        full_sync=since is None,
        resumed_at_page=resumed_at,
        pages_fetched=fetched,
        processed=finished["processed"],
        created=finished["created"],
        updated=finished["updated"],
    )


@blueprint.task(
    name="manufacturing.sync_external_data",
    queue="sync.normal",
    priority=priority("sync.normal"),
    retry=RETRY,
    cron="15 * * * *",
    lock="manufacturing.sync_external_data",
    queueing_lock="manufacturing.sync_external_data",
)
async def sync_external_data(args: SyncArgs, ctx: TaskContext) -> SyncOutcome:
    """Pull the ERP's locations and assets (TASKHUB_MANUFACTURING_ERP_*) into
    manufacturing.sites and manufacturing.equipment: paged, upserted by the ERP's id, only what
    changed since the last complete sync. Hourly; one at a time (lock)."""
    results = []
    async with erp.erp_client(_settings(ctx)) as client:
        for resource in erp.RESOURCES:
            results.append(await _sync_resource(ctx, client, resource, args.force_full_sync))
    return SyncOutcome(resources=results)


@blueprint.task(
    name="manufacturing.archive_old_rows",
    queue="sync.maintenance",
    priority=priority("sync.maintenance"),
    cron="30 2 * * *",
    lock="manufacturing.archive_old_rows",
    queueing_lock="manufacturing.archive_old_rows",
)
async def archive_old_rows(args: PeriodicArgs, ctx: TaskContext) -> ArchiveRun:
    """Move finished rows not changed for TASKHUB_MANUFACTURING_ARCHIVE_AFTER_DAYS days into
    the *_archive tables: emails (with their attempts), declined payments, shipped or cancelled
    orders (with their events). One transaction per batch of ARCHIVE_BATCH_SIZE rows, so locks
    stay short and a stop loses nothing; a rerun finds nothing left to move."""
    settings = _settings(ctx)
    async with ctx.connection() as conn:
        bound = await _row(conn, "archive_cutoff", {"days": settings.archive_after_days})
    assert bound is not None
    tables = []
    for table, query in ARCHIVES.items():
        done = ArchivedTable(table=table, moved=0, batches=0)
        while True:
            ctx.raise_if_aborted()
            async with ctx.connection() as conn:
                batch = await _row(
                    conn, query, {"cutoff": bound["cutoff"], "limit": settings.archive_batch_size}
                )
            assert batch is not None
            done.batches += 1
            done.moved += batch["moved"]
            done.related += batch["related"]
            if batch["moved"] < settings.archive_batch_size:
                break
        ctx.progress(message=f"{table}: {done.moved} archived")
        tables.append(done)
    return ArchiveRun(cutoff=bound["cutoff"].isoformat(), tables=tables)


@blueprint.task(
    name="manufacturing.backup_critical_data",
    queue="sync.backup",
    priority=priority("sync.backup"),
    cron="0 */6 * * *",
    queueing_lock="manufacturing.backup_critical_data",
)
async def backup_critical_data(args: PeriodicArgs, ctx: TaskContext) -> BackupQueued:
    """Queue taskhub's own backup (taskhub.backup_database: pg_dump checked, recorded and kept
    per TASKHUB_BACKUP_*) every 6 hours, as the seed backed up its critical data; a backup
    already waiting is not doubled (its queueing lock)."""
    lock = backup_database.queueing_lock
    assert lock is not None
    async with ctx.connection() as conn:
        try:
            async with conn.transaction():  # a savepoint: the lock taken rolls back only this
                job_id = await defer.defer(conn, backup_database, PeriodicArgs())
            return BackupQueued(task=backup_database.name, job_id=job_id, already_queued=False)
        except AlreadyQueued:
            waiting = await _row(conn, "backup_waiting_job", {"queueing_lock": lock})
    return BackupQueued(
        task=backup_database.name,
        job_id=waiting["id"] if waiting is not None else None,
        already_queued=True,
    )
