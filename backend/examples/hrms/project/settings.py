"""The HRMS project's settings: PostgreSQL from ``DATABASE_URL``, tasks on taskhub."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict


def database_from_url(url: str) -> dict[str, Any]:
    """``postgresql://user:password@host:port/name`` (``?host=/socket/dir`` too) as Django's
    DATABASES entry."""
    scheme = urlsplit(url).scheme
    if scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, not {scheme}://")
    params = conninfo_to_dict(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": str(params.get("dbname") or ""),
        "USER": str(params.get("user") or ""),
        "PASSWORD": str(params.get("password") or ""),
        "HOST": str(params.get("host") or ""),
        "PORT": str(params.get("port") or ""),
    }


SECRET_KEY = os.environ.get("HRMS_SECRET_KEY", "hrms-development-only-not-secret")
DEBUG = os.environ.get("HRMS_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "backend.examples.hrms.project.urls"
INSTALLED_APPS = ["backend.examples.hrms.salaries"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/taskhub")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
# The seed's uploads are spreadsheets of a few thousand rows.
DATA_UPLOAD_MAX_MEMORY_SIZE = 20 * 1024 * 1024

TASKS = {
    "default": {
        "BACKEND": "backend.integrations.django.TaskhubBackend",
        "QUEUES": ["default", "chart_sync", "maintenance"],
        "OPTIONS": {"DATABASE": "default"},
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"backend.examples.hrms": {"handlers": ["console"], "level": "INFO"}},
}
