"""``taskhub up --demo``: both examples enabled, each pointed at its stand-in served beside."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

from backend.examples.erp import demo as erp_demo
from backend.examples.scheduling import demo as scheduling_demo
from backend.settings import Settings

EXAMPLE_APPS = ("backend.examples.erp", "backend.examples.scheduling")
#: What to try once the API is up ({auth}: the curl header, {base}: the API's URL).
TRY_LINES = (
    "In the dashboard ({base}/dashboard): Tasks, erp.sync_assets, Defer; its progress bar moves.",
    "Or sync the demo ERP's assets, then poll the status with the task_id it answers:",
    "  curl -s -X POST {auth} {base}/erp/sync-assets",
    "  curl -s {auth} {base}/erp/task-status/TASK_ID",
)


@contextlib.contextmanager
def demo(settings: Settings) -> Iterator[tuple[Settings, list[str]]]:
    """Serve the stand-ins (one random token for both) until the block ends; yields settings
    with the example apps enabled and the lines to print.

    The apps read their settings from the environment, here and in the worker processes,
    so the stand-ins' URLs and token are set there for the block's duration.
    """
    token = secrets.token_urlsafe(16)
    with (
        erp_demo.serve_demo(token) as (erp_env, erp_lines),
        scheduling_demo.serve_demo(token) as (scheduling_env, scheduling_lines),
    ):
        environment = {**erp_env, **scheduling_env}
        previous = {name: os.environ.get(name) for name in environment}
        os.environ.update(environment)
        try:
            apps = [*settings.apps, *(app for app in EXAMPLE_APPS if app not in settings.apps)]
            yield settings.model_copy(update={"apps": apps}), [*erp_lines, *scheduling_lines]
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
