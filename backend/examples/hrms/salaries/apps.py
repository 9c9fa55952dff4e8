from __future__ import annotations

from django.apps import AppConfig


class SalariesConfig(AppConfig):
    """Salary uploads and the dashboard's aggregated chart data."""

    name = "backend.examples.hrms.salaries"
    label = "salaries"
    default_auto_field = "django.db.models.BigAutoField"
