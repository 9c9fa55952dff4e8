"""The Django task backend with the HRMS project: real Django, real PostgreSQL, real workers.

Django's ORM is synchronous (it refuses to run in a thread with an event loop), so these tests
are plain functions; ``taskhub_run_jobs`` runs a real worker beside them.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import connections, transaction
from django.test import Client
from django.utils import timezone
from openpyxl import Workbook

from backend.examples.hrms import app as hrms_app
from backend.examples.hrms.project.settings import database_from_url
from backend.examples.hrms.salaries import tasks as hrms_tasks
from backend.examples.hrms.salaries.models import ChartAggregatedData, SalaryUpload, Tenant
from backend.examples.hrms.salaries.tasks import cleanup_old_chart_data, sync_chart_data_batch_task
from backend.integrations.django import ArgumentsNotJSON, TaskhubTaskResult
from backend.integrations.django.backend import exception_path
from backend.integrations.django.compat import (
    InvalidTaskError,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
    task,
)
from backend.testing.jobs import JobRunner

pytestmark = pytest.mark.taskhub_apps("backend.examples.hrms.app")

CSV = (
    b"employee_id,name,department,salary\n"
    b"E1,Asha,Sales,50000\nE2,Ravi,Sales,70000\nE3,Meera,Ops,40000\n"
)
SYNC = "backend.examples.hrms.salaries.tasks.sync_chart_data_batch_task"


def excel(rows: list[tuple[Any, ...]]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(("employee_id", "name", "department", "salary"))
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


@pytest.fixture
def hrms_db(taskhub_database_url: str) -> Iterator[str]:
    """Django pointed at this test's database, migrated with ``migrate`` as the team runs it."""
    assert hrms_app.app.name == "hrms"  # imported: Django is set up
    connections.close_all()
    connections["default"].settings_dict.update(database_from_url(taskhub_database_url))
    call_command("migrate", verbosity=0)
    yield taskhub_database_url
    connections.close_all()


def jobs(url: str) -> list[tuple[str, str, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT task_name, queue_name, args FROM procrastinate_jobs ORDER BY id"
        ).fetchall()
    return [(row[0], row[1], row[2]) for row in rows]


def upload(client: Client, tenant: Tenant, name: str, content: bytes, month: str = "JAN") -> Any:
    return client.post(
        "/api/salary-uploads/",
        {"file": _named(content, name), "tenant_id": tenant.pk, "year": 2025, "month": month},
    )


def _named(content: bytes, name: str) -> io.BytesIO:
    buffer = io.BytesIO(content)
    buffer.name = name
    return buffer


def test_rollback_inside_atomic_leaves_no_job(hrms_db: str) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        tenant = Tenant.objects.create(name="rolled back")
        result = sync_chart_data_batch_task.enqueue(tenant.pk, 2025, "JAN", "excel")
        assert jobs(hrms_db) == []  # not committed: another connection does not see it
        assert default_task_backend.get_result(result.id).status == TaskResultStatus.READY
        raise Boom
    assert jobs(hrms_db) == []
    assert not Tenant.objects.exists()


def test_commit_keeps_the_rows_and_the_job(hrms_db: str) -> None:
    with transaction.atomic():
        tenant = Tenant.objects.create(name="acme")
        result = sync_chart_data_batch_task.enqueue(tenant.pk, 2025, "JAN", "excel")
    assert Tenant.objects.filter(pk=tenant.pk).exists()
    assert jobs(hrms_db) == [
        (SYNC, "chart_sync", {"args": [tenant.pk, 2025, "JAN", "excel"], "kwargs": {}})
    ]
    assert isinstance(result, TaskhubTaskResult)
    fresh = sync_chart_data_batch_task.get_result(result.id)
    assert isinstance(fresh, TaskhubTaskResult)
    assert (fresh.status, fresh.state, fresh.attempts) == (TaskResultStatus.READY, "PENDING", 0)
    assert fresh.args == [tenant.pk, 2025, "JAN", "excel"]


def test_outside_atomic_the_job_commits_at_once(hrms_db: str) -> None:
    result = cleanup_old_chart_data.enqueue()
    assert jobs(hrms_db) == [
        (
            "backend.examples.hrms.salaries.tasks.cleanup_old_chart_data",
            "maintenance",
            {"args": [], "kwargs": {}, "timestamp": None},  # periodic: a tick's timestamp
        )
    ]
    assert result.id.isdigit()


@pytest.mark.parametrize(
    ("args", "kwargs", "where"),
    [
        ((object(), 2025, "JAN", "csv"), {}, "args[0] is a object"),
        ((1, datetime.date(2025, 1, 1), "JAN", "csv"), {}, "args[1] is a date"),
        ((1, 2025, "JAN"), {"source": {1: "x"}}, "kwargs['source'] has a key 1"),
        ((1, float("nan"), "JAN", "csv"), {}, "args[1] is nan"),
        ((1, 2025, "JAN", Decimal("1.5")), {}, "args[3] is a Decimal"),
    ],
)
def test_arguments_that_are_not_json_are_refused_and_nothing_is_enqueued(
    hrms_db: str, args: tuple[Any, ...], kwargs: dict[str, Any], where: str
) -> None:
    with transaction.atomic():
        with pytest.raises(ArgumentsNotJSON) as refused:
            sync_chart_data_batch_task.enqueue(*args, **kwargs)
        # The transaction is still usable: nothing was sent.
        Tenant.objects.create(name="still fine")
    assert where in str(refused.value)
    assert "not JSON" in str(refused.value)
    assert jobs(hrms_db) == []


def test_a_queue_the_backend_does_not_list_is_refused(hrms_db: str) -> None:
    with pytest.raises(InvalidTaskError, match="Queue 'payroll' is not valid"):
        sync_chart_data_batch_task.using(queue_name="payroll")
    assert jobs(hrms_db) == []


def takes_a_tenant(tenant_id: int) -> None:
    """A module-level function for the decorator tests below."""


def test_taskhub_options_are_checked_when_declared() -> None:
    with pytest.raises(InvalidTaskError, match=r"soft_time_limit .* must be below"):
        task(time_limit=10, soft_time_limit=20)(takes_a_tenant)
    with pytest.raises(InvalidTaskError, match="not a cron expression"):
        task(cron="every sunday")(takes_a_tenant)
    with pytest.raises(InvalidTaskError, match="called without arguments, but takes tenant_id"):
        task(cron="0 2 * * 0")(takes_a_tenant)
    with pytest.raises(InvalidTaskError, match="rate limit"):
        task(rate_limit="fast")(takes_a_tenant)


def test_unknown_ids_do_not_exist(hrms_db: str) -> None:
    for missing in ("999999", "not-an-id"):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(missing)
    assert Client().get("/api/tasks/999999/").status_code == 404


def test_uploads_defer_the_sync_and_report_success(
    hrms_db: str, taskhub_run_jobs: JobRunner
) -> None:
    client = Client()
    tenant = Tenant.objects.create(name="acme")
    csv_answer = upload(client, tenant, "jan.csv", CSV)
    assert csv_answer.status_code == 201, csv_answer.content
    xlsx = excel([("E1", "Asha", "Sales", 52000), ("E4", "Lena", "HR", 61000.5)])
    xlsx_answer = upload(client, tenant, "feb.xlsx", xlsx, month="FEB")
    assert xlsx_answer.status_code == 201, xlsx_answer.content
    assert xlsx_answer.json()["source"] == "excel"
    task_id = csv_answer.json()["task_id"]
    assert SalaryUpload.objects.get(pk=csv_answer.json()["upload_id"]).task_id == task_id
    assert client.get(f"/api/tasks/{task_id}/").json()["state"] == "PENDING"

    outcomes = taskhub_run_jobs(queues=["chart_sync"])
    assert [outcome.status for outcome in outcomes] == ["succeeded", "succeeded"]

    result = sync_chart_data_batch_task.get_result(task_id)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {
        "tenant": tenant.pk,
        "year": 2025,
        "month": "JAN",
        "source": "csv",
        "departments": 2,
        "employees": 3,
    }
    assert result.attempts == 1
    assert result.errors == []
    body = client.get(f"/api/tasks/{task_id}/").json()
    assert (body["state"], body["status"]) == ("SUCCESS", "SUCCESSFUL")
    assert body["progress"]["done"] == body["progress"]["total"] == 2
    sales = ChartAggregatedData.objects.get(tenant=tenant, month="JAN", department="Sales")
    assert (sales.employees, sales.total_salary, sales.average_salary) == (
        2,
        Decimal("120000.00"),
        Decimal("60000.00"),
    )
    hr = ChartAggregatedData.objects.get(tenant=tenant, month="FEB", department="HR")
    assert hr.total_salary == Decimal("61000.50")


@pytest.mark.parametrize(
    ("name", "content", "status", "message"),
    [
        ("jan.txt", CSV, 400, "upload a .csv or an .xlsx file"),
        ("jan.csv", b"employee_id,name\nE1,Asha\n", 400, "the header lacks department, salary"),
        ("jan.csv", CSV + b"E9,Bad,Ops,lots\n", 400, "row 5: salary 'lots' is not a number"),
        ("jan.xlsx", b"not a zip", 400, "the Excel file cannot be read"),
    ],
)
def test_a_bad_upload_says_why_and_saves_nothing(
    hrms_db: str, name: str, content: bytes, status: int, message: str
) -> None:
    tenant = Tenant.objects.create(name="acme")
    answer = upload(Client(), tenant, name, content)
    assert answer.status_code == status
    assert message in answer.json()["detail"]
    assert not SalaryUpload.objects.exists()
    assert jobs(hrms_db) == []


def test_a_failing_sync_retries_60_s_apart_then_fails_with_its_errors(
    hrms_db: str, taskhub_run_jobs: JobRunner
) -> None:
    tenant = Tenant.objects.create(name="acme")
    result = sync_chart_data_batch_task.enqueue(tenant.pk, 2025, "XYZ", "csv")
    before = timezone.now()
    taskhub_run_jobs(queues=["chart_sync"])
    retrying = sync_chart_data_batch_task.get_result(result.id)
    assert isinstance(retrying, TaskhubTaskResult)
    assert (retrying.status, retrying.state, retrying.attempts) == (
        TaskResultStatus.READY,
        "RETRY",
        1,
    )
    [error] = retrying.errors
    assert error.exception_class_path == f"{hrms_tasks.__name__}.ChartSyncError"
    assert error.exception_class is hrms_tasks.ChartSyncError
    assert "month 'XYZ' is not one of" in error.traceback
    with psycopg.connect(hrms_db) as conn:
        row = conn.execute(
            "SELECT scheduled_at FROM procrastinate_jobs WHERE id = %s", (int(result.id),)
        ).fetchone()
        assert row is not None
        assert 55 <= (row[0] - before).total_seconds() <= 65
    for _ in range(2):  # the two retries, brought forward
        with psycopg.connect(hrms_db) as conn:
            conn.execute(
                "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = %s",
                (int(result.id),),
            )
        taskhub_run_jobs(queues=["chart_sync"])
    failed = sync_chart_data_batch_task.get_result(result.id)
    assert isinstance(failed, TaskhubTaskResult)
    assert (failed.status, failed.state, failed.attempts) == (
        TaskResultStatus.FAILED,
        "FAILURE",
        3,
    )
    assert len(failed.errors) == 3
    with pytest.raises(ValueError, match="Task failed"):
        _ = failed.return_value
    body = Client().get(f"/api/tasks/{result.id}/").json()
    assert body["state"] == "FAILURE"
    assert body["errors"][0]["exception"].endswith("ChartSyncError")


def test_refresh_follows_the_job(hrms_db: str, taskhub_run_jobs: JobRunner) -> None:
    tenant = Tenant.objects.create(name="acme")
    result = sync_chart_data_batch_task.enqueue(tenant.pk, 2025, "MAR", "csv")
    assert isinstance(result, TaskhubTaskResult)
    taskhub_run_jobs(queues=["chart_sync"])
    result.refresh()
    assert (result.status, result.state) == (TaskResultStatus.SUCCESSFUL, "SUCCESS")
    assert result.return_value == {
        "tenant": tenant.pk,
        "year": 2025,
        "month": "MAR",
        "source": "csv",
        "departments": 0,
        "employees": 0,
    }


def test_cleanup_removes_chart_data_older_than_90_days(
    hrms_db: str, taskhub_run_jobs: JobRunner
) -> None:
    tenant = Tenant.objects.create(name="acme")
    now = timezone.now()
    for days, department in ((91, "old"), (89, "recent")):
        ChartAggregatedData.objects.create(
            tenant=tenant,
            year=2025,
            month="JAN",
            department=department,
            employees=1,
            total_salary=Decimal(1),
            average_salary=Decimal(1),
            updated_at=now - datetime.timedelta(days=days),
        )
    result = cleanup_old_chart_data.enqueue()
    [outcome] = taskhub_run_jobs(queues=["maintenance"])
    assert outcome.result == {"deleted": 1}
    assert cleanup_old_chart_data.get_result(result.id).return_value == {"deleted": 1}
    assert list(ChartAggregatedData.objects.values_list("department", flat=True)) == ["recent"]


def test_the_cleanup_is_scheduled_sundays_at_2_on_maintenance() -> None:
    definition = hrms_app.app.blueprints[0].tasks[
        "backend.examples.hrms.salaries.tasks.cleanup_old_chart_data"
    ]
    assert (definition.cron, definition.queue) == ("0 2 * * 0", "maintenance")
    sync = hrms_app.app.blueprints[0].tasks[SYNC]
    assert (sync.queue, sync.time_limit) == ("chart_sync", 1800)
    retry = sync.describe_retry()
    assert retry is not None
    assert retry["delays"] == [60, 60]


def test_exception_paths_from_tracebacks() -> None:
    assert exception_path("ValueError", "Traceback...\nValueError: boom") == "builtins.ValueError"
    assert exception_path("Boom", "...\nacme.tasks.Boom: no\n") == "acme.tasks.Boom"
    assert exception_path("Boom", None) == "Boom"
