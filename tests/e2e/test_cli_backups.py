"""`taskhub backups`: the recorded runs from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from tests.e2e.conftest import clean_env
from tests.e2e.test_processes import run_cli

pytestmark = pytest.mark.e2e


def test_backups_command_lists_runs(tmp_path: Path, db_url: str) -> None:
    env = clean_env(DATABASE_URL=db_url)
    empty = run_cli(["backups"], tmp_path, env)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == "no backups yet"

    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO taskhub.backups (status, path, started_at, finished_at, size_bytes)"
            " VALUES ('succeeded', '/srv/backups/app-1.dump', '2026-03-01 03:00Z',"
            " '2026-03-01 03:00:09Z', 3145728),"
            " ('failed', NULL, '2026-03-02 03:00Z', '2026-03-02 03:00:01Z', NULL)"
        )
        conn.execute("UPDATE taskhub.backups SET error = 'disk full' WHERE status = 'failed'")
    listing = run_cli(["backups"], tmp_path, env)
    assert listing.returncode == 0, listing.stderr
    header, failed, succeeded = listing.stdout.splitlines()
    assert header.split()[:2] == ["ID", "STARTED"]
    assert "failed" in failed
    assert failed.endswith("disk full")
    assert "3.0 MiB" in succeeded
    assert succeeded.endswith("/srv/backups/app-1.dump")

    as_json = run_cli(["backups", "--json", "--limit", "1"], tmp_path, env)
    [line] = as_json.stdout.splitlines()
    assert json.loads(line)["status"] == "failed"
