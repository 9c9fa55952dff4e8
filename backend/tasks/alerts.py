"""Alerts: ``taskhub.evaluate_alerts`` every minute, ``taskhub.send_webhook`` per transition and
webhook, deferred in the transaction that records the transition (rules:
backend/control/alert_rules.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import procrastinate
from pydantic import BaseModel

from backend.control import alert_rules
from backend.control.alerts import AlertEvent
from backend.db import DictConnection
from backend.declare.policy import Retry
from backend.declare.registry import PeriodicArgs, TaskBlueprint
from backend.declare.schedules import Schedule
from backend.defer import defer
from backend.queries import QUERIES
from backend.runtime.app import definition_of
from backend.runtime.context import TaskContext
from backend.settings import Settings

blueprint = TaskBlueprint()

SIGNATURE_HEADER = "X-Taskhub-Signature"
WEBHOOK_TIMEOUT = 10.0


class EvaluationReport(BaseModel):
    fired: list[str]
    resolved: list[str]
    webhooks: int


class WebhookArgs(BaseModel):
    event_id: int
    url: str


class WebhookReport(BaseModel):
    event_id: int
    url: str
    status_code: int | None


def sign(body: bytes, secret: str) -> str:
    """The X-Taskhub-Signature value of ``body``: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(event: AlertEvent, timestamp: int) -> bytes:
    """The JSON a receiver gets; ``timestamp`` (Unix seconds of this attempt) is signed with the
    rest, so a receiver can refuse old or replayed deliveries."""
    details = dict(event.details)
    payload: dict[str, Any] = {
        "event_id": event.id,
        "rule": event.kind,
        "state": details.pop("state", "firing"),
        "subject": details.pop("subject", None),
        "severity": event.severity,
        "message": event.message,
        "raised_at": event.raised_at.isoformat(),
        "details": details,
        "timestamp": timestamp,
    }
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def schedules_of(app: procrastinate.App, settings: Settings) -> list[Schedule]:
    """The worker's schedules: each task's declared cron or the operator's replacement."""
    overrides = settings.schedule_overrides()
    schedules = []
    for name in sorted(app.tasks):
        definition = definition_of(app, name)
        if definition is None:
            continue
        cron = overrides.get(name, definition.cron)
        if definition.cron or name in overrides:
            schedules.append(Schedule(name, definition.queue, definition.cron, cron))
    return schedules


async def evaluate_and_notify(
    conn: DictConnection, settings: Settings, schedules: list[Schedule]
) -> EvaluationReport:
    """Evaluate the rules and defer one webhook job per transition and URL, on ``conn``'s
    transaction: the state change and its deliveries commit together."""
    transitions = await alert_rules.evaluate(conn, settings, schedules)
    for transition in transitions:
        for url in settings.alert_webhooks:
            await defer(conn, send_webhook, WebhookArgs(event_id=transition.event.id, url=url))
    return EvaluationReport(
        fired=[f"{t.alert.rule}:{t.alert.subject}" for t in transitions if t.state == "firing"],
        resolved=[
            f"{t.alert.rule}:{t.alert.subject}" for t in transitions if t.state == "resolved"
        ],
        webhooks=len(transitions) * len(settings.alert_webhooks),
    )


@blueprint.task(
    name="taskhub.evaluate_alerts",
    queue="maintenance",
    cron="* * * * *",
    queueing_lock="taskhub.evaluate_alerts",
)
async def evaluate_alerts(args: PeriodicArgs, ctx: TaskContext) -> EvaluationReport:
    """Check every alert rule (TASKHUB_ALERT_*) and notify what started or stopped holding."""
    async with ctx.connection() as conn:
        return await evaluate_and_notify(conn, ctx.settings, schedules_of(ctx.app, ctx.settings))


# 2, 6, 18, 54, 162, 486 s, then 15 min apart: a receiver down for a few hours still gets it.
@blueprint.task(
    name="taskhub.send_webhook",
    queue="maintenance",
    retry=Retry(retries=12, backoff=2, factor=3, cap=900, jitter=0.1),
)
async def send_webhook(args: WebhookArgs, ctx: TaskContext) -> WebhookReport:
    """POST one alert event to one webhook, signed; a non-2xx answer or a network error fails
    the attempt, and the job is retried with backoff."""
    async with ctx.connection() as conn:
        cursor = await conn.execute(QUERIES["get_alert_event"], {"id": args.event_id})
        row = await cursor.fetchone()
    if row is None:  # pruned: nothing left to say
        return WebhookReport(event_id=args.event_id, url=args.url, status_code=None)
    body = webhook_body(AlertEvent.model_validate(row), int(time.time()))
    headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: sign(body, ctx.settings.alert_webhook_secret),
        "user-agent": "taskhub-alerts",
    }
    async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as client:
        response = await client.post(args.url, content=body, headers=headers)
    response.raise_for_status()
    return WebhookReport(event_id=args.event_id, url=args.url, status_code=response.status_code)
