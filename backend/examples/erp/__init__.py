"""The ERP sync example, as an app: ``TASKHUB_APPS=backend.examples.erp`` (or ``--app``).

A template to copy: everything the ERP sync needs lives in this folder, and taskhub's core
knows nothing of it.

============================  ===============================================================
``tasks.py``                  the tasks ``erp.sync_assets`` and ``erp.sync_locations`` (thin)
``service.py``                the HTTP client, the page loop, the run history
``router.py``, ``schemas.py`` ``POST /erp/sync-*``, ``GET /erp/task-status/{id}``, runs
``settings.py``               ``ErpSettings``: ``TASKHUB_ERP_BASE_URL``, ``_TOKEN``, ...
``sql/erp.sql``               every statement, loaded with ``load_queries``
``migrations/``               its tables (schema ``erp``), in ``alembic_version_erp``
``standin.py``, ``demo.py``   a stand-in ERP for the demo and the tests
============================  ===============================================================

``taskhub migrate --app backend.examples.erp`` creates its schema; workers and the API
started with the app serve its tasks and routes.
"""

from __future__ import annotations

from pathlib import Path

from backend.declare.apps import TaskhubApp
from backend.examples.erp import router, tasks
from backend.examples.erp.settings import ErpSettings

app = TaskhubApp(
    name="erp",
    blueprints=(tasks.blueprint,),
    routers=(router.router,),
    settings=(ErpSettings,),
    migrations=Path(__file__).parent / "migrations",
    defaults=tasks.DEFAULTS,
    description="Sync assets and locations from an ERP's paged HTTP API.",
)
