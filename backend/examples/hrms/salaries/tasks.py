"""The seed's two Celery tasks as Django tasks, run by taskhub workers.

``sync_chart_data_batch_task``: on ``chart_sync``, 3 attempts 60 s apart, 30-minute limit.
``cleanup_old_chart_data``: every Sunday at 02:00 (TASKHUB_TIMEZONE), on ``maintenance``.
"""

from __future__ import annotations

import datetime
import logging
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from backend.declare.policy import Retry
from backend.examples.hrms.salaries.models import MONTHS, ChartAggregatedData, SalaryData, Tenant
from backend.integrations.django import TaskhubTaskContext
from backend.integrations.django.compat import TaskContext, task

logger = logging.getLogger(__name__)

CHART_RETENTION_DAYS = 90


class ChartSyncError(Exception):
    """The chart data could not be computed from the uploaded salaries."""


@task(
    queue_name="chart_sync",
    takes_context=True,
    retry=Retry(retries=2, backoff=60, factor=1),  # 3 attempts, 60 s apart
    time_limit=30 * 60,
)
def sync_chart_data_batch_task(
    context: TaskContext, tenant_id: int, year: int, month: str, source: str
) -> dict[str, Any]:
    """Rebuild one tenant's chart rows for a month from its salary rows (a rerun replaces)."""
    assert isinstance(context, TaskhubTaskContext)  # taskhub's: progress, aborts
    if month not in MONTHS:
        raise ChartSyncError(f"month {month!r} is not one of {', '.join(MONTHS)}")
    if not Tenant.objects.filter(pk=tenant_id).exists():
        # Re-read, not trusted: the tenant may be gone since the upload.
        return {"tenant": tenant_id, "skipped": f"tenant {tenant_id} no longer exists"}
    groups = list(
        SalaryData.objects.filter(tenant_id=tenant_id, year=year, month=month)
        .values("department")
        .annotate(employees=Count("id"), total=Sum("salary"))
        .order_by("department")
    )
    now = timezone.now()
    with transaction.atomic():
        ChartAggregatedData.objects.filter(tenant_id=tenant_id, year=year, month=month).delete()
        for done, group in enumerate(groups, start=1):
            total: Decimal = group["total"]
            ChartAggregatedData.objects.create(
                tenant_id=tenant_id,
                year=year,
                month=month,
                department=group["department"],
                employees=group["employees"],
                total_salary=total,
                average_salary=(total / group["employees"]).quantize(Decimal("0.01")),
                updated_at=now,
            )
            context.job.progress(done=done, total=len(groups), message=group["department"])
    employees = sum(group["employees"] for group in groups)
    logger.info("chart data synced: tenant %s %s %s from %s", tenant_id, year, month, source)
    return {
        "tenant": tenant_id,
        "year": year,
        "month": month,
        "source": source,
        "departments": len(groups),
        "employees": employees,
    }


@task(queue_name="maintenance", cron="0 2 * * 0")
def cleanup_old_chart_data() -> dict[str, int]:
    """Remove chart data not refreshed for 90 days: the dashboard shows the last quarter."""
    cutoff = timezone.now() - datetime.timedelta(days=CHART_RETENTION_DAYS)
    deleted, _ = ChartAggregatedData.objects.filter(updated_at__lt=cutoff).delete()
    return {"deleted": deleted}
