"""The bounce feed: delivery status notifications (RFC 3464) in the bounce mailbox, a Maildir.

A relay that accepted a message and could not deliver it mails a report to the sender's
bounce address; the mail server files those reports in a Maildir
(``TASKHUB_MANUFACTURING_BOUNCE_MAILDIR``). ``manufacturing.process_email_bounces`` reads
them, records them in one statement (each report once, by its Maildir key), commits, and only
then removes them: a crash in between reads them again, and the database ignores the repeat.
"""

from __future__ import annotations

import email.policy
import logging
import mailbox
import re
from dataclasses import asdict, dataclass
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel

from backend.db import DictConnection
from backend.examples.manufacturing.email.delivery import QUERIES

logger = logging.getLogger(__name__)

#: The Message-ID delivery.message_id gives each email.
OUR_MESSAGE_ID = re.compile(r"<email-([0-9]{1,18})@")
SMTP_CODE = re.compile(r"\b([245][0-9][0-9])\b")
#: At most this many reports per run: the next run (or a hand-deferred one) reads the rest.
BATCH = 5_000


@dataclass(frozen=True)
class BounceReport:
    feed_key: str
    address: str
    email_id: int | None
    status_code: str | None
    smtp_code: int | None
    diagnostic: str | None


class BounceRun(BaseModel):
    """What one run of manufacturing.process_email_bounces did."""

    read: int
    new_reports: int
    addresses_marked: int
    emails_bounced: int
    unreadable: int


def _field(block: Message, name: str) -> str | None:
    value = block.get(name)
    return " ".join(str(value).split()) if value is not None else None


def parse_report(feed_key: str, raw: bytes) -> list[BounceReport]:
    """The failed recipients of one report; empty when it is not a delivery status report."""
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    original_id: int | None = None
    recipients: list[Message] = []
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "message/delivery-status":
            blocks = part.get_payload()
            if isinstance(blocks, list):
                recipients.extend(block for block in blocks[1:] if isinstance(block, Message))
        elif content_type in ("text/rfc822-headers", "message/rfc822-headers"):
            payload = part.get_payload(decode=True)
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
            found = OUR_MESSAGE_ID.search(HeaderParser().parsestr(text).get("Message-ID", ""))
            original_id = int(found.group(1)) if found else None
    reports = []
    for index, block in enumerate(recipients):
        final = _field(block, "Final-Recipient") or ""
        action = (_field(block, "Action") or "").lower()
        address = final.partition(";")[2].strip() or final
        if action != "failed" or "@" not in address:
            continue  # delayed, delivered or relayed: not a bounce
        diagnostic = _field(block, "Diagnostic-Code")
        code = SMTP_CODE.search(diagnostic or "")
        reports.append(
            BounceReport(
                feed_key=feed_key if index == 0 else f"{feed_key}#{index}",
                address=address.strip("<>").lower(),
                email_id=original_id,
                status_code=_field(block, "Status"),
                smtp_code=int(code.group(1)) if code else None,
                diagnostic=diagnostic,
            )
        )
    return reports


@dataclass
class FeedBatch:
    """Reports read from the Maildir, and the keys to remove once they are committed."""

    reports: list[BounceReport]
    keys: list[str]
    unreadable: int


def open_maildir(path: Path) -> mailbox.Maildir:
    """The Maildir at ``path``, its folders created if missing (an empty feed)."""
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return mailbox.Maildir(path, create=False)


def read_feed(maildir: Path, limit: int = BATCH) -> FeedBatch:
    """Up to ``limit`` reports from the bounce Maildir (blocking: run it in a thread)."""
    box = open_maildir(maildir)
    batch = FeedBatch(reports=[], keys=[], unreadable=0)
    for key in sorted(box.keys())[:limit]:
        try:
            with box.get_file(key) as handle:
                raw = handle.read()
        except FileNotFoundError:  # another reader removed it
            continue
        reports = parse_report(key, raw)
        if not reports:
            batch.unreadable += 1
            logger.warning("bounce mailbox %s: message %s is not a bounce report", maildir, key)
        batch.reports.extend(reports)
        batch.keys.append(key)
    return batch


def remove_from_feed(maildir: Path, keys: list[str]) -> None:
    box = open_maildir(maildir)
    for key in keys:
        box.discard(key)


async def record_bounces(conn: DictConnection, reports: list[BounceReport]) -> dict[str, Any]:
    """Record reports (each once), mark their addresses, bounce their emails."""
    cursor = await conn.execute(
        QUERIES["email_record_bounces"], {"reports": Jsonb([asdict(item) for item in reports])}
    )
    row = await cursor.fetchone()
    assert row is not None
    return dict(row)
