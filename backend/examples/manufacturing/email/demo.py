"""The stand-in mail server for ``taskhub up --demo``: served beside taskhub, with one address
it refuses and one it bounces."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from backend.examples.manufacturing.email.standin import MailStandin, serving_smtp

REFUSED_ADDRESS = "refuse@example.com"
BOUNCED_ADDRESS = "bounce@example.com"


@contextlib.contextmanager
def serve_demo(data_dir: Path) -> Iterator[tuple[dict[str, str], list[str]]]:
    """Serve the stand-in mail server on a free local port until the block ends, its bounce
    Maildir under ``data_dir``; yields the environment that points ``ManufacturingSettings``
    at it and the lines to print."""
    maildir = data_dir / "manufacturing-bounces"
    standin = MailStandin(bounce_maildir=maildir)
    standin.refuse(REFUSED_ADDRESS)
    standin.bounce(BOUNCED_ADDRESS)
    with serving_smtp(standin) as (host, port):
        yield (
            {
                "TASKHUB_MANUFACTURING_SMTP_HOST": host,
                "TASKHUB_MANUFACTURING_SMTP_PORT": str(port),
                "TASKHUB_MANUFACTURING_BOUNCE_MAILDIR": str(maildir),
            },
            [
                f"  demo mail server: smtp://{host}:{port}  (refuses {REFUSED_ADDRESS}, "
                f"bounces {BOUNCED_ADDRESS} into {maildir})"
            ],
        )
