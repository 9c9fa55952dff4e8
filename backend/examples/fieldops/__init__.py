"""Field operations (the K9 operations seed) as an app: ``TASKHUB_APPS=backend.examples.fieldops``.

The seed is a Flask app with SQLAlchemy whose background work ran on Celery and Redis, with an
APScheduler "dual-run" fallback: each scheduled job tried ``.delay()`` and, when Celery was
unreachable, ran the work synchronously in the web process. Here the fallback is gone, because
what it guarded against cannot happen: deferring is one INSERT in the request's SQLAlchemy
transaction (``web.py``), so the job commits with the business write or not at all, and the
periodic tasks are ticked by every worker (a tick gives one job however many run). A worker
that is down delays jobs, which wait in PostgreSQL; nothing is lost and nothing runs twice.

Its parts:

- ``web.py``: the Flask app factory, a session per request, views that defer in it;
- ``models.py``: the SQLAlchemy models; ``migrations/``: their tables (schema ``fieldops``);
- ``blueprint.py``: queues and task names; ``tasks.py``: the jobs and the app's defaults;
- ``service.py`` and ``sql/``: what the jobs do; ``pdf.py``: the report; ``offsite.py``: the
  backup's off-site copy (a directory or an S3-compatible bucket);
- ``router.py``: the reports through taskhub's API; ``settings.py``: ``TASKHUB_FIELDOPS_*``;
- ``demo.py``: the Flask app and a local S3 (moto) for ``taskhub up --demo``.

The seed's verify script is ``taskhub doctor``. See docs/examples-fieldops.md.
"""

from __future__ import annotations

from pathlib import Path

from backend.declare.apps import TaskhubApp
from backend.examples.fieldops import tasks
from backend.examples.fieldops.router import router
from backend.examples.fieldops.settings import FieldopsSettings

app = TaskhubApp(
    name="fieldops",
    blueprints=(tasks.blueprint,),
    routers=(router,),
    settings=(FieldopsSettings,),
    migrations=Path(__file__).parent / "migrations",
    defaults=tasks.DEFAULTS,
    description="Field operations: schedules, notifications, reports and off-site backups.",
)
