"""A stand-in mail server for the email family: a real SMTP server (aiosmtpd) that records
every message it accepts, and refuses or bounces the addresses it is told to.

- **refuse**: ``550 5.1.1`` at ``RCPT TO``, as a server that knows the mailbox does not exist;
  the sender sees it at once (recorded ``refused``).
- **bounce**: accept the message (``250``), then report it undeliverable the way a relay does:
  a delivery status notification (RFC 3464, ``multipart/report``) delivered to the bounce
  mailbox, a Maildir (``bounce_maildir``), which ``manufacturing.process_email_bounces`` reads
  (``TASKHUB_MANUFACTURING_BOUNCE_MAILDIR``). The report quotes the original ``Message-ID``,
  which ties it to the email.

Tests start it with :func:`serving_smtp` on a free port and read ``messages``, ``refusals`` and
``bounces``; ``python -m backend.examples.manufacturing.email.standin`` serves one by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import email.policy
import mailbox
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

HOSTNAME = "mail.standin.invalid"
REFUSED = "550 5.1.1 <{address}>: Recipient address rejected: User unknown"
BOUNCE_STATUS = "5.1.1"
BOUNCE_DIAGNOSTIC = "smtp; 550 5.1.1 <{address}>: mailbox unavailable"


@dataclass(frozen=True)
class Received:
    """One message the server accepted, for one recipient of its envelope."""

    mail_from: str
    rcpt_to: str
    message: EmailMessage
    at: float  # time.time() when accepted


@dataclass(frozen=True)
class Refusal:
    address: str
    answer: str
    at: float


@dataclass(frozen=True)
class Bounce:
    address: str
    message_id: str | None
    feed_key: str | None  # its key in the bounce Maildir, when there is one
    at: float


def _normal(address: str) -> str:
    return address.strip().lower()


class MailStandin:
    """The aiosmtpd handler: what the server does with each command, and what it saw.

    Safe to read and change from the test's thread while the server's thread serves."""

    def __init__(self, bounce_maildir: Path | None = None) -> None:
        self.bounce_maildir = bounce_maildir
        self._lock = threading.Lock()
        self._refuse: set[str] = set()
        self._bounce: set[str] = set()
        self._messages: list[Received] = []
        self._refusals: list[Refusal] = []
        self._bounces: list[Bounce] = []

    # -- what to do -------------------------------------------------------------------------

    def refuse(self, *addresses: str) -> None:
        """Answer 550 at RCPT TO for these addresses from now on."""
        with self._lock:
            self._refuse.update(map(_normal, addresses))

    def bounce(self, *addresses: str) -> None:
        """Accept mail for these addresses, then report it undeliverable."""
        with self._lock:
            self._bounce.update(map(_normal, addresses))

    def heal(self) -> None:
        """Deliver to every address again."""
        with self._lock:
            self._refuse.clear()
            self._bounce.clear()

    # -- what happened ----------------------------------------------------------------------

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    @property
    def refusals(self) -> list[Refusal]:
        with self._lock:
            return list(self._refusals)

    @property
    def bounces(self) -> list[Bounce]:
        with self._lock:
            return list(self._bounces)

    def received_by(self, address: str) -> list[Received]:
        return [item for item in self.messages if _normal(item.rcpt_to) == _normal(address)]

    # -- the SMTP conversation (called by aiosmtpd in the server's thread) -------------------

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        with self._lock:
            refused = _normal(address) in self._refuse
            if refused:
                answer = REFUSED.format(address=address)
                self._refusals.append(Refusal(address, answer, time.time()))
        if refused:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        message = BytesParser(policy=email.policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        mail_from = envelope.mail_from or ""
        queue_id = uuid.uuid4().hex[:12].upper()
        now = time.time()
        with self._lock:
            for rcpt in envelope.rcpt_tos:
                self._messages.append(Received(mail_from, rcpt, message, now))
            bounced = [rcpt for rcpt in envelope.rcpt_tos if _normal(rcpt) in self._bounce]
        for rcpt in bounced:
            key = self._report_bounce(mail_from, rcpt, message)
            with self._lock:
                self._bounces.append(Bounce(rcpt, message["Message-ID"], key, time.time()))
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def _report_bounce(self, mail_from: str, rcpt: str, original: EmailMessage) -> str | None:
        if self.bounce_maildir is None:
            return None
        report = delivery_status_notification(mail_from, rcpt, original)
        for sub in ("tmp", "new", "cur"):
            (self.bounce_maildir / sub).mkdir(parents=True, exist_ok=True)
        return mailbox.Maildir(self.bounce_maildir, create=False).add(report)


def delivery_status_notification(mail_from: str, rcpt: str, original: EmailMessage) -> bytes:
    """An RFC 3464 report that ``rcpt`` could not be reached, quoting ``original``'s headers."""
    boundary = f"=_{time.time_ns()}"
    quoted = "".join(
        f"{name}: {original[name]}\r\n"
        for name in ("Message-ID", "From", "To", "Subject", "Date")
        if original[name] is not None
    )
    now = format_datetime(datetime.datetime.now(datetime.UTC))
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@{HOSTNAME}>\r\n"
        f"To: {mail_from}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {now}\r\n"
        f"Message-ID: {make_msgid(domain=HOSTNAME)}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f' boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Your message to <{rcpt}> could not be delivered: the mailbox is unavailable.\r\n"
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        f"Reporting-MTA: dns; {HOSTNAME}\r\n"
        f"Arrival-Date: {now}\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\n"
        "Action: failed\r\n"
        f"Status: {BOUNCE_STATUS}\r\n"
        f"Diagnostic-Code: {BOUNCE_DIAGNOSTIC.format(address=rcpt)}\r\n"
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        f"{quoted}"
        f"\r\n--{boundary}--\r\n"
    ).encode()


class _BoundController(Controller):
    """aiosmtpd's threaded server on a socket already bound to a free port (no race for it)."""

    def __init__(self, handler: MailStandin, sock: socket.socket, **kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)
        self._sock = sock

    def _create_server(self) -> Awaitable[Any]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


@contextlib.contextmanager
def serving_smtp(
    handler: MailStandin, host: str = "127.0.0.1", port: int = 0
) -> Iterator[tuple[str, int]]:
    """Serve ``handler`` until the block ends; yields the host and port it listens on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    controller = _BoundController(handler, sock, server_hostname=HOSTNAME, ready_timeout=15)
    controller.start()
    try:
        yield controller.hostname, controller.port
    finally:
        controller.stop()
        sock.close()


def _arguments(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m backend.examples.manufacturing.email.standin", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--bounce-maildir", type=Path, default=None)
    parser.add_argument("--refuse", action="append", default=[], help="an address to refuse")
    parser.add_argument("--bounce", action="append", default=[], help="an address to bounce")
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> None:
    """Serve a stand-in mail server until Ctrl-C, printing what it receives."""
    options = _arguments(argv)
    handler = MailStandin(bounce_maildir=options.bounce_maildir)
    handler.refuse(*options.refuse)
    handler.bounce(*options.bounce)
    with serving_smtp(handler, options.host, options.port) as (host, port):
        print(f"stand-in mail server on {host}:{port}", flush=True)
        seen = 0
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(0.5)
                for item in handler.messages[seen:]:
                    print(f"{item.rcpt_to}: {item.message['Subject']}", flush=True)
                seen = len(handler.messages)


if __name__ == "__main__":
    main()
