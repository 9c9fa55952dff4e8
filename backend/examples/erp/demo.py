"""``taskhub up --demo`` for the ERP sync: a seeded stand-in ERP served beside taskhub."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from backend.examples.erp.standin import demo_app
from backend.examples.serving import serving

DEMO_ASSETS = 3_000
DEMO_LOCATIONS = 60
DEMO_PAGE_DELAY = 0.2  # seconds per ERP page: slow enough to watch the progress move


@contextlib.contextmanager
def serve_demo(token: str) -> Iterator[tuple[dict[str, str], list[str]]]:
    """Serve a seeded stand-in ERP on a free local port, requiring ``token``, until the block
    ends; yields the environment that points :class:`ErpSettings` at it
    (``TASKHUB_ERP_BASE_URL``, ``TASKHUB_ERP_TOKEN``) and the lines to print."""
    erp = demo_app(DEMO_ASSETS, DEMO_LOCATIONS, token=token, page_delay=DEMO_PAGE_DELAY)
    with serving(erp) as url:
        yield (
            {"TASKHUB_ERP_BASE_URL": url, "TASKHUB_ERP_TOKEN": token},
            [f"  demo ERP: {url}  ({DEMO_ASSETS} assets, {DEMO_LOCATIONS} locations)"],
        )
