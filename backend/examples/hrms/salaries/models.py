"""Salary uploads, their rows, and the per-department chart data the dashboard reads."""

from __future__ import annotations

import datetime
from decimal import Decimal

from django.db import models

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


class Tenant(models.Model):
    name: models.CharField[str, str] = models.CharField(max_length=200, unique=True)

    def __str__(self) -> str:
        return str(self.name)


class SalaryUpload(models.Model):
    """One uploaded file; ``task_id`` is the chart sync job deferred with it."""

    tenant: models.ForeignKey[Tenant, Tenant] = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="uploads"
    )
    year: models.PositiveSmallIntegerField[int, int] = models.PositiveSmallIntegerField()
    month: models.CharField[str, str] = models.CharField(max_length=3)
    source: models.CharField[str, str] = models.CharField(max_length=10)  # csv or excel
    filename: models.CharField[str, str] = models.CharField(max_length=255)
    rows: models.PositiveIntegerField[int, int] = models.PositiveIntegerField(default=0)
    task_id: models.CharField[str, str] = models.CharField(max_length=64, blank=True)
    created_at: models.DateTimeField[datetime.datetime, datetime.datetime] = models.DateTimeField(
        auto_now_add=True
    )


class SalaryData(models.Model):
    tenant: models.ForeignKey[Tenant, Tenant] = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="salaries"
    )
    upload: models.ForeignKey[SalaryUpload, SalaryUpload] = models.ForeignKey(
        SalaryUpload, on_delete=models.CASCADE, related_name="salaries"
    )
    year: models.PositiveSmallIntegerField[int, int] = models.PositiveSmallIntegerField()
    month: models.CharField[str, str] = models.CharField(max_length=3)
    employee_id: models.CharField[str, str] = models.CharField(max_length=50)
    name: models.CharField[str, str] = models.CharField(max_length=200)
    department: models.CharField[str, str] = models.CharField(max_length=100)
    salary: models.DecimalField[Decimal, Decimal] = models.DecimalField(
        max_digits=12, decimal_places=2
    )

    class Meta:
        indexes = [models.Index(fields=["tenant", "year", "month"])]


class ChartAggregatedData(models.Model):
    """What the dashboard's charts read: one row per tenant, month and department."""

    tenant: models.ForeignKey[Tenant, Tenant] = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="chart_data"
    )
    year: models.PositiveSmallIntegerField[int, int] = models.PositiveSmallIntegerField()
    month: models.CharField[str, str] = models.CharField(max_length=3)
    department: models.CharField[str, str] = models.CharField(max_length=100)
    employees: models.PositiveIntegerField[int, int] = models.PositiveIntegerField()
    total_salary: models.DecimalField[Decimal, Decimal] = models.DecimalField(
        max_digits=14, decimal_places=2
    )
    average_salary: models.DecimalField[Decimal, Decimal] = models.DecimalField(
        max_digits=12, decimal_places=2
    )
    updated_at: models.DateTimeField[datetime.datetime, datetime.datetime] = models.DateTimeField(
        db_index=True
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "year", "month", "department"], name="chart_data_one_per_dept"
            )
        ]
