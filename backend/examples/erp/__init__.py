"""The ERP sync example, as an app: ``TASKHUB_APPS=backend.examples.erp``."""

from __future__ import annotations

from backend.api.routers import erp as router
from backend.declare.apps import TaskhubApp
from backend.tasks import erp as tasks

app = TaskhubApp(name="erp", blueprints=(tasks.blueprint,), routers=(router.router,))
