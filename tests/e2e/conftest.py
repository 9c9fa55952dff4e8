"""Run real taskhub processes and talk to them over HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
from psycopg.rows import dict_row

TASKHUB = str(Path(sys.executable).parent / "taskhub")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def python_stacks(pid: int) -> str:
    """What a process and its children are doing, Python stacks included (py-spy), to tell
    why one did not stop."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return "(gone)"
    spy = Path(sys.executable).parent / "py-spy"
    parts = []
    for process in tree:
        with contextlib.suppress(psutil.Error):
            parts.append(f"== {process.pid} {process.status()}: {' '.join(process.cmdline())}")
            if "python" in process.name() or "taskhub" in " ".join(process.cmdline()[:2]):
                dumped = subprocess.run(
                    [str(spy), "dump", "--locals", "--pid", str(process.pid)],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                parts.append(dumped.stdout + dumped.stderr)
    return "\n".join(parts)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any database or taskhub settings, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TASKHUB_") and key not in ("DATABASE_URL", "TEST_DATABASE_URL")
    }
    env.update(extra)
    return env


class TaskhubProcess:
    """A `taskhub ...` child process whose output is collected as it comes."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [TASKHUB, *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None:
                self._reader.join(timeout=5)
                if any(text in line for line in self.lines):
                    return
                raise AssertionError(f"exited with {self.process.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout}s:\n{self.output}")
            time.sleep(0.05)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stacks = python_stacks(self.process.pid)
            self.kill()
            raise AssertionError(
                f"still running {timeout}s after {sig.name}; its processes:\n{stacks}\n"
                f"--- its output:\n{self.output}"
            ) from None
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def spawn() -> Iterator[type[TaskhubProcess]]:
    started: list[TaskhubProcess] = []

    class Tracked(TaskhubProcess):
        def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
            super().__init__(args, cwd, env)
            started.append(self)

    yield Tracked
    for child in started:
        if child.process.poll() is None:
            child.kill()
        child._reader.join(timeout=5)


def postmasters_in(data_dir: Path) -> list[psutil.Process]:
    """PostgreSQL servers running on a data directory."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["name"] == "postgres" and str(data_dir) in cmdline and "-D" in cmdline:
            found.append(process)
    return found


def wait_for_job(
    base_url: str,
    job_id: int,
    status: str = "succeeded",
    timeout: float = 30,
    headers: dict[str, str] | None = None,
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{base_url}/jobs/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        job: dict[str, object] = response.json()
        if job["status"] == status:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {job['status']}, not {status}")
        time.sleep(0.1)


def job_row(url: str, job_id: int) -> dict[str, Any]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT job.status::text, job.attempts, result.result,"
            " ARRAY(SELECT type::text FROM procrastinate_events"
            "       WHERE job_id = job.id ORDER BY id) AS events,"
            " ARRAY(SELECT type || '@' || attempt FROM taskhub.job_errors"
            "       WHERE job_id = job.id ORDER BY id) AS errors"
            " FROM procrastinate_jobs job"
            " LEFT JOIN taskhub.job_results result ON result.job_id = job.id"
            " WHERE job.id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None
    return row


def wait_status(url: str, job_id: int, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (row := job_row(url, job_id))["status"] != status:
        assert time.monotonic() < deadline, f"job {job_id} is {row['status']}, not {status}"
        time.sleep(0.05)
    return row
