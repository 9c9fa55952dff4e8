"""The analytics family over HTTP: the daily KPIs and their CSV reports, served from the
database (so any API replica serves any report)."""

from __future__ import annotations

import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from backend.api.deps import Conn, Reader
from backend.api.schemas import UNAUTHENTICATED, UNAVAILABLE, error_response
from backend.errors import TaskhubError
from backend.examples.manufacturing.analytics import service

router = APIRouter(tags=["manufacturing"])

Limit = Annotated[int, Query(ge=1, le=1000, description="Days to list, newest first.")]
Day = Annotated[datetime.date, Path(description="The UTC day, YYYY-MM-DD.")]


class ReportNotFound(TaskhubError):
    """No report was generated for that day."""

    status_code = 404


@router.get(
    "/manufacturing/kpis",
    response_model=list[service.DayKpis],
    summary="Daily KPIs, newest first",
    responses={**UNAUTHENTICATED, **UNAVAILABLE},
)
async def list_kpis(conn: Conn, caller: Reader, limit: Limit = 30) -> list[service.DayKpis]:
    """One row per day manufacturing.generate_daily_report ran for. Needs the read scope."""
    return await service.list_kpis(conn, limit)


@router.get(
    "/manufacturing/reports",
    response_model=list[service.ReportFile],
    summary="Daily CSV reports, newest first",
    responses={**UNAUTHENTICATED, **UNAVAILABLE},
)
async def list_reports(conn: Conn, caller: Reader, limit: Limit = 30) -> list[service.ReportFile]:
    """The days that have a report, with each one's download URL. Needs the read scope."""
    return await service.list_reports(conn, limit)


@router.get(
    "/manufacturing/reports/{day}.csv",
    response_class=Response,
    summary="Download a day's CSV report",
    responses={
        200: {"content": {"text/csv": {}}, "description": "The report (`kpi,value` rows)."},
        **UNAUTHENTICATED,
        404: error_response(
            "No report for this day.",
            unknown=(
                "A day without a report",
                "no report for 2020-01-01: reports exist for "
                "the days manufacturing.generate_daily_report ran for",
            ),
        ),
        **UNAVAILABLE,
    },
)
async def download_report(day: Day, conn: Conn, caller: Reader) -> Response:
    """The day's KPIs as CSV, as an attachment. Needs the read scope."""
    report = await service.get_report(conn, day)
    if report is None:
        raise ReportNotFound(
            f"no report for {day.isoformat()}: reports exist for the days "
            "manufacturing.generate_daily_report ran for (GET /manufacturing/reports)"
        )
    filename = f"manufacturing-kpis-{day.isoformat()}.csv"
    return Response(
        content=report,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
