"""The manufacturing app's stand-ins for ``taskhub up --demo``: the mail server and the payment
provider, served beside taskhub and pointed at through ``TASKHUB_MANUFACTURING_*``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from backend.examples.manufacturing.email import demo as email_demo
from backend.examples.manufacturing.payments import demo as payment_demo
from backend.examples.manufacturing.queues import POOLS

#: The seed alerts on every final failure of its critical tier (TASKHUB_CRITICAL_QUEUES).
CRITICAL_QUEUES = POOLS["critical"][0]


@contextlib.contextmanager
def serve_demo(token: str, data_dir: Path) -> Iterator[tuple[dict[str, str], list[str]]]:
    """Serve both stand-ins until the block ends; yields their environment and lines."""
    with (
        email_demo.serve_demo(data_dir) as (mail_env, mail_lines),
        payment_demo.serve_demo(token) as (payment_env, payment_lines),
    ):
        yield {**mail_env, **payment_env}, [*mail_lines, *payment_lines]
