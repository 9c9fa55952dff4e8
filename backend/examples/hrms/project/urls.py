"""The HRMS API: tenants, salary uploads, task status by id."""

from __future__ import annotations

from django.urls import path

import backend.examples.hrms.salaries.views as views

urlpatterns = [
    path("api/tenants/", views.create_tenant),
    path("api/salary-uploads/", views.upload_salaries),
    path("api/tasks/<str:task_id>/", views.task_status),
]
