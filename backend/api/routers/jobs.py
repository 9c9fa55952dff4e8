"""Jobs: enqueue, read (or wait for), list, cancel and retry."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response, status

from backend import defer
from backend.api.deps import Apps, Conn, Operator, Pool, Reader, Watcher, connection
from backend.api.schemas import (
    ABORTING_JOB,
    CANCELLED_JOB,
    DEFER_EXAMPLES,
    FORBIDDEN,
    INVALID_JOB_ID,
    JOB_EXAMPLES,
    JOB_NOT_FOUND,
    JOB_PAGE_EXAMPLES,
    MAX_BODY_BYTES,
    RETRIED_JOB,
    UNAUTHENTICATED,
    UNAVAILABLE,
    DeferRequest,
    Responses,
    UtcTime,
    error_response,
    invalid,
    ok_response,
    parameter_examples,
)
from backend.control import jobs
from backend.control.waiting import MAX_WAIT, wait_until_finished
from backend.db import DictConnection
from backend.errors import TaskhubError
from backend.queries import QUERIES

router = APIRouter(tags=["jobs"])

#: PostgreSQL text cannot hold NUL: a filter with one is a 422, not a failed query.
NUL_FREE = r"^[^\x00]*$"


JobId = Annotated[
    int,
    Path(
        ge=1,
        le=2**63 - 1,
        description="procrastinate's job id.",
        openapi_examples=parameter_examples(job=("A job id", 42)),
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description=(
            "Retrying with the same key within 24 h returns the same job (200, with"
            " `Idempotent-Replayed: true`), never a second; the same key with another body is a"
            " 409. Printable ASCII, no spaces, at most 255 characters."
        ),
        openapi_examples=parameter_examples(
            uuid=("A UUID", "4f8c2a8e-5a0b-4d6e-9a7c-2b1d3e4f5a6b")
        ),
    ),
]


class IdempotencyConflict(TaskhubError):
    """The key was used before with a different request."""

    status_code = 409


def _request_hash(body: DeferRequest) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _replay(conn: DictConnection, actor: str, key: str, request_hash: str) -> int | None:
    """The job an earlier request with this key created, if any; waits for a concurrent one."""
    params = {"actor": actor, "key": key}
    await conn.execute(QUERIES["lock_idempotency_key"], params)
    cursor = await conn.execute(QUERIES["find_idempotency_key"], params)
    row = await cursor.fetchone()
    if row is None:
        return None
    if row["request_hash"] != request_hash:
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was already used with a different request"
        )
    return int(row["job_id"])


CREATE_RESPONSES: Responses = {
    201: {
        **ok_response(
            "Enqueued: the new job. `Location` names it.",
            pending=("A new job", JOB_EXAMPLES["pending"]["value"]),
        ),
        "headers": {
            "Location": {"description": "`/jobs/{id}`", "schema": {"type": "string"}},
        },
    },
    200: {
        "model": jobs.JobView,
        **ok_response(
            "Replayed: the job an earlier request with this Idempotency-Key created.",
            replayed=("The earlier request's job", JOB_EXAMPLES["succeeded"]["value"]),
        ),
        "headers": {
            "Idempotent-Replayed": {"description": "`true`", "schema": {"type": "string"}},
        },
    },
    400: error_response(
        "The body could not be read (it is not UTF-8, or nests too deep for the JSON parser).",
        unreadable=("Bytes that are not UTF-8", "There was an error parsing the body"),
    ),
    **UNAUTHENTICATED,
    **FORBIDDEN,
    404: error_response(
        "No task is registered under that name; nothing was enqueued.",
        unknown_task=(
            "A typo in the task name",
            "unknown task 'payroll.run'; registered tasks: taskhub.ping",
        ),
    ),
    409: error_response(
        "A job with this queueing lock is already waiting, or the Idempotency-Key was used with"
        " another body; nothing was enqueued.",
        queueing_lock=(
            "Queueing lock taken",
            "Job cannot be enqueued: there is already a job in the queue with the queueing lock"
            " ping-customer-7",
        ),
        key_reused=(
            "Idempotency-Key reused",
            "Idempotency-Key 'order-42' was already used with a different request",
        ),
    ),
    413: error_response(
        f"The body is larger than {MAX_BODY_BYTES} bytes; pass ids in `args`, not documents.",
        too_large=("A 5 MB body", f"the request body is larger than {MAX_BODY_BYTES} bytes"),
    ),
    **invalid(
        "The body, the arguments (checked against the task's model) or a header is invalid;"
        " `loc` names the field. Nothing was enqueued.",
        (
            "An argument the task rejects",
            ["body", "args", "sleep"],
            "Input should be greater than or equal to 0",
            "greater_than_equal",
        ),
        (
            "An option out of range",
            ["body", "priority"],
            "Input should be less than or equal to 2147483647",
            "less_than_equal",
        ),
    ),
    **UNAVAILABLE,
}


@router.post(
    "/jobs",
    status_code=status.HTTP_201_CREATED,
    response_model=jobs.JobView,
    summary="Enqueue a job",
    response_description="Enqueued: the new job. `Location` names it.",
    responses=CREATE_RESPONSES,
)
async def create_job(
    body: Annotated[DeferRequest, Body(openapi_examples=DEFER_EXAMPLES)],
    conn: Conn,
    response: Response,
    caller: Operator,
    apps: Apps,
    idempotency_key: IdempotencyKey = None,
) -> jobs.JobView:
    """Validate the arguments against the task's model and enqueue one job.

    The job and its `deferred` event commit together, with the request; a worker is woken at
    once. Options left out take the task's defaults (see `GET /tasks`). Needs the operate
    scope.
    """
    task = apps.task(body.task)
    request_hash = _request_hash(body) if idempotency_key is not None else ""
    if idempotency_key is not None:
        replayed = await _replay(conn, caller.name, idempotency_key, request_hash)
        if replayed is not None:
            response.status_code = status.HTTP_200_OK
            response.headers["Idempotent-Replayed"] = "true"
            return jobs.masked(await jobs.get_job(conn, replayed), apps.mask_args)
    job_id = await defer.defer(conn, task, body.args, **body.options())
    if idempotency_key is not None:
        await conn.execute(
            QUERIES["save_idempotency_key"],
            {
                "actor": caller.name,
                "key": idempotency_key,
                "request_hash": request_hash,
                "job_id": job_id,
            },
        )
    response.headers["Location"] = f"/jobs/{job_id}"
    return jobs.masked(await jobs.get_job(conn, job_id), apps.mask_args)


TIME_EXAMPLE = parameter_examples(utc=("A UTC time", "2030-01-01T08:00:00Z"))


@router.get(
    "/jobs",
    response_model=jobs.JobPage,
    summary="List jobs",
    responses={
        200: ok_response(
            "One page of jobs, newest first.",
            **{name: (ex["summary"], ex["value"]) for name, ex in JOB_PAGE_EXAMPLES.items()},
        ),
        **UNAUTHENTICATED,
        **invalid(
            "A filter or the cursor is invalid; `loc` names it.",
            (
                "A status that does not exist",
                ["query", "status", 0],
                "Input should be 'todo', 'doing', 'succeeded', 'failed', 'cancelled' or 'aborted'",
                "enum",
            ),
            (
                "A page size out of range",
                ["query", "limit"],
                "Input should be less than or equal to 500",
                "less_than_equal",
            ),
        ),
        **UNAVAILABLE,
    },
)
async def list_jobs(
    conn: Conn,
    caller: Reader,
    apps: Apps,
    status: Annotated[
        list[jobs.JobStatus] | None,
        Query(
            description="procrastinate status; repeat to match any of several.",
            openapi_examples=parameter_examples(
                waiting=("Waiting jobs", ["todo"]), finished=("Failed", ["failed"])
            ),
        ),
    ] = None,
    state: Annotated[
        list[jobs.JobState] | None,
        Query(
            description="Celery state; repeat to match any of several. FAILURE lists the dead"
            " letters.",
            openapi_examples=parameter_examples(dead=("Dead letters", ["FAILURE"])),
        ),
    ] = None,
    task: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=NUL_FREE,
            description="Only this task's jobs.",
            openapi_examples=parameter_examples(ping=("One task", "taskhub.ping")),
        ),
    ] = None,
    queue_name: Annotated[
        str | None,
        Query(
            alias="queue",
            max_length=40,
            pattern=NUL_FREE,
            description="Only the jobs of this queue.",
            openapi_examples=parameter_examples(default=("One queue", "default")),
        ),
    ] = None,
    created_after: Annotated[
        UtcTime,
        Query(description="Created at or after this time.", openapi_examples=TIME_EXAMPLE),
    ] = None,
    created_before: Annotated[
        UtcTime,
        Query(description="Created before this time.", openapi_examples=TIME_EXAMPLE),
    ] = None,
    finished_after: Annotated[
        UtcTime,
        Query(description="Finished at or after this time.", openapi_examples=TIME_EXAMPLE),
    ] = None,
    finished_before: Annotated[
        UtcTime,
        Query(description="Finished before this time.", openapi_examples=TIME_EXAMPLE),
    ] = None,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=500,
            description="Jobs per page.",
            openapi_examples=parameter_examples(page=("Ten per page", 10)),
        ),
    ] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=64,
            description="`next_cursor` of the previous page.",
            openapi_examples=parameter_examples(next=("The page after job 42", "aWQ6NDI")),
        ),
    ] = None,
) -> jobs.JobPage:
    """Jobs newest first, with their progress, result and last error.

    Filters combine with AND; a repeated `status` or `state` matches any of its values. Pages
    are keyset-paginated on the id, so jobs enqueued meanwhile never shift later pages.
    """
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
    page = await jobs.list_jobs(conn, filters, limit=limit, cursor=cursor)
    return jobs.masked_page(page, apps.mask_args)


@router.get(
    "/jobs/{job_id}",
    response_model=jobs.JobView,
    summary="Read a job, or wait for it to finish",
    responses={
        200: ok_response(
            "The job.",
            **{name: (ex["summary"], ex["value"]) for name, ex in JOB_EXAMPLES.items()},
        ),
        **UNAUTHENTICATED,
        **JOB_NOT_FOUND,
        **invalid(
            "The id or `wait` is out of range.",
            INVALID_JOB_ID,
            (
                "Waiting too long",
                ["query", "wait"],
                f"Input should be less than or equal to {MAX_WAIT:g}",
                "less_than_equal",
            ),
        ),
        **UNAVAILABLE,
    },
)
async def read_job(
    job_id: JobId,
    request: Request,
    pool: Pool,
    watcher: Watcher,
    caller: Reader,
    apps: Apps,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT,
            description=f"Seconds (at most {MAX_WAIT:g}) to wait for the job to finish: a long"
            " poll, woken by PostgreSQL when the job ends. 0 answers at once.",
            openapi_examples=parameter_examples(
                now=("Answer at once", 0), long_poll=("Wait up to 30 s", 30)
            ),
        ),
    ] = 0,
) -> jobs.JobView:
    """A job's status, state, progress, result, errors and event timeline.

    With `wait`, the answer comes as soon as the job finishes, or after `wait` seconds with the
    job as it is then. A waiting request holds no database connection.
    """

    def connect() -> contextlib.AbstractAsyncContextManager[DictConnection]:
        # A fresh connection per read: a waiting request holds no connection.
        return connection(pool, request.app.state.settings.database_timeout)

    if wait <= 0:
        async with connect() as conn:
            return jobs.masked(await jobs.get_job(conn, job_id), apps.mask_args)
    job = await wait_until_finished(watcher, job_id, wait, connect)
    return jobs.masked(job, apps.mask_args)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=jobs.JobView,
    summary="Cancel a job",
    responses={
        200: ok_response(
            "The job, cancelled (it was waiting) or asked to abort (it was running).",
            cancelled=("A waiting job, cancelled", CANCELLED_JOB),
            aborting=("A running job, asked to abort", ABORTING_JOB),
        ),
        **UNAUTHENTICATED,
        **FORBIDDEN,
        **JOB_NOT_FOUND,
        409: error_response(
            "The job has already finished.",
            finished=(
                "A finished job",
                "job 42 is succeeded: only waiting or running jobs can be cancelled",
            ),
        ),
        **invalid("The id is out of range.", INVALID_JOB_ID),
        **UNAVAILABLE,
    },
)
async def cancel_job(job_id: JobId, conn: Conn, caller: Operator, apps: Apps) -> jobs.JobView:
    """Cancel a waiting job, or ask a running one to abort (the task sees the request).

    Recorded in the audit log under the token's name. Needs the operate scope.
    """
    return jobs.masked(await jobs.cancel_job(conn, job_id, actor=caller.name), apps.mask_args)


@router.post(
    "/jobs/{job_id}/retry",
    response_model=jobs.JobView,
    summary="Retry a finished job",
    responses={
        200: ok_response(
            "The job, waiting to run again; its events and errors stay.",
            retried=("A failed job, retried", RETRIED_JOB),
        ),
        **UNAUTHENTICATED,
        **FORBIDDEN,
        **JOB_NOT_FOUND,
        409: error_response(
            "The job is waiting, running or succeeded.",
            not_finished=(
                "A waiting job",
                "job 42 is todo: only failed, cancelled or aborted jobs can be retried",
            ),
        ),
        **invalid("The id is out of range.", INVALID_JOB_ID),
        **UNAVAILABLE,
    },
)
async def retry_job(job_id: JobId, conn: Conn, caller: Operator, apps: Apps) -> jobs.JobView:
    """Run a failed, cancelled or aborted job again, now.

    Its history (events, errors, attempts) stays; its progress and result go. Recorded in the
    audit log under the token's name. Needs the operate scope.
    """
    return jobs.masked(await jobs.retry_job(conn, job_id, actor=caller.name), apps.mask_args)
