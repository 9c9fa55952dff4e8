"""`taskhub queues`: list, pause and resume from the command line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.e2e.conftest import TASKHUB, clean_env
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


def test_purge_asks_unless_yes(tmp_path: Path, db_url: str) -> None:
    env = clean_env(DATABASE_URL=db_url)
    for _ in range(2):
        assert (
            run_cli(["defer", "taskhub.ping", "--queue", "emails"], tmp_path, env).returncode == 0
        )

    refused = subprocess.run(  # no terminal on standard input
        [TASKHUB, "purge", "emails"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "add --yes" in refused.stderr
    purged = run_cli(["purge", "emails", "--yes"], tmp_path, env)
    assert purged.returncode == 0, purged.stderr
    assert "queue emails: 2 waiting jobs deleted" in purged.stdout
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT actor, details FROM taskhub.audit_log").fetchall()
        left = conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()
    assert [(actor.startswith("cli:"), details) for actor, details in rows] == [
        (True, {"queue": "emails", "jobs": 2})
    ]
    assert left == (0,)
