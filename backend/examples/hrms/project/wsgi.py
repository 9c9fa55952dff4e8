"""WSGI entry point of the HRMS project (gunicorn backend.examples.hrms.project.wsgi)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.examples.hrms.project.settings")
application = get_wsgi_application()
