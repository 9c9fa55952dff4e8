"""`taskhub up` on the embedded server: a job from REST to `succeeded`, clean stops, recovery."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from backend.examples.erp.demo import DEMO_ASSETS
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


def auth(cwd: Path) -> dict[str, str]:
    """The generated admin token `taskhub up` keeps in .taskhub/ when TASKHUB_TOKENS is unset."""
    token = (cwd / ".taskhub" / "admin-token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


def defer_ping(base_url: str, message: str, headers: dict[str, str]) -> int:
    response = httpx.post(
        f"{base_url}/jobs",
        json={"task": "taskhub.ping", "args": {"message": message}},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def banner_token(process: TaskhubProcess) -> str:
    """The token the start banner prints: `  token:    <token> (admin; kept in ...)`."""
    lines = [line for line in process.lines if line.startswith("  token:    ")]
    assert len(lines) == 1, process.output
    token, _, where = lines[0].removeprefix("  token:    ").partition(" ")
    assert where == "(admin; kept in .taskhub/admin-token)"
    return token


def curl_request(
    process: TaskhubProcess, prefix: str, path: str = ""
) -> tuple[str, str, dict[str, str], str]:
    """The banner's curl line starting with ``prefix`` (and naming ``path``), parsed as a
    shell would."""
    [line] = [
        line for line in process.lines if line.startswith(f"  curl -s {prefix}") and path in line
    ]
    words = shlex.split(line)
    method, headers, body = "GET", {}, ""
    for option, value in zip(words, [*words[1:], ""], strict=True):
        if option == "-X":
            method = value
        elif option == "-H":
            name, _, header = value.partition(": ")
            headers[name] = header
        elif option == "-d":
            body = value
    url = next(word for word in words if word.startswith("http://"))
    return method, url, headers, body


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

    # No TASKHUB_TOKENS: the banner prints the generated admin token, kept in .taskhub/.
    token = banner_token(up)
    headers = {"Authorization": f"Bearer {token}"}
    assert auth(tmp_path) == headers
    assert httpx.get(f"{base}/jobs", headers=headers).status_code == 200
    wrong = {"Authorization": f"Bearer {'x' * len(token)}"}
    assert httpx.get(f"{base}/jobs", headers=wrong).status_code == 401
    assert httpx.get(f"{base}/jobs").status_code == 401
    assert httpx.get(f"{base}/health").json() == {"status": "ok", "database": "ok"}

    # The banner's dashboard address takes the banner's token.
    assert f"dashboard: {base}/dashboard  (log in with the token)" in up.output
    with httpx.Client(base_url=base) as browser:
        assert browser.get("/dashboard/").headers["location"].startswith("/dashboard/login")
        login = browser.post("/dashboard/login", data={"token": token})
        assert login.status_code == 303, login.text
        assert browser.get("/dashboard/").status_code == 200

    # The banner's curl commands work as copied.
    method, url, curl_headers, body = curl_request(up, "-X POST")
    created = httpx.request(method, url, headers=curl_headers, content=body)
    assert created.status_code == 201, created.text
    method, url, curl_headers, _ = curl_request(up, "-H")
    read = httpx.request(method, url, headers=curl_headers)
    assert read.status_code == 200, read.text
    assert [job["id"] for job in read.json()["items"]] == [created.json()["id"]]

    job = wait_for_job(base, defer_ping(base, "hello", headers), headers=headers)
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
    deferred = int(json.loads(defer.stdout)["id"])
    wait_for_job(base, deferred, headers=headers)
    shown = subprocess.run(
        [TASKHUB, "jobs", "show", str(deferred), "--json"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["result"] == "from the CLI"
    assert postmasters_in(pgdata), "the CLI must not stop the server `up` is using"

    assert up.stop(stop_signal) == 0, up.output
    assert "taskhub stopped" in up.output
    assert postmasters_in(pgdata) == [], "the embedded server should be stopped"


def test_up_recovers_after_kill_9(spawn: type[TaskhubProcess], tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = start_up(spawn, tmp_path, port)
    headers = auth(tmp_path)
    job_id = defer_ping(base, "before the crash", headers)
    wait_for_job(base, job_id, headers=headers)
    first.kill()
    pgdata = tmp_path / ".taskhub" / "pgdata"
    assert postmasters_in(pgdata), "a killed taskhub leaves its server running"

    second = start_up(spawn, tmp_path, port)
    assert banner_token(second) == headers["Authorization"].removeprefix("Bearer ")
    job = wait_for_job(base, job_id, headers=headers)
    assert job["args"] == {"message": "before the crash", "sleep": 0.0}
    wait_for_job(base, defer_ping(base, "after the crash", headers), headers=headers)
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
        headers = auth(tmp_path)
        wait_for_job(base, defer_ping(base, "after the power cut", headers), headers=headers)
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


def test_up_demo_serves_the_stand_ins_and_syncs_the_demo_erp(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    port = free_port()
    env = clean_env(DATABASE_URL=db_url, TASKHUB_API_PORT=str(port))
    up = spawn(["up", "--demo"], tmp_path, env)
    up.wait_for_line("Stop with Ctrl-C.")
    assert "demo ERP: http://127.0.0.1:" in up.output
    assert "demo scheduling API: http://127.0.0.1:" in up.output
    assert "demo mail server: smtp://127.0.0.1:" in up.output
    assert "demo payment provider: http://127.0.0.1:" in up.output
    headers = {"Authorization": f"Bearer {banner_token(up)}"}
    base = f"http://127.0.0.1:{port}"

    # The banner's command starts the sync; its status ends SUCCESS with every demo asset.
    method, url, curl_headers, _ = curl_request(up, "-X POST -H", "/erp/")
    assert url.endswith("/erp/sync-assets")
    started = httpx.request(method, url, headers=curl_headers)
    assert started.status_code == 202, started.text
    task_id = started.json()["task_id"]
    deadline = time.monotonic() + 90
    while (status := httpx.get(f"{base}/erp/task-status/{task_id}", headers=headers).json())[
        "status"
    ] not in ("SUCCESS", "FAILURE"):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["status"] == "SUCCESS", status
    assert status["progress"]["assets_created"] == DEMO_ASSETS

    # The banner's payment: charged at the demo provider, exactly once, then invoiced.
    method, url, curl_headers, body = curl_request(up, "-X POST", "/manufacturing/payments")
    queued = httpx.request(method, url, headers=curl_headers, content=body)
    assert queued.status_code == 202, queued.text
    location = f"{base}{queued.headers['Location']}"
    while (detail := httpx.get(location, headers=headers).json())["invoice"] is None:
        assert time.monotonic() < deadline + 60, detail
        time.sleep(0.2)
    assert detail["payment"]["status"] == "paid"
    assert detail["payment"]["charge_id"]

    # Its sync pages through the same demo ERP (the seed's "schedule a task" endpoint).
    scheduled = httpx.post(
        f"{base}/monitoring/tasks/schedule",
        json={"task": "manufacturing.sync_external_data"},
        headers=headers,
    )
    assert scheduled.status_code == 201, scheduled.text
    wait_for_job(base, scheduled.json()["task_id"], timeout=60, headers=headers)

    assert up.stop() == 0, up.output
