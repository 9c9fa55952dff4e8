"""Jobs: enqueue, read (or wait for), list, cancel and retry."""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response, status

from backend import jobs, queue
from backend.api.deps import Conn, Operator, Pool, Reader, Watcher, connection
from backend.api.schemas import DeferRequest, ErrorBody
from backend.db import DictConnection
from backend.errors import TaskhubError
from backend.queries import QUERIES
from backend.waiting import MAX_WAIT, wait_until_finished

router = APIRouter(tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="procrastinate's job id")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Retrying with the same key within 24 h returns the same job, never a second.",
    ),
]
Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "No such job."}}
AUTH: Responses = {
    401: {"model": ErrorBody, "description": "No valid API token."},
    403: {"model": ErrorBody, "description": "The token's scope is too low."},
}


class IdempotencyConflict(TaskhubError):
    """The key was used before with a different request."""

    status_code = 409


def _request_hash(body: DeferRequest) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _replay(conn: DictConnection, actor: str, key: str, body: DeferRequest) -> int | None:
    """The job an earlier request with this key created, if any; waits for a concurrent one."""
    params = {"actor": actor, "key": key}
    await conn.execute(QUERIES["lock_idempotency_key"], params)
    cursor = await conn.execute(QUERIES["find_idempotency_key"], params)
    row = await cursor.fetchone()
    if row is None:
        return None
    if row["request_hash"] != _request_hash(body):
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was already used with a different request"
        )
    return int(row["job_id"])


@router.post(
    "/jobs",
    status_code=status.HTTP_201_CREATED,
    response_model=jobs.JobView,
    responses={
        200: {"model": jobs.JobView, "description": "Replayed: this Idempotency-Key's job."},
        **AUTH,
        404: {"model": ErrorBody, "description": "Unknown task."},
        409: {"model": ErrorBody, "description": "Queueing lock taken, or key reused."},
        422: {"model": ErrorBody, "description": "Invalid body or arguments; nothing enqueued."},
    },
)
async def create_job(
    body: DeferRequest,
    conn: Conn,
    response: Response,
    caller: Operator,
    idempotency_key: IdempotencyKey = None,
) -> jobs.JobView:
    """Validate the arguments against the task's model and enqueue one job."""
    task = queue.get_task(body.task)
    if idempotency_key is not None:
        replayed = await _replay(conn, caller.name, idempotency_key, body)
        if replayed is not None:
            response.status_code = status.HTTP_200_OK
            response.headers["Idempotent-Replayed"] = "true"
            return await jobs.get_job(conn, replayed)
    job_id = await queue.defer(conn, task, body.args, **body.options())
    if idempotency_key is not None:
        await conn.execute(
            QUERIES["save_idempotency_key"],
            {
                "actor": caller.name,
                "key": idempotency_key,
                "request_hash": _request_hash(body),
                "job_id": job_id,
            },
        )
    response.headers["Location"] = f"/jobs/{job_id}"
    return await jobs.get_job(conn, job_id)


@router.get("/jobs", response_model=jobs.JobPage, responses={**AUTH, 422: {"model": ErrorBody}})
async def list_jobs(
    conn: Conn,
    caller: Reader,
    status: Annotated[
        list[jobs.JobStatus] | None, Query(description="procrastinate status; repeatable")
    ] = None,
    state: Annotated[
        list[jobs.JobState] | None,
        Query(description="Celery state; repeatable. FAILURE lists the dead letters."),
    ] = None,
    task: Annotated[str | None, Query(max_length=200)] = None,
    queue_name: Annotated[str | None, Query(alias="queue", max_length=40)] = None,
    created_after: datetime.datetime | None = None,
    created_before: datetime.datetime | None = None,
    finished_after: datetime.datetime | None = None,
    finished_before: datetime.datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=64, description="next_cursor from the previous page")
    ] = None,
) -> jobs.JobPage:
    """Jobs newest first, with their progress, result and last error."""
    filters = jobs.JobFilters(
        statuses=status,
        states=state,
        task=task,
        queue=queue_name,
        created_after=created_after,
        created_before=created_before,
        finished_after=finished_after,
        finished_before=finished_before,
    )
    return await jobs.list_jobs(conn, filters, limit=limit, cursor=cursor)


@router.get("/jobs/{job_id}", response_model=jobs.JobView, responses={**AUTH, **NOT_FOUND})
async def read_job(
    job_id: JobId,
    request: Request,
    pool: Pool,
    watcher: Watcher,
    caller: Reader,
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT, description="Seconds to wait for the job to finish (long poll)."),
    ] = 0,
) -> jobs.JobView:
    """A job's status, state, progress, result, errors and event timeline.

    With ``wait``, the answer comes as soon as the job finishes, or after ``wait`` seconds.
    """

    async def read() -> jobs.JobView:
        # A fresh connection per read: a waiting request holds no connection.
        async with connection(pool, request.app.state.settings.database_timeout) as conn:
            return await jobs.get_job(conn, job_id)

    if wait <= 0:
        return await read()
    return await wait_until_finished(watcher, job_id, wait, read)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=jobs.JobView,
    responses={**AUTH, **NOT_FOUND, 409: {"model": ErrorBody, "description": "Already finished."}},
)
async def cancel_job(job_id: JobId, conn: Conn, caller: Operator) -> jobs.JobView:
    """Cancel a waiting job, or ask a running one to abort. Recorded in the audit log."""
    return await jobs.cancel_job(conn, job_id, actor=caller.name)


@router.post(
    "/jobs/{job_id}/retry",
    response_model=jobs.JobView,
    responses={**AUTH, **NOT_FOUND, 409: {"model": ErrorBody, "description": "Not finished."}},
)
async def retry_job(job_id: JobId, conn: Conn, caller: Operator) -> jobs.JobView:
    """Run a failed, cancelled or aborted job again. Recorded in the audit log."""
    return await jobs.retry_job(conn, job_id, actor=caller.name)
