"""Saving an upload: its rows and the chart sync job commit together, or neither does."""

from __future__ import annotations

from django.db import transaction

from backend.examples.hrms.salaries.models import MONTHS, SalaryData, SalaryUpload, Tenant
from backend.examples.hrms.salaries.tasks import sync_chart_data_batch_task
from backend.examples.hrms.salaries.uploads import UploadError, read_rows


def save_upload(
    tenant: Tenant, year: int, month: str, filename: str, content: bytes
) -> SalaryUpload:
    """The rows, the upload and its job in one transaction (the seed's thread fallback for a
    broker that is down is gone: there is no broker to be down)."""
    if month not in MONTHS:
        raise UploadError(f"month must be one of {', '.join(MONTHS)}, not {month!r}")
    if not 2000 <= year <= 2100:
        raise UploadError(f"year must be between 2000 and 2100, not {year}")
    source, rows = read_rows(filename, content)
    with transaction.atomic():
        upload = SalaryUpload.objects.create(
            tenant=tenant, year=year, month=month, source=source, filename=filename, rows=len(rows)
        )
        SalaryData.objects.filter(tenant=tenant, year=year, month=month).delete()
        SalaryData.objects.bulk_create(
            SalaryData(
                tenant=tenant,
                upload=upload,
                year=year,
                month=month,
                employee_id=row.employee_id,
                name=row.name,
                department=row.department,
                salary=row.salary,
            )
            for row in rows
        )
        result = sync_chart_data_batch_task.enqueue(tenant.pk, year, month, source)
        upload.task_id = result.id
        upload.save(update_fields=["task_id"])
    return upload
