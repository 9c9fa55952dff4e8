"""The HRMS as a taskhub app: Django set up once per process, its ``@task`` functions declared.

``taskhub worker --app backend.examples.hrms.app --queues chart_sync,maintenance``; the
tables are Django's (``python manage.py migrate``), taskhub's schema ``taskhub migrate``'s.
"""

from __future__ import annotations

from backend.examples.hrms import SETTINGS_MODULE
from backend.integrations.django.app import django_app

app = django_app(
    "hrms",
    settings_module=SETTINGS_MODULE,
    description="The HRMS Django project: salary uploads sync the dashboard's chart data.",
)
