"""``taskhub up --demo``: the example apps enabled, each pointed at its stand-ins served beside."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

from backend.examples.erp import demo as erp_demo
from backend.examples.fieldops import demo as fieldops_demo
from backend.examples.hrms import demo as hrms_demo
from backend.examples.manufacturing import demo as manufacturing_demo
from backend.examples.scheduling import demo as scheduling_demo
from backend.process.embedded import database_url
from backend.settings import Settings

EXAMPLE_APPS = (
    "backend.examples.erp",
    "backend.examples.scheduling",
    "backend.examples.manufacturing",
    "backend.examples.fieldops",
    "backend.examples.hrms.app",
)
#: What to try once the API is up ({auth}: the curl header, {base}: the API's URL).
TRY_LINES = (
    "In the dashboard ({base}/dashboard): Tasks, erp.sync_assets, Defer; its progress bar moves.",
    "Or sync the demo ERP's assets, then poll the status with the task_id it answers:",
    "  curl -s -X POST {auth} {base}/erp/sync-assets",
    "  curl -s {auth} {base}/erp/task-status/TASK_ID",
    "Or charge a payment at the demo provider (exactly once), then read it and its invoice:",
    "  curl -s -X POST {auth} -H 'content-type: application/json' {base}/manufacturing/payments"
    ' -d \'{{"order_id": 1, "user_id": 1, "amount_cents": 10000, '
    '"payment_method_id": "pm_123"}}\'',
    "  curl -s {auth} {base}/manufacturing/payments/PAYMENT_ID",
    "The manufacturing platform's queues and health: {base}/monitoring/queues, "
    "{base}/monitoring/health",
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
        # The Flask app of field operations needs the database before `up` opens it: the demo
        # starts it (the embedded server when DATABASE_URL is unset) and hands `up` its URL.
        database_url(settings) as url,
        fieldops_demo.serve_demo(url, settings.data_dir) as (fieldops_env, fieldops_lines),
        hrms_demo.serve_demo(url) as (hrms_env, hrms_lines),
        erp_demo.serve_demo(token) as (erp_env, erp_lines),
        scheduling_demo.serve_demo(token) as (scheduling_env, scheduling_lines),
        manufacturing_demo.serve_demo(token, settings.data_dir) as (
            manufacturing_env,
            manufacturing_lines,
        ),
    ):
        # The manufacturing sync pages through the same stand-in ERP.
        erp_for_manufacturing = {
            "TASKHUB_MANUFACTURING_ERP_BASE_URL": erp_env["TASKHUB_ERP_BASE_URL"],
            "TASKHUB_MANUFACTURING_ERP_TOKEN": erp_env["TASKHUB_ERP_TOKEN"],
        }
        environment = {
            **erp_env,
            **scheduling_env,
            **manufacturing_env,
            **erp_for_manufacturing,
            **fieldops_env,
            **hrms_env,
        }
        previous = {name: os.environ.get(name) for name in environment}
        os.environ.update(environment)
        try:
            apps = [*settings.apps, *(app for app in EXAMPLE_APPS if app not in settings.apps)]
            # The manufacturing seed alerts on every final failure of its critical tier.
            critical = settings.critical_queues or list(manufacturing_demo.CRITICAL_QUEUES)
            yield (
                settings.model_copy(
                    update={"apps": apps, "critical_queues": critical, "database_url": url}
                ),
                [
                    *erp_lines,
                    *scheduling_lines,
                    *manufacturing_lines,
                    *fieldops_lines,
                    *hrms_lines,
                ],
            )
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
