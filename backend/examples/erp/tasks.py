"""The ERP sync tasks: assets and locations, paged from the ERP's HTTP API into erp.*.

The logic lives in ``service.py``; this module declares the tasks and their policy (the
queue, retry and limits they share are the app's :data:`DEFAULTS`), and hands the sync the
task's own transactions (the boundary where commits happen) and the app's settings.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from backend.declare.policy import Retry, TaskDefaults
from backend.declare.registry import TaskBlueprint
from backend.examples.erp import service as erp
from backend.examples.erp.settings import ErpSettings
from backend.runtime.context import TaskContext

blueprint = TaskBlueprint()

QUEUE = "erp_sync"
#: Shared by both tasks: one ERP sync runs at a time, whichever kind (Celery's concurrency=1).
LOCK = "erp_sync"
#: The seed's Celery limits: 25 minutes soft (the task stops between pages), 30 minutes hard.
SOFT_TIME_LIMIT = 25 * 60
TIME_LIMIT = 30 * 60
#: An ERP that is down, slow or overloaded gets 3 more tries, 1, 2 and 4 minutes later; each
#: resumes after the last committed page. Bad credentials or bad data fail at once.
RETRY = Retry(retries=3, backoff=60, factor=2, jitter=0.1, on=(erp.ErpUnavailable,))
#: What every ERP task gets unless it declares otherwise (the app's ``defaults``; an operator
#: may still override them with TASKHUB_TASK_DEFAULTS='{"erp": {...}}').
DEFAULTS = TaskDefaults(
    queue=QUEUE, retry=RETRY, soft_time_limit=SOFT_TIME_LIMIT, time_limit=TIME_LIMIT
)


class SyncArgs(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"force_full_sync": False}, {"force_full_sync": True}]},
    )

    force_full_sync: bool = Field(
        default=False,
        description="Fetch every record; otherwise only those changed since the last "
        "successful sync (everything when there was none).",
    )


def _sync_job(kind: erp.Kind, args: SyncArgs, ctx: TaskContext) -> erp.SyncJob:
    return erp.SyncJob(
        kind=kind,
        force_full_sync=args.force_full_sync,
        settings=ctx.settings_of(ErpSettings),
        job_id=ctx.job_id,
        attempt=ctx.attempt,
        transaction=ctx.connection,
        progress=ctx.progress,
        check=ctx.raise_if_aborted,
    )


@blueprint.task(
    name="erp.sync_assets",
    lock=LOCK,
    queueing_lock="erp.sync_assets",  # at most one waiting: a second click is a 409
)
async def sync_assets(args: SyncArgs, ctx: TaskContext) -> erp.SyncResult:
    """Page through the ERP's assets (TASKHUB_ERP_BASE_URL) and upsert them into erp.assets,
    one statement per page, reporting progress; incremental unless force_full_sync. Every
    attempt is recorded in erp.sync_runs; a retry resumes after the last committed page."""
    return await erp.run_sync(_sync_job("assets", args, ctx))


@blueprint.task(
    name="erp.sync_locations",
    lock=LOCK,
    queueing_lock="erp.sync_locations",
)
async def sync_locations(args: SyncArgs, ctx: TaskContext) -> erp.SyncResult:
    """Page through the ERP's locations and upsert them into erp.locations; see
    erp.sync_assets."""
    return await erp.run_sync(_sync_job("locations", args, ctx))


#: The sync tasks by the kind of record they sync (GET /erp/task-status reads only these).
SYNC_TASKS = {"assets": sync_assets, "locations": sync_locations}
