"""The separate commands compose.yaml runs: migrate, api, worker, and defer from the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import OPERATE_TOKEN, bearer
from tests.e2e.conftest import TASKHUB, TaskhubProcess, clean_env, free_port, wait_for_job

pytestmark = pytest.mark.e2e


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TASKHUB, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def jobs_in(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()
    assert row is not None
    return int(row[0])


def test_migrate_then_api_and_two_workers(
    spawn: type[TaskhubProcess], tmp_path: Path, empty_db_url: str
) -> None:
    env = clean_env(DATABASE_URL=empty_db_url, TASKHUB_TOKENS=f"ops=operate:{OPERATE_TOKEN}")
    headers = bearer(OPERATE_TOKEN)
    migrated = run_cli(["migrate"], tmp_path, env)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated" in migrated.stdout

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = spawn(["api", "--port", str(port)], tmp_path, env)
    workers = [
        spawn(["worker", "--queues", "default,emails", "--concurrency", "2"], tmp_path, env)
        for _ in range(2)
    ]
    api.wait_for_line("Stop with Ctrl-C.")
    # Configured tokens are never printed: the banner's curl lines use a placeholder.
    assert "  tokens:   from TASKHUB_TOKENS" in api.lines
    assert OPERATE_TOKEN not in api.output
    assert '-H "Authorization: Bearer $TASKHUB_TOKEN"' in api.output
    assert not (tmp_path / ".taskhub").exists(), "configured tokens: none generated"
    for worker in workers:
        worker.wait_for_line("worker:   default,emails, concurrency 2")

    ids = [
        httpx.post(
            f"{base}/jobs",
            json={"task": "taskhub.ping", "args": {"message": n}, "queue": "emails"},
            headers=headers,
        ).json()["id"]
        for n in range(20)
    ]
    for job_id in ids:
        assert wait_for_job(base, job_id, headers=headers)["state"] == "SUCCESS"

    assert api.stop(signal.SIGTERM) == 0, api.output
    for worker in workers:
        assert worker.stop(signal.SIGTERM) == 0, worker.output
        assert "taskhub stopped" in worker.output
    assert not (tmp_path / ".taskhub").exists(), "DATABASE_URL set: no embedded server"


def test_cli_defer_enqueues_one_job(tmp_path: Path, db_url: str) -> None:
    env = clean_env(DATABASE_URL=db_url)
    result = run_cli(
        ["defer", "taskhub.ping", "--args", '{"message": "from cron"}', "--priority", "7"],
        tmp_path,
        env,
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert (job["task"], job["priority"], job["state"]) == ("taskhub.ping", 7, "PENDING")
    assert job["args"] == {"message": "from cron", "sleep": 0.0}
    assert jobs_in(db_url) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["defer", "taskhub.ping", "--args", '{"sleep": "x"}'], "args.sleep"),
        (["defer", "taskhub.pong"], "unknown task 'taskhub.pong'"),
        (["defer", "taskhub.ping", "--args", "{oops"], "not valid JSON"),
    ],
)
def test_cli_defer_rejects_bad_input_and_enqueues_nothing(
    tmp_path: Path, db_url: str, args: list[str], message: str
) -> None:
    result = run_cli(args, tmp_path, clean_env(DATABASE_URL=db_url))
    assert result.returncode == 2
    assert message in result.stderr
    assert jobs_in(db_url) == 0


def test_migrate_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=2"
    result = run_cli(["migrate"], tmp_path, clean_env(DATABASE_URL=url))
    assert result.returncode == 1
    assert "cannot reach the database" in result.stderr


def test_worker_refuses_to_start_without_a_database(tmp_path: Path, empty_db_url: str) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    result = run_cli(["worker"], tmp_path, clean_env(DATABASE_URL=unreachable))
    assert result.returncode == 1
    assert "cannot reach the database" in result.stderr
    assert "taskhub is up" not in result.stdout

    result = run_cli(["worker"], tmp_path, clean_env(DATABASE_URL=empty_db_url))
    assert result.returncode == 1
    assert "run `taskhub migrate`" in result.stderr


def test_python_dash_m_backend_is_the_taskhub_command(tmp_path: Path) -> None:
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "backend", "defer", "taskhub.pong"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown task 'taskhub.pong'" in result.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "backend", "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_text.returncode == 0
    for command in ("up", "api", "worker", "migrate", "defer", "jobs"):
        assert command in help_text.stdout
