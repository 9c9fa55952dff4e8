"""The schedule sync example, as an app: ``TASKHUB_APPS=backend.examples.scheduling``."""

from __future__ import annotations

from backend.api.routers import scheduling as router
from backend.declare.apps import TaskhubApp
from backend.tasks import scheduling as tasks

app = TaskhubApp(name="scheduling", blueprints=(tasks.blueprint,), routers=(router.router,))
