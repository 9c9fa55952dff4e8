"""Reading what the analytics tasks wrote, for the router: daily KPIs and their CSV reports."""

from __future__ import annotations

import datetime

from pydantic import BaseModel, Field

from backend.db import DictConnection
from backend.examples.manufacturing.analytics.tasks import QUERIES


class DayKpis(BaseModel):
    """One UTC day's figures, as manufacturing.generate_daily_report computed them."""

    day: datetime.date
    orders_created: int
    orders_shipped: int
    orders_cancelled: int
    payments_paid: int
    payments_failed: int = Field(description="Failed or declined that day.")
    revenue_cents: dict[str, int] = Field(description="Paid that day, per currency, in cents.")
    emails_sent: int
    emails_failed: int
    emails_bounced: int
    generated_at: datetime.datetime


class ReportFile(BaseModel):
    """A day's CSV report, listed."""

    day: datetime.date
    generated_at: datetime.datetime
    size_bytes: int
    url: str = Field(examples=["/manufacturing/reports/2026-12-03.csv"])


async def list_kpis(conn: DictConnection, limit: int) -> list[DayKpis]:
    cursor = await conn.execute(QUERIES["analytics_list_kpis"], {"limit": limit})
    return [DayKpis.model_validate(row) for row in await cursor.fetchall()]


async def list_reports(conn: DictConnection, limit: int) -> list[ReportFile]:
    cursor = await conn.execute(QUERIES["analytics_list_reports"], {"limit": limit})
    return [
        ReportFile(**row, url=f"/manufacturing/reports/{row['day'].isoformat()}.csv")
        for row in await cursor.fetchall()
    ]


async def get_report(conn: DictConnection, day: datetime.date) -> str | None:
    """The day's CSV, or None when no report was generated for it."""
    cursor = await conn.execute(QUERIES["analytics_get_report"], {"day": day})
    row = await cursor.fetchone()
    return row["report_csv"] if row is not None else None
