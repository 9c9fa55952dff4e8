"""The manufacturing platform example (seed 001), as an app: ``TASKHUB_APPS=
backend.examples.manufacturing`` (or ``--app``; ``taskhub up --demo`` enables it with its
stand-ins). Its Celery system had six task families on fifteen priority queues; each family
is a folder here (tasks, service, router, SQL), the queues and worker pools are in
``queues.py``, the stand-ins (a mail server, a payment provider) beside the family that calls
them; the sync family pages through the ERP example's stand-in. docs/examples-manufacturing.md
walks through it.
"""

from __future__ import annotations

from pathlib import Path

from backend.declare.apps import TaskhubApp
from backend.examples.manufacturing.analytics import router as analytics_router
from backend.examples.manufacturing.analytics import tasks as analytics_tasks
from backend.examples.manufacturing.email import router as email_router
from backend.examples.manufacturing.email import tasks as email_tasks
from backend.examples.manufacturing.monitoring import router as monitoring_router
from backend.examples.manufacturing.monitoring import tasks as monitoring_tasks
from backend.examples.manufacturing.orders import router as order_router
from backend.examples.manufacturing.orders import tasks as order_tasks
from backend.examples.manufacturing.payments import router as payment_router
from backend.examples.manufacturing.payments import tasks as payment_tasks
from backend.examples.manufacturing.settings import ManufacturingSettings
from backend.examples.manufacturing.sync import tasks as sync_tasks

app = TaskhubApp(
    name="manufacturing",
    blueprints=(
        payment_tasks.blueprint,
        email_tasks.blueprint,
        order_tasks.blueprint,
        monitoring_tasks.blueprint,
        sync_tasks.blueprint,
        analytics_tasks.blueprint,
    ),
    routers=(
        email_router.router,
        payment_router.router,
        order_router.router,
        monitoring_router.router,
        analytics_router.router,
    ),
    settings=(ManufacturingSettings,),
    migrations=Path(__file__).parent / "migrations",
    description="The manufacturing platform's email, payment, order, sync, analytics and "
    "monitoring tasks on the seed's fifteen queues.",
)
