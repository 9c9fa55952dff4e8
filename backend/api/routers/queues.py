"""Queues: what waits where; pause, resume or purge one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from backend.api.deps import Conn, Operator, Reader
from backend.api.schemas import (
    FORBIDDEN,
    UNAUTHENTICATED,
    UNAVAILABLE,
    invalid,
    ok_response,
    parameter_examples,
)
from backend.control import queues
from backend.defer import QUEUE_PATTERN

router = APIRouter(tags=["queues"])

QueueName = Annotated[
    str,
    Path(
        pattern=QUEUE_PATTERN,
        description="Queue name.",
        openapi_examples=parameter_examples(emails=("A queue", "emails")),
    ),
]
EMAILS = {
    "name": "emails",
    "todo": 1200,
    "doing": 10,
    "oldest_todo_at": "2030-01-01T08:00:00Z",
    "paused": False,
    "paused_at": None,
    "paused_by": None,
}
PAUSED = {**EMAILS, "paused": True, "paused_at": "2030-01-01T08:05:00Z", "paused_by": "ops"}
INVALID_NAME = invalid(
    "The queue name is not one taskhub accepts.",
    ("A space in the name", ["path", "name"], "String should match pattern", "string_pattern"),
)


@router.get(
    "/queues",
    response_model=list[queues.QueueInfo],
    summary="List the queues",
    responses={
        200: ok_response("Queues with jobs, or paused.", queues=("Two queues", [EMAILS])),
        **UNAUTHENTICATED,
        **UNAVAILABLE,
    },
)
async def list_queues(conn: Conn, caller: Reader) -> list[queues.QueueInfo]:
    """Every queue that has waiting or running jobs, or is paused: jobs waiting and running,
    when the oldest waiting job was deferred, and whether it is paused (by whom, since when).
    Finished jobs are not counted (the cost follows the jobs in flight, not the table):
    `GET /jobs?queue=...&status=...` lists them."""
    return await queues.list_queues(conn)


@router.post(
    "/queues/{name}/pause",
    response_model=queues.QueueInfo,
    summary="Pause a queue",
    responses={
        200: ok_response("The queue, now paused.", paused=("Paused", PAUSED)),
        **UNAUTHENTICATED,
        **FORBIDDEN,
        **INVALID_NAME,
        **UNAVAILABLE,
    },
)
async def pause_queue(name: QueueName, conn: Conn, caller: Operator) -> queues.QueueInfo:
    """Workers stop taking this queue's jobs (running ones finish); other queues go on.
    Pausing a paused queue changes nothing. Recorded in the audit log."""
    return await queues.pause_queue(conn, name, actor=caller.name)


@router.post(
    "/queues/{name}/resume",
    response_model=queues.QueueInfo,
    summary="Resume a queue",
    responses={
        200: ok_response("The queue, running again.", resumed=("Resumed", EMAILS)),
        **UNAUTHENTICATED,
        **FORBIDDEN,
        **INVALID_NAME,
        **UNAVAILABLE,
    },
)
async def resume_queue(name: QueueName, conn: Conn, caller: Operator) -> queues.QueueInfo:
    """Workers take this queue's jobs again, at once (they are woken). Recorded in the audit
    log."""
    return await queues.resume_queue(conn, name, actor=caller.name)


@router.post(
    "/queues/{name}/purge",
    response_model=queues.PurgeResult,
    summary="Purge a queue's waiting jobs",
    responses={
        200: ok_response(
            "How many waiting jobs were deleted.",
            purged=("Purged", {"name": "emails", "purged": 1200}),
        ),
        **UNAUTHENTICATED,
        **FORBIDDEN,
        **INVALID_NAME,
        **UNAVAILABLE,
    },
)
async def purge_queue(name: QueueName, conn: Conn, caller: Operator) -> queues.PurgeResult:
    """Delete the queue's waiting jobs (status `todo`, scheduled ones included), with their
    events; running jobs go on. Recorded in the audit log when any was deleted."""
    return await queues.purge(conn, name, actor=caller.name)
