"""A Django project as a taskhub app: ``taskhub worker --app myproject.taskhub_app``.

:func:`django_app` sets Django up once for the process (``DJANGO_SETTINGS_MODULE``), imports
the ``tasks`` module of every installed Django app, as Celery's ``autodiscover_tasks`` does,
and declares each task that uses a :class:`TaskhubBackend` under its module path.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

from backend.declare.apps import TaskhubApp
from backend.declare.policy import TaskDefaults


def discover_tasks(extra_modules: Iterable[str] = ()) -> list[str]:
    """Import each installed app's ``tasks`` module (and ``extra_modules``); the names of
    the Django tasks on a taskhub backend, now declared on the integration's blueprint."""
    from django.apps import apps

    from backend.integrations.django.backend import TaskhubBackend, definition_for
    from backend.integrations.django.compat import Task

    names = [f"{config.name}.tasks" for config in apps.get_app_configs()]
    modules = [
        importlib.import_module(name)
        for name in [*names, *extra_modules]
        if importlib.util.find_spec(name) is not None
    ]
    declared: list[str] = []
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, Task) and isinstance(value.get_backend(), TaskhubBackend):
                declared.append(definition_for(value).name)
    return sorted(set(declared))


def django_app(
    name: str,
    *,
    settings_module: str | None = None,
    task_modules: Iterable[str] = (),
    backend_alias: str = "default",
    migrations: Path | None = None,
    description: str = "",
) -> TaskhubApp:
    """The project's TaskhubApp: Django set up, its tasks declared, the backend's
    ``DEFAULTS`` as the app's defaults. One Django project per process, as Django allows."""
    import django

    from backend.integrations.django.backend import BLUEPRINT, project_defaults

    if settings_module:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    django.setup()  # idempotent: the app registry populates once per process
    discover_tasks(task_modules)
    defaults: TaskDefaults = project_defaults(backend_alias)
    return TaskhubApp(
        name=name,
        blueprints=(BLUEPRINT,),
        migrations=migrations,
        defaults=defaults,
        description=description,
    )
