"""The ERP sync across real processes: `taskhub api`, `taskhub worker`, a stand-in ERP server.

The example is an app: `taskhub migrate --app backend.examples.erp` creates its schema, and
the API and the workers load it from TASKHUB_APPS.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from backend.examples.erp.standin import ErpStandin
from backend.examples.serving import serving
from tests.conftest import OPERATE_TOKEN, bearer
from tests.e2e.conftest import TASKHUB, TaskhubProcess, clean_env, free_port, job_row

pytestmark = pytest.mark.e2e

ERP_TOKEN = "erp-standin-token-0123456789"
APP = "backend.examples.erp"
HEADERS = bearer(OPERATE_TOKEN)
#: Fast heartbeats and a rescue every second, so a killed worker's job is back in seconds.
FAST_RESCUE = {
    "TASKHUB_HEARTBEAT_INTERVAL": "0.5",
    "TASKHUB_RESCUE_AFTER": "1",
    "TASKHUB_SCHEDULES": "taskhub.rescue_stalled_jobs=* * * * * *",
    "TASKHUB_FETCH_POLLING_INTERVAL": "0.1",
}


@pytest.fixture
def standin() -> ErpStandin:
    erp = ErpStandin(token=ERP_TOKEN)
    erp.seed(assets=10_000, locations=50)
    return erp


@pytest.fixture
def erp_url(standin: ErpStandin) -> Iterator[str]:
    with serving(standin.app()) as url:
        yield url


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TASKHUB, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def environment(db_url: str, erp_url: str, cwd: Path) -> dict[str, str]:
    """The app enabled, pointed at the stand-in ERP; the database migrated with the app."""
    env = clean_env(
        DATABASE_URL=db_url,
        TASKHUB_APPS=APP,
        TASKHUB_TOKENS=f"ops=operate:{OPERATE_TOKEN}",
        TASKHUB_ERP_BASE_URL=erp_url,
        TASKHUB_ERP_TOKEN=ERP_TOKEN,
        **FAST_RESCUE,
    )
    migrated = run_cli(["migrate", "--app", APP], cwd, clean_env(DATABASE_URL=db_url))
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    return env


def has_schema(url: str, name: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (name,)).fetchone()
    assert row is not None
    return bool(row[0])


def app_revision(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('alembic_version_erp')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT version_num FROM alembic_version_erp").fetchone()
    return str(row[0]) if row else None


def test_migrate_creates_the_erp_schema_only_with_the_app(
    tmp_path: Path, empty_db_url: str
) -> None:
    env = clean_env(DATABASE_URL=empty_db_url)
    plain = run_cli(["migrate"], tmp_path, env)
    assert plain.returncode == 0, plain.stderr
    assert not has_schema(empty_db_url, "erp"), "taskhub alone makes no erp schema"
    assert app_revision(empty_db_url) is None

    enabled = run_cli(["migrate", "--app", APP], tmp_path, env)
    assert enabled.returncode == 0, enabled.stderr
    assert "(and the schemas of erp)" in enabled.stdout
    assert has_schema(empty_db_url, "erp")
    assert app_revision(empty_db_url) == "0001"

    with psycopg.connect(empty_db_url) as conn:
        conn.execute(
            "INSERT INTO erp.locations (erp_id, code, name, erp_updated_at)"
            " VALUES ('L1', 'LOC-1', 'kept', now())"
        )
    again = run_cli(["migrate"], tmp_path, env | {"TASKHUB_APPS": APP})
    assert again.returncode == 0, again.stderr
    assert app_revision(empty_db_url) == "0001"
    with psycopg.connect(empty_db_url) as conn:
        names = conn.execute("SELECT name FROM erp.locations").fetchall()
    assert names == [("kept",)], "a second migrate changes nothing"


def start_api(spawn: type[TaskhubProcess], cwd: Path, env: dict[str, str]) -> str:
    port = free_port()
    api = spawn(["api", "--port", str(port)], cwd, env)
    api.wait_for_line("Stop with Ctrl-C.")
    return f"http://127.0.0.1:{port}"


def task_status(base: str, task_id: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/erp/task-status/{task_id}", headers=HEADERS)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_until(base: str, task_id: str, done: Any, timeout: float = 60) -> list[dict[str, Any]]:
    """Poll the status until ``done(status)``; returns every answer seen."""
    seen = [task_status(base, task_id)]
    deadline = time.monotonic() + timeout
    while not done(seen[-1]):
        assert time.monotonic() < deadline, f"still {seen[-1]} after {timeout}s"
        time.sleep(0.05)
        seen.append(task_status(base, task_id))
    return seen


def table_facts(url: str) -> dict[str, Any]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        assets = conn.execute(
            "SELECT count(*) AS n, count(DISTINCT erp_id) AS ids FROM erp.assets"
        ).fetchone()
        runs = conn.execute(
            "SELECT id, status, attempt, resumed_from, error, processed, created"
            " FROM erp.sync_runs ORDER BY id"
        ).fetchall()
    assert assets is not None
    return {"assets": (assets["n"], assets["ids"]), "runs": runs}


def test_a_10000_asset_sync_through_the_api_and_a_worker(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str, standin: ErpStandin, erp_url: str
) -> None:
    standin.page_delay = 0.05
    env = environment(db_url, erp_url, tmp_path)
    base = start_api(spawn, tmp_path, env)
    response = httpx.post(f"{base}/erp/sync-assets?force_full_sync=false", headers=HEADERS)
    assert response.status_code == 202, response.text
    started = response.json()
    assert started == {
        "success": True,
        "message": "Asset sync started in background",
        "task_id": started["task_id"],
        "status": "PENDING",
    }
    worker = spawn(["worker", "--queues", "erp_sync", "--concurrency", "1"], tmp_path, env)

    seen = wait_until(base, started["task_id"], lambda s: s["status"] in ("SUCCESS", "FAILURE"))
    statuses = [answer["status"] for answer in seen]
    assert statuses[0] == "PENDING"
    assert "PROGRESS" in statuses
    assert any(
        answer["progress"] and 0 < answer["progress"]["assets_processed"] < 10_000
        for answer in seen
    ), "progress was seen midway"
    done = seen[-1]
    assert done["status"] == "SUCCESS", done
    assert done["progress"]["progress"] == "10000/10000"
    result = done["result"]
    assert (result["processed"], result["created"], result["updated"]) == (10_000, 10_000, 0)
    facts = table_facts(db_url)
    assert facts["assets"] == (10_000, 10_000)
    assert [(run["status"], run["created"]) for run in facts["runs"]] == [("succeeded", 10_000)]
    assert worker.stop() == 0


def test_kill_9_mid_sync_the_sync_is_rescued_and_finishes_without_duplicates(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str, standin: ErpStandin, erp_url: str
) -> None:
    standin.page_delay = 0.15  # 20 pages: about 3 s, time to kill the worker midway
    env = environment(db_url, erp_url, tmp_path)
    base = start_api(spawn, tmp_path, env)
    task_id = httpx.post(f"{base}/erp/sync-assets", headers=HEADERS).json()["task_id"]
    # --processes 1: the worker itself dies, not a supervisor whose children stop gracefully.
    doomed = spawn(["worker", "--queues", "erp_sync", "--processes", "1"], tmp_path, env)

    def midway(status: dict[str, Any]) -> bool:
        progress = status["progress"]
        return bool(progress) and progress["assets_processed"] >= 3_000

    wait_until(base, task_id, midway)
    doomed.kill()  # kill -9, mid-sync
    assert job_row(db_url, int(task_id))["status"] == "doing", "nobody knows yet"

    successor = spawn(["worker"], tmp_path, env)  # every queue: the rescuer's too
    done = wait_until(base, task_id, lambda s: s["status"] in ("SUCCESS", "FAILURE"))[-1]
    assert done["status"] == "SUCCESS", done
    assert (done["result"]["processed"], done["result"]["created"]) == (10_000, 10_000)
    assert done["result"]["total"] == 10_000

    facts = table_facts(db_url)
    assert facts["assets"] == (10_000, 10_000), "every asset once"
    first, second = facts["runs"]
    assert (first["status"], first["attempt"]) == ("failed", 1)
    assert first["error"] == "interrupted: the worker running it stopped before it finished"
    assert (second["status"], second["attempt"]) == ("succeeded", 2)
    assert second["resumed_from"] == first["id"]
    assert first["processed"] >= 3_000, "the rescued attempt resumed after the committed pages"
    pages = standin.pages_requested("assets")
    assert pages.count(1) == 1, "the sync did not start over"
    assert set(pages) == set(range(1, 21))

    row = job_row(db_url, int(task_id))
    assert row["attempts"] == 2, "the lost attempt counts"
    assert row["errors"] == ["WorkerLost@1"]
    assert successor.stop() == 0
