"""Queueing email, for the application (and the router): the row and its job in the caller's
transaction, so both commit or neither does; and reading what happened to it.

The template is rendered once here with the given context, so a missing variable or an
unknown template is refused at the door, not discovered by a worker.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field

from backend import defer
from backend.db import DictConnection
from backend.examples.manufacturing.email import tasks
from backend.examples.manufacturing.email.delivery import QUERIES, Kind, Status
from backend.examples.manufacturing.email.rendering import render

#: An address as SMTP carries it (ASCII, no spaces or angle brackets, one @).
Address = Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[!-;=?-~]+@[!-;=?-~]+$")]
Name = Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
Context = Annotated[dict[str, Any], Field(description="The template's variables.")]
MAX_RECIPIENTS = 100_000


class EmailRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "to_email": "user@example.com",
                    "to_name": "User Name",
                    "template": "welcome",
                    "context": {"user_name": "User Name"},
                }
            ]
        },
    )

    to_email: Address
    to_name: Name | None = None
    template: str = Field(max_length=100, examples=["welcome"])
    context: Context = Field(default_factory=dict)
    urgent: bool = Field(
        default=False, description="Send on email.urgent, ahead of normal and bulk mail."
    )


class Recipient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_email: Address
    to_name: Name | None = None
    context: Context = Field(default_factory=dict)


class CampaignRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "template": "newsletter",
                    "common_context": {"month": "December"},
                    "recipients": [{"to_email": "a@example.com", "to_name": "A"}],
                }
            ]
        },
    )

    template: str = Field(max_length=100, examples=["newsletter"])
    common_context: Context = Field(default_factory=dict)
    recipients: list[Recipient] = Field(min_length=1, max_length=MAX_RECIPIENTS)


class QueuedEmail(BaseModel):
    email_id: int
    job_id: int
    task: str


class QueuedCampaign(BaseModel):
    campaign_id: int
    job_id: int
    recipients: int


class Email(BaseModel):
    id: int
    kind: Kind
    campaign_id: int | None
    to_email: str
    to_name: str | None
    template: str
    status: Status | str
    attempts: int
    next_retry_at: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class Attempt(BaseModel):
    id: int
    email_id: int
    job_id: int | None
    attempt: int | None
    status: Status
    smtp_code: int | None
    smtp_answer: str | None
    started_at: datetime.datetime
    finished_at: datetime.datetime


async def queue_email(conn: DictConnection, request: EmailRequest) -> QueuedEmail:
    """The email's row and its send job, on ``conn`` (the caller commits)."""
    render(request.template, request.context)
    kind: Kind = "urgent" if request.urgent else "normal"
    cursor = await conn.execute(
        QUERIES["email_insert"],
        {
            "kind": kind,
            "to_email": request.to_email,
            "to_name": request.to_name,
            "template": request.template,
            "context": Jsonb(request.context),
        },
    )
    row = await cursor.fetchone()
    assert row is not None
    email_id = int(row["id"])
    task = tasks.SENDERS[kind]
    job_id = await defer.defer(conn, task, tasks.EmailArgs(email_id=email_id))
    return QueuedEmail(email_id=email_id, job_id=job_id, task=task.name)


async def queue_campaign(conn: DictConnection, request: CampaignRequest) -> QueuedCampaign:
    """The campaign's row and its fan-out job, on ``conn`` (the caller commits)."""
    for recipient in request.recipients:
        render(request.template, request.common_context | recipient.context)
    cursor = await conn.execute(
        QUERIES["email_insert_campaign"],
        {
            "template": request.template,
            "common_context": Jsonb(request.common_context),
            "recipients": Jsonb(
                [recipient.model_dump(mode="json") for recipient in request.recipients]
            ),
        },
    )
    row = await cursor.fetchone()
    assert row is not None
    campaign_id = int(row["id"])
    job_id = await defer.defer(
        conn, tasks.send_bulk_email, tasks.CampaignArgs(campaign_id=campaign_id)
    )
    return QueuedCampaign(
        campaign_id=campaign_id, job_id=job_id, recipients=len(request.recipients)
    )


async def list_emails(
    conn: DictConnection,
    *,
    campaign_id: int | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[Email]:
    cursor = await conn.execute(
        QUERIES["email_list"], {"campaign_id": campaign_id, "status": status, "limit": limit}
    )
    return [Email.model_validate(row) for row in await cursor.fetchall()]


async def get_email(conn: DictConnection, email_id: int) -> Email | None:
    cursor = await conn.execute(QUERIES["email_get"], {"email_id": email_id})
    row = await cursor.fetchone()
    return None if row is None else Email.model_validate(row)


async def list_attempts(
    conn: DictConnection, *, email_id: int | None = None, campaign_id: int | None = None
) -> list[Attempt]:
    """Delivery attempts, oldest first: one email's, or every attempt of a campaign."""
    cursor = await conn.execute(
        QUERIES["email_attempts"], {"email_id": email_id, "campaign_id": campaign_id}
    )
    return [Attempt.model_validate(row) for row in await cursor.fetchall()]
