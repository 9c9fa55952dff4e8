"""Alerts: the rules firing now and the recent transitions (taskhub.alert_states, alert_events)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from backend.api.deps import Conn, Reader
from backend.api.schemas import (
    UNAUTHENTICATED,
    UNAVAILABLE,
    invalid,
    ok_response,
    parameter_examples,
)
from backend.control.alert_rules import AlertState, firing_alerts
from backend.control.alerts import AlertEvent, list_alerts

router = APIRouter(tags=["alerts"])


class AlertsView(BaseModel):
    firing: list[AlertState] = Field(description="Rules firing now, oldest first.")
    recent: list[AlertEvent] = Field(
        description="Recent alert events, newest first: transitions (details.state is firing "
        "or resolved) and alerts raised directly (a failed backup)."
    )


BACKLOG = {
    "rule": "backlog",
    "subject": "emails",
    "firing": True,
    "severity": "warning",
    "message": "queue emails has 1412 waiting jobs (threshold 1000)",
    "details": {"queue": "emails", "waiting": 1412, "threshold": 1000},
    "firing_since": "2030-01-01T10:02:00Z",
    "resolved_at": None,
    "evaluated_at": "2030-01-01T10:05:00Z",
}
EVENT = {
    "id": 7,
    "raised_at": "2030-01-01T10:02:00Z",
    "kind": "backlog",
    "severity": "warning",
    "message": BACKLOG["message"],
    "details": {
        "queue": "emails",
        "waiting": 1412,
        "threshold": 1000,
        "state": "firing",
        "subject": "emails",
    },
    "job_id": None,
}


@router.get(
    "/alerts",
    response_model=AlertsView,
    summary="List firing alerts and recent transitions",
    responses={
        200: ok_response(
            "Firing alerts and recent events.",
            backlog=(
                "A queue over its backlog threshold",
                {"firing": [BACKLOG], "recent": [EVENT]},
            ),
        ),
        **UNAUTHENTICATED,
        **invalid(
            "A parameter is invalid; `loc` names it.",
            (
                "A page size out of range",
                ["query", "limit"],
                "Input should be less than or equal to 500",
                "less_than_equal",
            ),
        ),
        **UNAVAILABLE,
    },
)
async def get_alerts(
    conn: Conn,
    caller: Reader,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=500,
            description="At most this many recent events.",
            openapi_examples=parameter_examples(last=("The last ten", 10)),
        ),
    ] = 50,
) -> AlertsView:
    """What `taskhub.evaluate_alerts` found firing (one row per rule and subject), and the last
    alert events (docs/operations.md lists the rules and their settings)."""
    return AlertsView(firing=await firing_alerts(conn), recent=await list_alerts(conn, limit=limit))
