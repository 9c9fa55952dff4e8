"""Alert events: what an operator must hear about (a failed backup, ...).

``raise_alert`` is the one seam every part of taskhub uses: it stores the event in
``taskhub.alert_events``, in the caller's transaction so the alert commits with what it reports,
and logs it. Delivering alerts elsewhere (webhooks) reads that table; callers do not change.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Literal

from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field
from pydantic_core import to_jsonable_python

from backend.db import DictConnection
from backend.queries import QUERIES

logger = logging.getLogger(__name__)

Severity = Literal["info", "warning", "error", "critical"]

_LOG_LEVELS: dict[str, int] = {
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class AlertEvent(BaseModel):
    """One stored alert."""

    id: int
    raised_at: datetime.datetime
    kind: str = Field(examples=["backup_failed"])
    severity: Severity
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    job_id: int | None = None


async def raise_alert(
    conn: DictConnection,
    *,
    kind: str,
    message: str,
    severity: Severity = "error",
    details: dict[str, Any] | None = None,
    job_id: int | None = None,
) -> AlertEvent:
    """Record an alert on ``conn`` (not committed here) and log it at its severity.

    ``kind`` is a stable machine name (``backup_failed``); ``message`` is for people;
    ``details`` is any JSON-able data a receiver may want (paths, ids, the error).
    """
    cursor = await conn.execute(
        QUERIES["insert_alert_event"],
        {
            "kind": kind,
            "severity": severity,
            "message": message,
            "details": Jsonb(to_jsonable_python(details or {})),
            "job_id": job_id,
        },
    )
    row = await cursor.fetchone()
    assert row is not None
    event = AlertEvent.model_validate(row)
    logger.log(
        _LOG_LEVELS[severity],
        "alert %s (%s): %s",
        kind,
        severity,
        message,
        extra={"action": "alert_raised", "alert_id": event.id, "alert_kind": kind},
    )
    return event


async def list_alerts(
    conn: DictConnection, *, kind: str | None = None, limit: int = 50
) -> list[AlertEvent]:
    """Recent alerts, newest first (for the CLI, the API and tests)."""
    cursor = await conn.execute(QUERIES["list_alert_events"], {"kind": kind, "limit": limit})
    return [AlertEvent.model_validate(row) for row in await cursor.fetchall()]
