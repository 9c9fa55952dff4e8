"""The email family over HTTP: queue an email or a campaign (the row and its job commit with
the response, or not at all), and read what happened to them, attempt by attempt."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from pydantic import BaseModel

from backend.api.deps import Conn, Operator, Reader
from backend.api.schemas import (
    FORBIDDEN,
    UNAUTHENTICATED,
    UNAVAILABLE,
    error_response,
    ok_response,
)
from backend.errors import TaskhubError
from backend.examples.manufacturing.email import service

router = APIRouter(tags=["manufacturing"])

Id = Annotated[int, Path(ge=1, le=2**63 - 1, description="The row's id.")]
TEMPLATE_REFUSED = error_response(
    "The template is unknown, or the context lacks a variable it needs; nothing was queued.",
    missing=(
        "A variable missing",
        "email template 'welcome' cannot be rendered: 'user_name' is undefined (add it to the "
        "context)",
    ),
)


class EmailNotFound(TaskhubError):
    """No email has that id."""

    status_code = 404


class CampaignNotFound(TaskhubError):
    """No campaign has that id."""

    status_code = 404


class EmailDetail(BaseModel):
    email: service.Email
    attempts: list[service.Attempt]


class CampaignDetail(BaseModel):
    campaign_id: int
    emails: list[service.Email]
    attempts: list[service.Attempt]


@router.post(
    "/manufacturing/emails",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=service.QueuedEmail,
    summary="Queue an email",
    responses={
        202: ok_response(
            "Queued. `Location` is the email.",
            queued=(
                "Queued",
                {"email_id": 42, "job_id": 1042, "task": "manufacturing.send_email"},
            ),
        ),
        **UNAUTHENTICATED,
        **FORBIDDEN,
        422: TEMPLATE_REFUSED,
        **UNAVAILABLE,
    },
)
async def queue_email(
    request: service.EmailRequest, conn: Conn, response: Response, caller: Operator
) -> service.QueuedEmail:
    """Render-check the template with the context, store the email and defer its send job
    (`manufacturing.send_email` on email.normal, or `manufacturing.send_urgent_email` on
    email.urgent with `urgent`), in this request's transaction. Templates: welcome,
    order_status, system_alert, newsletter. Needs the operate scope."""
    queued = await service.queue_email(conn, request)
    response.headers["Location"] = f"/manufacturing/emails/{queued.email_id}"
    return queued


@router.post(
    "/manufacturing/campaigns",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=service.QueuedCampaign,
    summary="Queue a bulk campaign",
    responses={
        202: ok_response(
            "Queued. `Location` is the campaign.",
            queued=("Queued", {"campaign_id": 7, "job_id": 1050, "recipients": 3}),
        ),
        **UNAUTHENTICATED,
        **FORBIDDEN,
        422: TEMPLATE_REFUSED,
        **UNAVAILABLE,
    },
)
async def queue_campaign(
    request: service.CampaignRequest, conn: Conn, response: Response, caller: Operator
) -> service.QueuedCampaign:
    """Store the campaign and defer `manufacturing.send_bulk_email`, which fans it out into
    one email and one rate-limited job per recipient on email.bulk. Each recipient's context
    goes over the common one. Needs the operate scope."""
    queued = await service.queue_campaign(conn, request)
    response.headers["Location"] = f"/manufacturing/campaigns/{queued.campaign_id}"
    return queued


@router.get(
    "/manufacturing/emails/{email_id}",
    response_model=EmailDetail,
    summary="Read an email and its delivery attempts",
    responses={
        **UNAUTHENTICATED,
        404: error_response("No email has this id.", unknown=("Unknown", "no email 999")),
        **UNAVAILABLE,
    },
)
async def read_email(email_id: Id, conn: Conn, caller: Reader) -> EmailDetail:
    """The email's status (queued, sent, refused, bounced, skipped, failed) and every attempt
    with the mail server's answer. Needs the read scope."""
    email = await service.get_email(conn, email_id)
    if email is None:
        raise EmailNotFound(f"no email {email_id}")
    return EmailDetail(email=email, attempts=await service.list_attempts(conn, email_id=email_id))


@router.get(
    "/manufacturing/campaigns/{campaign_id}",
    response_model=CampaignDetail,
    summary="Read a campaign's emails and attempts",
    responses={
        **UNAUTHENTICATED,
        404: error_response(
            "No campaign has this id, or it is not fanned out yet.",
            unknown=("Unknown", "no campaign 999 (or it is not fanned out yet)"),
        ),
        **UNAVAILABLE,
    },
)
async def read_campaign(campaign_id: Id, conn: Conn, caller: Reader) -> CampaignDetail:
    """Every email of the campaign (up to 100,000) and every delivery attempt. Needs the read
    scope."""
    emails = await service.list_emails(conn, campaign_id=campaign_id, limit=service.MAX_RECIPIENTS)
    if not emails:
        raise CampaignNotFound(f"no campaign {campaign_id} (or it is not fanned out yet)")
    attempts = await service.list_attempts(conn, campaign_id=campaign_id)
    return CampaignDetail(campaign_id=campaign_id, emails=emails, attempts=attempts)
