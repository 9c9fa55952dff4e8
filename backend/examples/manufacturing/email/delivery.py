"""Sending one email: build the message, talk SMTP, classify the server's answer, record it.

The SMTP conversation is done step by step (MAIL, RCPT, DATA) with the stdlib's ``smtplib`` in
a thread, so each attempt keeps the server's exact answer: a 5xx at RCPT or DATA is
``refused`` (never retried), a 4xx or a lost connection is ``failed`` (retried by
``manufacturing.retry_failed_emails`` until ``email_max_attempts``).

Delivery is at least once: a worker killed after the server's 250 and before the attempt is
recorded sends it again when the job is rescued. The ``Message-ID`` is the email's id, the
same on every attempt, so mail clients show such a duplicate once.
"""

from __future__ import annotations

import asyncio
import datetime
import email.policy
import logging
import smtplib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Literal

from pydantic import BaseModel

from backend.db import DictConnection
from backend.examples.manufacturing.email.rendering import Rendered, TemplateProblem, render
from backend.examples.manufacturing.settings import ManufacturingSettings
from backend.queries import load_queries

logger = logging.getLogger(__name__)

#: The named statements of email/sql/*.sql.
QUERIES = load_queries("backend.examples.manufacturing.email.sql")

Status = Literal["sent", "refused", "bounced", "skipped", "failed"]
Kind = Literal["normal", "urgent", "bulk"]
TransactionFactory = Callable[[], AbstractAsyncContextManager[DictConnection]]


def message_id(email_id: int, settings: ManufacturingSettings) -> str:
    """The same on every attempt: the bounce report quotes it back (process_email_bounces)."""
    domain = settings.mail_from.rpartition("@")[2] or "manufacturing.invalid"
    return f"<email-{email_id}@{domain}>"


@dataclass(frozen=True)
class Outcome:
    """What the server (or the lack of one) answered."""

    status: Status
    code: int | None
    answer: str
    retriable: bool = False


class EmailDelivery(BaseModel):
    """A send task's result: the email and the outcome of this attempt (or why none)."""

    email_id: int
    status: Status | Literal["gone", "not_queued"]
    smtp_code: int | None = None
    smtp_answer: str | None = None
    attempt: int | None = None


def build_message(
    email_id: int,
    to_email: str,
    to_name: str | None,
    rendered: Rendered,
    settings: ManufacturingSettings,
) -> EmailMessage:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = settings.mail_from
    message["To"] = formataddr((to_name, to_email)) if to_name else to_email
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(datetime.datetime.now(datetime.UTC))
    message["Message-ID"] = message_id(email_id, settings)
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


def _answer(code: int, text: bytes | str) -> str:
    body = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(body.split())}"


def _classify(code: int, text: bytes | str) -> Outcome:
    answer = _answer(code, text)
    if 200 <= code < 300:
        return Outcome("sent", code, answer)
    if 500 <= code < 600:
        return Outcome("refused", code, answer)
    return Outcome("failed", code, answer, retriable=True)


def send(message: EmailMessage, to_email: str, settings: ManufacturingSettings) -> Outcome:
    """One SMTP conversation for one recipient (blocking: run it in a thread)."""
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout
        ) as smtp:
            smtp.ehlo_or_helo_if_needed()
            code, text = smtp.mail(settings.mail_from)
            if code != 250:
                # The server refuses the sender: a configuration matter, retried while 4xx.
                outcome = _classify(code, text)
                smtp.rset()
                return Outcome("failed", code, outcome.answer, retriable=code < 500)
            code, text = smtp.rcpt(to_email)
            if code not in (250, 251):
                smtp.rset()
                return _classify(code, text)
            code, text = smtp.data(message.as_bytes(policy=email.policy.SMTP))
            return _classify(code, text)
    except smtplib.SMTPResponseException as exc:  # e.g. 421 at the greeting
        outcome = _classify(exc.smtp_code, exc.smtp_error)
        return Outcome("failed", outcome.code, outcome.answer, retriable=True)
    except (OSError, smtplib.SMTPException) as exc:
        return Outcome("failed", None, f"{type(exc).__name__}: {exc}", retriable=True)


async def deliver(
    conn_factory: TransactionFactory,
    email_id: int,
    *,
    job_id: int | None,
    settings: ManufacturingSettings,
) -> EmailDelivery:
    """Send one queued email and record the attempt. Two short transactions (read, then
    record), none held open while the mail server answers."""
    started_at = datetime.datetime.now(datetime.UTC)
    async with conn_factory() as conn:
        cursor = await conn.execute(QUERIES["email_to_send"], {"email_id": email_id})
        email_row = await cursor.fetchone()
    if email_row is None:
        logger.warning("email %s no longer exists: nothing to send", email_id)
        return EmailDelivery(email_id=email_id, status="gone")
    if email_row["status"] != "queued":
        # Another job sent it already (a duplicate defer): no second attempt.
        return EmailDelivery(email_id=email_id, status="not_queued")
    if email_row["bounced_at"] is not None:
        outcome = Outcome(
            "skipped",
            None,
            f"not sent: {email_row['to_email']} bounced on "
            f"{email_row['bounced_at']:%Y-%m-%d %H:%M} UTC ({email_row['bounce_diagnostic']})",
        )
    else:
        try:
            rendered = render(email_row["template"], email_row["context"])
        except TemplateProblem as exc:
            outcome = Outcome("failed", None, str(exc))
        else:
            message = build_message(
                email_id, email_row["to_email"], email_row["to_name"], rendered, settings
            )
            outcome = await asyncio.to_thread(send, message, email_row["to_email"], settings)
    async with conn_factory() as conn:
        attempt = await record_attempt(
            conn, email_id, outcome, job_id=job_id, started_at=started_at, settings=settings
        )
    return EmailDelivery(
        email_id=email_id,
        status=outcome.status,
        smtp_code=outcome.code,
        smtp_answer=outcome.answer,
        attempt=attempt,
    )


async def record_attempt(
    conn: DictConnection,
    email_id: int,
    outcome: Outcome,
    *,
    job_id: int | None,
    started_at: datetime.datetime,
    settings: ManufacturingSettings,
) -> int | None:
    """The attempt's row and the email's new status, in one statement; its attempt number."""
    cursor = await conn.execute(
        QUERIES["email_record_attempt"],
        {
            "email_id": email_id,
            "job_id": job_id,
            "status": outcome.status,
            "smtp_code": outcome.code,
            "smtp_answer": outcome.answer,
            "retriable": outcome.retriable,
            "max_attempts": settings.email_max_attempts,
            "started_at": started_at,
        },
    )
    row = await cursor.fetchone()
    return None if row is None else int(row["attempt"])
