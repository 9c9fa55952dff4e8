"""The schedule sync example, as an app: ``TASKHUB_APPS=backend.examples.scheduling``.

A template for a team's own app. Its parts:

- ``blueprint.py``: the task blueprint, queue and task names (imports nothing of the app);
- ``tasks.py``: the jobs, thin, and the app's task defaults;
- ``service.py``: the writes (row and job in one transaction) and the sync steps;
- ``schemas.py``: what the API accepts and shows; ``router.py``: the HTTP routes;
- ``settings.py``: ``TASKHUB_SCHEDULING_*``; ``sql/``: its named queries;
- ``migrations/``: its tables (schema ``scheduling``), run by ``taskhub migrate --app ...``;
- ``standin.py`` and ``demo.py``: a stand-in of the remote API, for tests and demos.

See docs/examples-scheduling.md.
"""

from __future__ import annotations

from pathlib import Path

from backend.declare.apps import TaskhubApp
from backend.examples.scheduling import tasks
from backend.examples.scheduling.router import router
from backend.examples.scheduling.settings import SchedulingSettings

app = TaskhubApp(
    name="scheduling",
    blueprints=(tasks.blueprint,),
    routers=(router,),
    settings=(SchedulingSettings,),
    migrations=Path(__file__).parent / "migrations",
    defaults=tasks.DEFAULTS,
    description="Employees and schedules kept in sync with an external scheduling API.",
)
