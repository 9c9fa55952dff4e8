"""The HRMS Django project beside taskhub, for ``taskhub up --demo``: its tables migrated by
its own ``manage.py migrate``, its views served on a free local port."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from werkzeug.serving import make_server

from backend.errors import TaskhubError
from backend.examples.hrms import SETTINGS_MODULE

MANAGE = Path(__file__).resolve().parent / "manage.py"


class DemoMigrationFailed(TaskhubError):
    """``manage.py migrate`` failed for the demo database."""


@contextlib.contextmanager
def serve_demo(database_url: str) -> Iterator[tuple[dict[str, str], list[str]]]:
    """Migrate the project's tables into ``database_url`` and serve it until the block ends;
    yields the environment its settings read (``DATABASE_URL``) and the lines to print."""
    # Before anything imports the project (app.py, loaded after this): its settings read these.
    env = {"DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE}
    migrated = subprocess.run(
        [sys.executable, str(MANAGE), "migrate", "--noinput"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if migrated.returncode != 0:
        raise DemoMigrationFailed(f"the HRMS demo's manage.py migrate failed:\n{migrated.stderr}")
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        from django.core.wsgi import get_wsgi_application  # Django reads the settings now

        server = make_server("127.0.0.1", 0, get_wsgi_application(), threaded=True)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    thread = threading.Thread(target=server.serve_forever, name="hrms-django", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        yield (
            env,
            [
                f"  demo HRMS (Django): {base}  (POST {base}/api/salary-uploads/ with a CSV; "
                f"status at {base}/api/tasks/TASK_ID/)"
            ],
        )
    finally:
        server.shutdown()
        thread.join(timeout=10)
