"""`taskhub up` on the embedded server: a job from REST to `succeeded`, clean stops, recovery."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import (
    TASKHUB,
    TaskhubProcess,
    clean_env,
    free_port,
    postmasters_in,
    wait_for_job,
)

pytestmark = pytest.mark.e2e


def start_up(spawn: type[TaskhubProcess], cwd: Path, port: int) -> TaskhubProcess:
    process = spawn(["up"], cwd, clean_env(TASKHUB_API_PORT=str(port)))
    process.wait_for_line("Stop with Ctrl-C.", timeout=120)
    return process


def defer_ping(base_url: str, message: str) -> int:
    response = httpx.post(
        f"{base_url}/jobs", json={"task": "taskhub.ping", "args": {"message": message}}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_up_runs_a_job_and_stops_cleanly(
    spawn: type[TaskhubProcess], tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    up = start_up(spawn, tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    assert f"API:      {base}" in up.output
    assert "embedded PostgreSQL" in up.output
    assert f"curl -s -X POST {base}/jobs" in up.output
    pgdata = tmp_path / ".taskhub" / "pgdata"
    assert postmasters_in(pgdata), "the embedded server should be running"

    assert httpx.get(f"{base}/health").json() == {"status": "ok", "database": "ok"}
    job = wait_for_job(base, defer_ping(base, "hello"))
    assert job["state"] == "SUCCESS"

    # Another command in the same directory joins the running server and leaves it running.
    defer = subprocess.run(
        [TASKHUB, "defer", "taskhub.ping", "--args", '{"message": "from the CLI"}'],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert defer.returncode == 0, defer.stderr
    wait_for_job(base, int(json.loads(defer.stdout)["id"]))
    assert postmasters_in(pgdata), "the CLI must not stop the server `up` is using"

    assert up.stop(stop_signal) == 0, up.output
    assert "taskhub stopped" in up.output
    assert postmasters_in(pgdata) == [], "the embedded server should be stopped"


def test_up_recovers_after_kill_9(spawn: type[TaskhubProcess], tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = start_up(spawn, tmp_path, port)
    job_id = defer_ping(base, "before the crash")
    wait_for_job(base, job_id)
    first.kill()
    pgdata = tmp_path / ".taskhub" / "pgdata"
    assert postmasters_in(pgdata), "a killed taskhub leaves its server running"

    second = start_up(spawn, tmp_path, port)
    assert wait_for_job(base, job_id)["args"] == {"message": "before the crash", "sleep": 0.0}
    wait_for_job(base, defer_ping(base, "after the crash"))
    assert second.stop() == 0, second.output
    assert postmasters_in(pgdata) == [], "the server left over must be stopped this time"


def test_up_recovers_from_a_stale_pid_file(spawn: type[TaskhubProcess], tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = start_up(spawn, tmp_path, port)
    pid_file = tmp_path / ".taskhub" / "pgdata" / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    assert first.stop() == 0
    assert not pid_file.exists()
    # As after a power cut: postmaster.pid remains, and its pid now belongs to another program.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        pid_file.write_text("\n".join([str(bystander.pid), *lines[1:]]) + "\n")
        second = start_up(spawn, tmp_path, port)
        wait_for_job(base, defer_ping(base, "after the power cut"))
        assert second.stop() == 0, second.output
        assert psutil.pid_exists(bystander.pid), "the unrelated process must be left alone"
    finally:
        bystander.kill()
        bystander.wait()


def test_invalid_setting_stops_the_start_with_one_line(
    spawn: type[TaskhubProcess], tmp_path: Path
) -> None:
    process = spawn(["up"], tmp_path, clean_env(TASKHUB_API_PORT="eighty"))
    assert process.process.wait(timeout=60) == 2
    process.stop(timeout=5)
    assert process.lines == [process.lines[0]]
    assert "TASKHUB_API_PORT" in process.lines[0]
    assert "eighty" in process.lines[0]
    assert not (tmp_path / ".taskhub").exists()


def test_busy_port_is_a_clear_error(spawn: type[TaskhubProcess], tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = spawn(["up", "--port", str(port)], tmp_path, clean_env())
        assert process.process.wait(timeout=60) == 2
    process.stop(timeout=5)
    assert f"cannot listen on 127.0.0.1:{port}" in process.output
    assert not (tmp_path / ".taskhub").exists()
