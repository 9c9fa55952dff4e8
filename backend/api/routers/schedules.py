"""Schedules: the periodic tasks, when each runs next and how its last run went."""

from __future__ import annotations

from fastapi import APIRouter, Request

from backend.api.deps import Apps, Conn, Reader
from backend.api.schemas import UNAUTHENTICATED, UNAVAILABLE, ok_response
from backend.control import schedules

router = APIRouter(tags=["schedules"])

BACKUP = {
    "task": "taskhub.backup_database",
    "cron": "0 3 * * *",
    "declared_cron": "0 3 * * *",
    "timezone": "Asia/Riyadh",
    "queue": "maintenance",
    "enabled": True,
    "next_run_at": "2030-01-02T03:00:00+03:00",
    "last_run": {
        "job_id": 1812,
        "status": "succeeded",
        "tick_at": "2030-01-01T03:00:00+03:00",
        "started_at": "2030-01-01T00:00:00.41Z",
        "finished_at": "2030-01-01T00:00:09.86Z",
    },
}


@router.get(
    "/schedules",
    response_model=list[schedules.ScheduleView],
    summary="List the schedules",
    responses={
        200: ok_response("Every periodic task.", backup=("The nightly backup", [BACKUP])),
        **UNAUTHENTICATED,
        **UNAVAILABLE,
    },
)
async def list_schedules(
    request: Request, conn: Conn, caller: Reader, apps: Apps
) -> list[schedules.ScheduleView]:
    """Every periodic task, built-in maintenance included: its cron and timezone
    (`TASKHUB_TIMEZONE`), the next tick, and the job of the latest tick with its status.
    Schedules turned off in `TASKHUB_SCHEDULES` are listed with `enabled: false`."""
    return await schedules.list_schedules(
        conn, request.app.state.settings, blueprints=apps.blueprints
    )
