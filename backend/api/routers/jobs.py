"""Enqueue a job and read it back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from backend import jobs, queue
from backend.api.deps import Conn
from backend.api.schemas import DeferRequest, ErrorBody

router = APIRouter(tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="procrastinate's job id")]


@router.post(
    "/jobs",
    status_code=status.HTTP_201_CREATED,
    response_model=jobs.JobView,
    responses={
        404: {"model": ErrorBody, "description": "Unknown task."},
        409: {"model": ErrorBody, "description": "A job with this queueing lock is waiting."},
        422: {"model": ErrorBody, "description": "Invalid body or arguments; nothing enqueued."},
    },
)
async def create_job(body: DeferRequest, conn: Conn, response: Response) -> jobs.JobView:
    """Validate the arguments against the task's model and enqueue one job."""
    task = queue.get_task(body.task)
    job_id = await queue.defer(conn, task, body.args, **body.options())
    response.headers["Location"] = f"/jobs/{job_id}"
    return await jobs.get_job(conn, job_id)


@router.get(
    "/jobs/{job_id}",
    response_model=jobs.JobView,
    responses={404: {"model": ErrorBody, "description": "No such job."}},
)
async def read_job(job_id: JobId, conn: Conn) -> jobs.JobView:
    """A job's status, Celery-style state, attempts, timestamps and event timeline."""
    return await jobs.get_job(conn, job_id)
