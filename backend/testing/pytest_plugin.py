"""taskhub's pytest plugin, loaded in every project that installs taskhub (entry point
``pytest11``). Nothing here touches a database until a test asks for a fixture:

- ``taskhub_database_url``: a fresh database for the test, migrated (taskhub's schema and its
  apps'), cloned from a template made once per session and set of apps;
- ``taskhub_run_jobs``: ``taskhub_run_jobs()`` runs every job deferred (and committed) so far
  in that database with a real taskhub worker, until none is due, and returns their outcomes;
- ``taskhub_settings``, ``taskhub_loaded_apps``, ``taskhub_apps``, ``taskhub_admin_url``,
  ``taskhub_templates``: what those are built from.

The apps (``module`` or ``module:attribute``, as ``TASKHUB_APPS``) come from the test's
``@pytest.mark.taskhub_apps("proj.jobs")`` marker, else the ``taskhub_apps`` ini option, else
the ``TASKHUB_APPS`` environment variable. The server is ``TASKHUB_TEST_DATABASE_URL`` or
``TEST_DATABASE_URL`` (its database is the admin connection), else an embedded PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from backend.declare.apps import LoadedApps
    from backend.settings import Settings
    from backend.testing.databases import Templates
    from backend.testing.jobs import JobRunner

APPS_OPTION = "taskhub_apps"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        APPS_OPTION,
        type="linelist",
        default=[],
        help="taskhub apps the test databases are migrated for and taskhub_run_jobs loads "
        "(module or module:attribute); default: $TASKHUB_APPS",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "taskhub_apps(*apps): the taskhub apps this test's database and worker use",
    )


@pytest.fixture(scope="session")
def taskhub_admin_url() -> Iterator[str]:
    """The PostgreSQL server's admin URL for the session."""
    from backend.testing.databases import database_server

    with database_server() as url:
        yield url


@pytest.fixture(scope="session")
def taskhub_templates(taskhub_admin_url: str) -> Iterator[Templates]:
    """Migrated templates, one per set of apps, made on first use and dropped at the end."""
    from backend.testing.databases import Templates

    templates = Templates(taskhub_admin_url, prefix="taskhub_u")
    yield templates
    templates.close()


@pytest.fixture
def taskhub_apps(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The apps of this test: its marker, else the ini option, else ``$TASKHUB_APPS``."""
    marker = request.node.get_closest_marker("taskhub_apps")
    if marker is not None:
        names: list[str] = [str(arg) for arg in marker.args]
    else:
        names = list(request.config.getini(APPS_OPTION)) or os.environ.get(
            "TASKHUB_APPS", ""
        ).split(",")
    return tuple(dict.fromkeys(name.strip() for name in names if name.strip()))


@pytest.fixture
def taskhub_database_url(
    taskhub_templates: Templates, taskhub_apps: tuple[str, ...]
) -> Iterator[str]:
    """A fresh, migrated database for this test, seen by every connection and process."""
    with taskhub_templates.clone(taskhub_apps) as url:
        yield url


@pytest.fixture
def taskhub_settings(
    taskhub_database_url: str, taskhub_apps: tuple[str, ...], tmp_path: Path
) -> Settings:
    """taskhub's settings for this test's database and apps (the rest from the environment)."""
    from backend.settings import load_settings

    return load_settings(
        database_url=taskhub_database_url,
        data_dir=tmp_path / ".taskhub",
        apps=list(taskhub_apps),
    )


@pytest.fixture
def taskhub_loaded_apps(taskhub_settings: Settings) -> LoadedApps:
    """taskhub's own app and this test's, loaded as a worker loads them."""
    from backend.declare.apps import load_apps

    return load_apps(taskhub_settings)


@pytest.fixture
def taskhub_run_jobs(
    taskhub_database_url: str, taskhub_settings: Settings, taskhub_loaded_apps: LoadedApps
) -> JobRunner:
    """``taskhub_run_jobs(queues=None, concurrency=1) -> list[JobOutcome]``; ``await
    taskhub_run_jobs.arun()`` in async tests. Only committed jobs are seen."""
    from backend.testing.jobs import JobRunner

    return JobRunner(taskhub_database_url, taskhub_settings, taskhub_loaded_apps)
