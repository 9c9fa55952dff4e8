"""`taskhub queues`: list, pause and resume from the command line."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.e2e.conftest import clean_env
from tests.e2e.test_processes import run_cli

pytestmark = pytest.mark.e2e


def test_pause_list_resume(tmp_path: Path, db_url: str) -> None:
    env = clean_env(DATABASE_URL=db_url)
    deferred = run_cli(["defer", "taskhub.ping", "--queue", "emails"], tmp_path, env)
    assert deferred.returncode == 0, deferred.stderr

    paused = run_cli(["queues", "pause", "emails"], tmp_path, env)
    assert paused.returncode == 0, paused.stderr
    assert "queue emails: paused (1 waiting)" in paused.stdout

    listing = run_cli(["queues"], tmp_path, env)
    [line] = [line for line in listing.stdout.splitlines() if line.startswith("emails")]
    assert line.split()[1] == "1"
    assert "yes, by cli:" in line

    resumed = run_cli(["queues", "resume", "emails"], tmp_path, env)
    assert "queue emails: running" in resumed.stdout
    with psycopg.connect(db_url) as conn:
        actions = conn.execute("SELECT action FROM taskhub.audit_log ORDER BY id").fetchall()
    assert [row[0] for row in actions] == ["pause", "resume"]

    bad = run_cli(["queues", "pause", "no spaces"], tmp_path, env)
    assert bad.returncode == 2
    assert "is not a queue name" in bad.stderr
