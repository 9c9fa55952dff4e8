"""The HRMS API: JSON in and out; every 4xx says what was wrong."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from backend.examples.hrms.salaries.models import Tenant
from backend.examples.hrms.salaries.service import save_upload
from backend.examples.hrms.salaries.uploads import UploadError
from backend.integrations.django import TaskhubTaskResult
from backend.integrations.django.compat import TaskResultDoesNotExist, default_task_backend


def problem(message: str, status: int) -> JsonResponse:
    return JsonResponse({"detail": message}, status=status)


@csrf_exempt
@require_POST
def create_tenant(request: HttpRequest) -> JsonResponse:
    try:
        body = json.loads(request.body or b"{}")
        name = str(body["name"]).strip()
    except (ValueError, KeyError, TypeError):
        return problem('send JSON {"name": "..."}', 400)
    if not name:
        return problem("name is empty", 400)
    tenant, created = Tenant.objects.get_or_create(name=name)
    return JsonResponse({"id": tenant.pk, "name": tenant.name}, status=201 if created else 200)


@csrf_exempt
@require_POST
def upload_salaries(request: HttpRequest) -> JsonResponse:
    """multipart: ``file`` (.csv or .xlsx), ``tenant_id``, ``year``, ``month`` (JAN..DEC)."""
    upload = request.FILES.get("file")
    if upload is None:
        return problem("attach the salary file as the multipart field 'file'", 400)
    try:
        tenant_id = int(request.POST.get("tenant_id", ""))
        year = int(request.POST.get("year", ""))
    except ValueError:
        return problem("tenant_id and year must be whole numbers", 400)
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return problem(f"tenant {tenant_id} does not exist", 404)
    month = request.POST.get("month", "").strip().upper()
    try:
        saved = save_upload(tenant, year, month, upload.name or "upload", upload.read())
    except UploadError as exc:
        return problem(str(exc), 400)
    return JsonResponse(
        {
            "upload_id": saved.pk,
            "rows": saved.rows,
            "source": saved.source,
            "task_id": saved.task_id,
        },
        status=201,
    )


def describe(result: Any) -> dict[str, Any]:
    """A task result as JSON: Celery's state, Django's status, the value or the errors."""
    body: dict[str, Any] = {
        "task_id": result.id,
        "task": result.task.module_path,
        "status": str(result.status),
        "state": result.state if isinstance(result, TaskhubTaskResult) else None,
        "attempts": result.attempts,
        "result": result.return_value if result.status == "SUCCESSFUL" else None,
        "errors": [
            {"exception": error.exception_class_path, "traceback": error.traceback}
            for error in result.errors
        ],
    }
    if isinstance(result, TaskhubTaskResult) and result.progress is not None:
        body["progress"] = result.progress.model_dump(mode="json")
    return body


@require_GET
def task_status(request: HttpRequest, task_id: str) -> JsonResponse:
    """The seed's ``AsyncResult(task_id).state`` as an endpoint."""
    try:
        result = default_task_backend.get_result(task_id)
    except TaskResultDoesNotExist as exc:
        return problem(str(exc), 404)
    return JsonResponse(describe(result))
