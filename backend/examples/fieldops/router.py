"""The reports through taskhub's API too (``taskhub api`` mounts it): the PDF the worker wrote,
read from the folder the Flask app serves."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from backend.api.deps import Conn, Reader
from backend.errors import TaskhubError
from backend.examples.fieldops.service import QUERIES
from backend.examples.fieldops.settings import FieldopsSettings


class ReportNotReady(TaskhubError):
    """The report does not exist, or its PDF is not written yet."""

    status_code = 404


router = APIRouter(prefix="/fieldops", tags=["fieldops"])


@router.get("/reports/{report_id}/pdf", response_class=FileResponse)
async def download_report(
    report_id: int, request: Request, conn: Conn, caller: Reader
) -> FileResponse:
    """The report's PDF once ``fieldops.generate_pdf_report`` has written it."""
    cursor = await conn.execute(QUERIES["fieldops_report"], {"report_id": report_id})
    report = await cursor.fetchone()
    if report is None or report["file_name"] is None:
        raise ReportNotReady(f"report {report_id} is not ready (or does not exist): poll it")
    settings = request.app.state.apps.settings_of(FieldopsSettings)
    folder = settings.reports_path(request.app.state.settings.data_dir)
    return FileResponse(folder / report["file_name"], media_type="application/pdf")
