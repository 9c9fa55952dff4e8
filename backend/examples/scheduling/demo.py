"""The stand-in scheduling API served beside taskhub, for ``taskhub up --demo``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from backend.examples.scheduling.standin import SchedulingStandin
from backend.examples.serving import serving


@contextlib.contextmanager
def serve_demo(token: str) -> Iterator[tuple[dict[str, str], list[str]]]:
    """Serve the stand-in on a free local port until the block ends; yields the environment
    that points :class:`SchedulingSettings` at it and the lines to print."""
    standin = SchedulingStandin(token=token)
    with serving(standin.app) as url:
        yield (
            {"TASKHUB_SCHEDULING_BASE_URL": url, "TASKHUB_SCHEDULING_TOKEN": token},
            [f"  demo scheduling API: {url}"],
        )
