"""``taskhub up --demo``: the stand-in ERP and scheduling API, served beside taskhub."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

from pydantic import SecretStr

from backend.settings import Settings
from backend.standins.erp import demo_app
from backend.standins.scheduling import SchedulingStandin
from backend.standins.server import serving

DEMO_ASSETS = 3_000
DEMO_LOCATIONS = 60
DEMO_PAGE_DELAY = 0.2  # seconds per ERP page: slow enough to watch the progress move


@contextlib.contextmanager
def demo_standins(settings: Settings) -> Iterator[tuple[Settings, list[str]]]:
    """Serve both stand-ins on free local ports; yields settings pointing the examples at them
    (one random token for both) and the lines to print."""
    token = secrets.token_urlsafe(16)
    erp = demo_app(DEMO_ASSETS, DEMO_LOCATIONS, token=token, page_delay=DEMO_PAGE_DELAY)
    scheduling = SchedulingStandin(token=token)
    with serving(erp) as erp_url, serving(scheduling.app) as scheduling_url:
        demo = settings.model_copy(
            update={
                "erp_base_url": erp_url,
                "erp_token": SecretStr(token),
                "scheduling_base_url": scheduling_url,
                "scheduling_token": SecretStr(token),
            }
        )
        yield (
            demo,
            [
                f"  demo ERP: {erp_url}  ({DEMO_ASSETS} assets, {DEMO_LOCATIONS} locations)",
                f"  demo scheduling API: {scheduling_url}",
            ],
        )
