"""Backups: the runs of the backup task, as taskhub.backups records them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from backend.api.deps import Conn, Reader
from backend.api.schemas import (
    UNAUTHENTICATED,
    UNAVAILABLE,
    invalid,
    ok_response,
    parameter_examples,
)
from backend.maintenance import backups

router = APIRouter(tags=["backups"])

NIGHTLY = {
    "id": 42,
    "job_id": 1812,
    "attempt": 1,
    "status": "succeeded",
    "path": "/var/lib/taskhub/backups/app-20300101T000000Z-42.dump",
    "size_bytes": 18_432_000,
    "tables": 31,
    "toc_entries": 214,
    "server_version": "15.19",
    "pg_dump": "pg_dump (PostgreSQL) 15.19 (path)",
    "error": None,
    "started_at": "2030-01-01T00:00:00.41Z",
    "finished_at": "2030-01-01T00:00:09.86Z",
    "duration_seconds": 9.45,
    "deleted_at": None,
}
FAILED = {
    **NIGHTLY,
    "id": 43,
    "status": "failed",
    "path": None,
    "size_bytes": None,
    "toc_entries": None,
    "error": "pg_dump exited with 1: could not open output file: Permission denied",
}


@router.get(
    "/backups",
    response_model=list[backups.BackupRecord],
    summary="List the backups",
    responses={
        200: ok_response(
            "Backup runs, newest first.", runs=("A failure after a success", [FAILED, NIGHTLY])
        ),
        **UNAUTHENTICATED,
        **invalid(
            "A filter is invalid; `loc` names it.",
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
async def list_backups(
    conn: Conn,
    caller: Reader,
    status: Annotated[
        Literal["running", "succeeded", "failed"] | None,
        Query(
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
            openapi_examples=parameter_examples(week=("The last week", 7)),
        ),
    ] = 20,
) -> list[backups.BackupRecord]:
    """Runs of `taskhub.backup_database`, newest first: file, size, duration, status, the error
    of a failed run, and when retention deleted the file. A failed run also raised a
    `backup_failed` alert."""
    return await backups.list_backups(conn, limit=limit, status=status)
