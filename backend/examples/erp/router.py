"""The ERP sync, in the shape the Celery version answered: start a sync, read its status.

Starting defers the job in the request's transaction (it commits with the response, or not at
all); the status is the job's, as taskhub stores it, mapped onto Celery's states.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response, status

from backend import defer
from backend.api.deps import Conn, Operator, Reader
from backend.api.schemas import (
    FORBIDDEN,
    UNAUTHENTICATED,
    UNAVAILABLE,
    Responses,
    error_response,
    invalid,
    ok_response,
    parameter_examples,
)
from backend.control import jobs
from backend.errors import JobNotFound, TaskhubError
from backend.examples.erp import service as erp
from backend.examples.erp.schemas import (
    FAILED_RUN,
    RUN,
    STATUS_EXAMPLES,
    SyncProgress,
    SyncStarted,
    TaskStatus,
)
from backend.examples.erp.tasks import SYNC_TASKS, SyncArgs

router = APIRouter(tags=["erp"])

#: Job ids as the start endpoints hand them out (digits, within PostgreSQL's bigint).
TASK_ID = re.compile(r"[0-9]{1,19}")
MAX_JOB_ID = 2**63 - 1
NOUNS: dict[erp.Kind, str] = {"assets": "asset", "locations": "location"}


class SyncAlreadyWaiting(TaskhubError):
    """A sync of this kind is already waiting to run."""

    status_code = 409


class UnknownSyncTask(TaskhubError):
    """No ERP sync job has that id."""

    status_code = 404


def start_responses(noun: str) -> Responses:
    return {
        202: {
            **ok_response(
                "Enqueued. `Location` is its status.",
                started=(
                    "Started",
                    {
                        "success": True,
                        "message": f"{noun.capitalize()} sync started in background",
                        "task_id": "42",
                        "status": "PENDING",
                    },
                ),
            ),
            "headers": {
                "Location": {
                    "description": "`/erp/task-status/{task_id}`",
                    "schema": {"type": "string"},
                }
            },
        },
        **UNAUTHENTICATED,
        **FORBIDDEN,
        409: error_response(
            f"An {noun} sync is already waiting to run; nothing was enqueued.",
            waiting=(
                "A second click",
                f"an {noun} sync is already waiting: task_id 41 (GET /erp/task-status/41); "
                "cancel it first to start another (POST /jobs/41/cancel)",
            ),
        ),
        **invalid(
            "`force_full_sync` is not a boolean; nothing was enqueued.",
            (
                "Not a boolean",
                ["query", "force_full_sync"],
                "Input should be a valid boolean, unable to interpret input",
                "bool_parsing",
            ),
        ),
        **UNAVAILABLE,
    }


ForceFullSync = Annotated[
    bool,
    Query(
        description="Fetch every record. Otherwise only those changed since the last "
        "successful sync (everything when there was none).",
        openapi_examples=parameter_examples(
            incremental=("Only the changes", False), full=("Everything", True)
        ),
    ),
]


async def start_sync(
    kind: erp.Kind, force_full_sync: bool, conn: Conn, response: Response
) -> SyncStarted:
    """Defer one sync in the request's transaction; refuse if one is already waiting.

    The ERP's URL and token are the workers' settings: the API never calls the ERP."""
    task, noun = SYNC_TASKS[kind], NOUNS[kind]
    assert task.queueing_lock is not None
    waiting = await erp.waiting_job(conn, task.queueing_lock)
    if waiting is not None:
        raise SyncAlreadyWaiting(
            f"an {noun} sync is already waiting: task_id {waiting} (GET /erp/task-status/"
            f"{waiting}); cancel it first to start another "
            f"(POST /jobs/{waiting}/cancel)"
        )
    job_id = await defer.defer(conn, task, SyncArgs(force_full_sync=force_full_sync))
    response.headers["Location"] = f"/erp/task-status/{job_id}"
    full = "Full " + noun if force_full_sync else noun.capitalize()
    return SyncStarted(
        success=True,
        message=f"{full} sync started in background",
        task_id=str(job_id),
        status="PENDING",
    )


@router.post(
    "/erp/sync-assets",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SyncStarted,
    summary="Start an asset sync",
    response_description="Enqueued. `Location` is its status.",
    responses=start_responses("asset"),
)
async def sync_assets(
    conn: Conn,
    response: Response,
    caller: Operator,
    force_full_sync: ForceFullSync = False,
) -> SyncStarted:
    """Enqueue `erp.sync_assets` on the `erp_sync` queue and answer at once with its
    `task_id`. It pages through the ERP's assets into `erp.assets`, one sync at a time. Needs
    the operate scope."""
    return await start_sync("assets", force_full_sync, conn, response)


@router.post(
    "/erp/sync-locations",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SyncStarted,
    summary="Start a location sync",
    response_description="Enqueued. `Location` is its status.",
    responses=start_responses("location"),
)
async def sync_locations(
    conn: Conn,
    response: Response,
    caller: Operator,
    force_full_sync: ForceFullSync = False,
) -> SyncStarted:
    """Enqueue `erp.sync_locations` on the `erp_sync` queue and answer at once with its
    `task_id`. It pages through the ERP's locations into `erp.locations`. Needs the operate
    scope."""
    return await start_sync("locations", force_full_sync, conn, response)


def _progress(job: jobs.JobView) -> SyncProgress | None:
    if job.progress is None:
        return None
    done, total = job.progress.done, job.progress.total
    fraction = f"{done}/{total}" if done is not None and total is not None else None
    return SyncProgress.model_validate(
        {**job.progress.counters, "message": job.progress.message, "progress": fraction}
    )


def _result(job: jobs.JobView) -> erp.SyncResult | None:
    if job.state != jobs.JobState.SUCCESS or not isinstance(job.result, dict):
        return None
    return erp.SyncResult.model_validate(job.result)


def task_status(job: jobs.JobView) -> TaskStatus:
    """A job seen as the Celery version showed it: STARTED is PROGRESS there."""
    state = "PROGRESS" if job.state == jobs.JobState.STARTED else job.state.value
    error = job.last_error
    return TaskStatus.model_validate(
        {
            "task_id": str(job.id),
            "task": job.task,
            "status": state,
            "progress": _progress(job),
            "result": _result(job),
            "error": f"{error.type}: {error.message}"
            if error is not None and state != "SUCCESS"
            else None,
        }
    )


@router.get(
    "/erp/task-status/{task_id}",
    response_model=TaskStatus,
    summary="Read an ERP sync's status",
    responses={
        200: ok_response(
            "The sync's status, progress, and result or error.",
            **STATUS_EXAMPLES,
        ),
        **UNAUTHENTICATED,
        404: error_response(
            "No ERP sync has this task_id (it never existed, was pruned, or is another task).",
            unknown=("An unknown id", "no ERP sync task has task_id '999'"),
        ),
        **invalid(
            "The task_id is longer than any id.",
            (
                "A very long id",
                ["path", "task_id"],
                "String should have at most 64 characters",
                "string_too_long",
            ),
        ),
        **UNAVAILABLE,
    },
)
async def read_task_status(
    task_id: Annotated[
        str,
        Path(
            max_length=64,
            description="The `task_id` a start endpoint answered (the job's id).",
            openapi_examples=parameter_examples(job=("A task_id", "42")),
        ),
    ],
    conn: Conn,
    caller: Reader,
) -> TaskStatus:
    """Where the sync stands: PENDING, PROGRESS (with `message`, `progress` as `done/total`
    and the counters), RETRY or FAILURE (with the error), SUCCESS (with the counts). The full
    job, with every attempt's error and traceback, is `GET /jobs/{task_id}`. Needs the read
    scope."""
    unknown = UnknownSyncTask(f"no ERP sync task has task_id {task_id!r}")
    if not TASK_ID.fullmatch(task_id) or not 1 <= int(task_id) <= MAX_JOB_ID:
        raise unknown
    try:
        job = await jobs.get_job(conn, int(task_id))
    except JobNotFound:
        raise unknown from None
    if job.task not in {task.name for task in SYNC_TASKS.values()}:
        raise unknown
    return task_status(job)


@router.get(
    "/erp/sync-runs",
    response_model=list[erp.SyncRun],
    summary="List the ERP sync runs",
    responses={
        200: ok_response(
            "Runs, newest first.", history=("A success after a failure", [RUN, FAILED_RUN])
        ),
        **UNAUTHENTICATED,
        **invalid(
            "A filter is invalid; `loc` names it.",
            (
                "A kind that does not exist",
                ["query", "kind"],
                "Input should be 'assets' or 'locations'",
                "literal_error",
            ),
        ),
        **UNAVAILABLE,
    },
)
async def list_sync_runs(
    conn: Conn,
    caller: Reader,
    kind: Annotated[
        erp.Kind | None,
        Query(
            description="Only runs syncing this kind of record.",
            openapi_examples=parameter_examples(assets=("Asset syncs", "assets")),
        ),
    ] = None,
    run_status: Annotated[
        Literal["running", "succeeded", "failed"] | None,
        Query(
            alias="status",
            description="Only runs in this status.",
            openapi_examples=parameter_examples(failed=("Failed runs", "failed")),
        ),
    ] = None,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=500,
            description="At most this many runs.",
            openapi_examples=parameter_examples(ten=("The last ten", 10)),
        ),
    ] = 20,
) -> list[erp.SyncRun]:
    """The history of the ERP syncs: one row per attempt, kept after the job is pruned. A
    failed run keeps its error and its checkpoint (`next_page`); the job's retry resumes from
    there (`resumed_from`). Needs the read scope."""
    return await erp.list_runs(conn, kind=kind, status=run_status, limit=limit)
