"""The email family's tasks, on the seed's email queues with their priorities.

================================  ===============  =========================================
``manufacturing.send_email``      email.normal     one email (template + context)
``manufacturing.send_urgent_email`` email.urgent   the same, ahead of everything but critical
``manufacturing.send_bulk_email`` email.bulk       a campaign: one email and one job per
                                                   recipient, in one transaction
``manufacturing.send_campaign_email`` email.bulk   one campaign email, under the mail server's
                                                   rate limit (``RATE_LIMIT``, cluster-wide)
``manufacturing.process_email_bounces`` email.bulk every 6 hours: the bounce feed
``manufacturing.retry_failed_emails`` email.normal every 5 minutes: failed sends again
================================  ===============  =========================================

Tasks take ids: the email's row says what to send, and every attempt is a row in
``manufacturing.email_attempts``. A send does not raise on a failed delivery (it records it);
``retry_failed_emails`` is the one retry mechanism, capped by ``email_max_attempts``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from backend import defer
from backend.declare.registry import PeriodicArgs, TaskBlueprint, TaskDefinition
from backend.examples.manufacturing.email import bounces
from backend.examples.manufacturing.email.delivery import QUERIES, EmailDelivery, Kind, deliver
from backend.examples.manufacturing.queues import priority
from backend.examples.manufacturing.settings import ManufacturingSettings
from backend.runtime.context import TaskContext

logger = logging.getLogger(__name__)

blueprint = TaskBlueprint()

#: The mail server's limit on campaign sends, across every worker (taskhub's sliding window:
#: at most this many starts in any second). Operators change it without a deploy:
#: TASKHUB_RATE_LIMITS="manufacturing.send_campaign_email=50/s".
RATE_LIMIT = "10/s"
#: How many failed emails one retry run queues again (the next run takes the rest).
RETRY_BATCH = 1_000


class EmailArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"email_id": 42}]})

    email_id: int = Field(ge=1, description="The row in manufacturing.emails to send.")


class CampaignArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"campaign_id": 7}]})

    campaign_id: int = Field(ge=1, description="The row in manufacturing.email_campaigns.")


class FanOut(BaseModel):
    """What manufacturing.send_bulk_email did."""

    campaign_id: int
    emails: int
    jobs: list[int]


class RetryRun(BaseModel):
    """What manufacturing.retry_failed_emails queued again, by kind."""

    requeued: dict[str, int]


def _settings(ctx: TaskContext) -> ManufacturingSettings:
    return ctx.settings_of(ManufacturingSettings)


async def _send(args: EmailArgs, ctx: TaskContext) -> EmailDelivery:
    return await deliver(ctx.connection, args.email_id, job_id=ctx.job_id, settings=_settings(ctx))


@blueprint.task(
    name="manufacturing.send_email",
    queue="email.normal",
    priority=priority("email.normal"),
)
async def send_email(args: EmailArgs, ctx: TaskContext) -> EmailDelivery:
    """Render the email's template with its context and send it through the mail server
    (TASKHUB_MANUFACTURING_SMTP_*); the attempt and the server's answer are recorded. An
    address that bounced before is skipped (and recorded so)."""
    return await _send(args, ctx)


@blueprint.task(
    name="manufacturing.send_urgent_email",
    queue="email.urgent",
    priority=priority("email.urgent"),
)
async def send_urgent_email(args: EmailArgs, ctx: TaskContext) -> EmailDelivery:
    """Send an urgent email (system alerts) on email.urgent, ahead of normal and bulk mail;
    see manufacturing.send_email."""
    return await _send(args, ctx)


@blueprint.task(
    name="manufacturing.send_campaign_email",
    queue="email.bulk",
    priority=priority("email.bulk"),
    rate_limit=RATE_LIMIT,
)
async def send_campaign_email(args: EmailArgs, ctx: TaskContext) -> EmailDelivery:
    """Send one recipient's email of a campaign, under the mail server's rate limit across
    all workers (a job over it waits without using an attempt); see manufacturing.send_email."""
    return await _send(args, ctx)


#: Which task sends an email of each kind (the retry sweep queues each on its own).
SENDERS: dict[Kind, TaskDefinition[Any]] = {
    "normal": send_email,
    "urgent": send_urgent_email,
    "bulk": send_campaign_email,
}


@blueprint.task(
    name="manufacturing.send_bulk_email",
    queue="email.bulk",
    priority=priority("email.bulk"),
)
async def send_bulk_email(args: CampaignArgs, ctx: TaskContext) -> FanOut:
    """Fan a campaign out: one email row per recipient and one
    manufacturing.send_campaign_email job each, inserted in one statement each, in this
    task's transaction (all or none). A campaign fans out once, whatever runs it again."""
    async with ctx.connection() as conn:
        cursor = await conn.execute(
            QUERIES["email_fan_out_campaign"], {"campaign_id": args.campaign_id}
        )
        email_ids = [int(row["id"]) for row in await cursor.fetchall()]
        if not email_ids:
            cursor = await conn.execute(
                QUERIES["email_campaign"], {"campaign_id": args.campaign_id}
            )
            if await cursor.fetchone() is None:
                logger.warning("campaign %s no longer exists: nothing to send", args.campaign_id)
            return FanOut(campaign_id=args.campaign_id, emails=0, jobs=[])
        jobs = await defer.batch_defer(
            conn, send_campaign_email, [EmailArgs(email_id=email_id) for email_id in email_ids]
        )
    return FanOut(campaign_id=args.campaign_id, emails=len(email_ids), jobs=jobs)


@blueprint.task(
    name="manufacturing.process_email_bounces",
    queue="email.bulk",
    priority=priority("email.bulk"),
    cron="0 */6 * * *",
    queueing_lock="manufacturing.process_email_bounces",
    lock="manufacturing.process_email_bounces",
)
async def process_email_bounces(args: PeriodicArgs, ctx: TaskContext) -> bounces.BounceRun:
    """Read the bounce reports in the bounce Maildir (TASKHUB_MANUFACTURING_BOUNCE_MAILDIR):
    mark each address bounced (later sends to it are skipped), set the reported emails to
    bounced with an attempt row, then remove the reports. Every 6 hours, as the seed did."""
    maildir = _settings(ctx).bounce_maildir
    if maildir is None:
        logger.info("no bounce mailbox configured (TASKHUB_MANUFACTURING_BOUNCE_MAILDIR)")
        return bounces.BounceRun(
            read=0, new_reports=0, addresses_marked=0, emails_bounced=0, unreadable=0
        )
    batch = await asyncio.to_thread(bounces.read_feed, Path(maildir))
    counts: dict[str, Any] = {"reports": 0, "addresses": 0, "emails": 0}
    if batch.reports:
        async with ctx.connection() as conn:
            counts = await bounces.record_bounces(conn, batch.reports)
    # Committed: only now may the reports leave the mailbox.
    await asyncio.to_thread(bounces.remove_from_feed, Path(maildir), batch.keys)
    return bounces.BounceRun(
        read=len(batch.keys),
        new_reports=int(counts["reports"]),
        addresses_marked=int(counts["addresses"]),
        emails_bounced=int(counts["emails"]),
        unreadable=batch.unreadable,
    )


@blueprint.task(
    name="manufacturing.retry_failed_emails",
    queue="email.normal",
    priority=priority("email.normal"),
    cron="*/5 * * * *",
    queueing_lock="manufacturing.retry_failed_emails",
)
async def retry_failed_emails(args: PeriodicArgs, ctx: TaskContext) -> RetryRun:
    """Queue again the emails whose last delivery failed for a reason worth retrying (no
    connection, a 4xx) and that have attempts left (TASKHUB_MANUFACTURING_EMAIL_MAX_ATTEMPTS),
    each on its own kind's task; refused ones never come back. Every 5 minutes."""
    requeued: dict[str, int] = {}
    async with ctx.connection() as conn:
        cursor = await conn.execute(QUERIES["email_requeue_failed"], {"limit": RETRY_BATCH})
        by_kind: dict[Kind, list[EmailArgs]] = {}
        for row in await cursor.fetchall():
            by_kind.setdefault(row["kind"], []).append(EmailArgs(email_id=row["id"]))
        for kind, many in by_kind.items():
            await defer.batch_defer(conn, SENDERS[kind], many)
            requeued[kind] = len(many)
    return RetryRun(requeued=requeued)
