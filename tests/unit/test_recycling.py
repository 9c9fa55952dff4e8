"""Worker recycling: TASKHUB_WORKER_MAX_JOBS / _MAX_MEMORY_MB, --max-jobs / --max-memory-mb,
the limits' checks, and the supervisor starting a recycled worker process again at once."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

import pytest

from backend import cli
from backend.declare.apps import builtin_apps
from backend.errors import SettingsError
from backend.process import supervisor
from backend.process.supervisor import WorkerSupervisor
from backend.runtime.recycling import (
    RECYCLE_EXIT_CODE,
    Recycling,
    ResidentMemory,
    WorkerRecycled,
)
from backend.settings import load_settings
from tests.unit.test_worker_processes import URL, wait_for

LIMITS = ("TASKHUB_WORKER_MAX_JOBS", "TASKHUB_WORKER_MAX_MEMORY_MB")


def test_no_recycling_by_default() -> None:
    settings = load_settings()

    assert (settings.worker_max_jobs, settings.worker_max_memory_mb) == (None, None)


@pytest.mark.parametrize("variable", LIMITS)
@pytest.mark.parametrize(("raw", "expected"), [("1000", 1000), ("1", 1), ("", None), (" ", None)])
def test_limits_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str, expected: int | None
) -> None:
    monkeypatch.setenv(variable, raw)

    settings = load_settings()
    field = variable.removeprefix("TASKHUB_").lower()
    assert getattr(settings, field) == expected


@pytest.mark.parametrize("variable", LIMITS)
@pytest.mark.parametrize(
    ("raw", "problem"),
    [("0", "greater than or equal to 1"), ("-5", "greater than or equal to 1"), ("1k", "int")],
)
def test_invalid_limits_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str, problem: str
) -> None:
    monkeypatch.setenv(variable, raw)

    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.message.startswith(f"invalid setting {variable}={raw!r}: ")
    assert problem in caught.value.message


@pytest.mark.parametrize("command", ["worker", "up"])
def test_the_options_become_the_settings(monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    monkeypatch.setenv("TASKHUB_WORKER_MAX_JOBS", "7")
    monkeypatch.setenv("TASKHUB_WORKER_MAX_MEMORY_MB", "900")

    kept = cli._settings_for(cli.build_parser().parse_args([command]))
    assert (kept.worker_max_jobs, kept.worker_max_memory_mb) == (7, 900)
    argv = [command, "--max-jobs", "1000", "--max-memory-mb", "512"]
    given = cli._settings_for(cli.build_parser().parse_args(argv))
    assert (given.worker_max_jobs, given.worker_max_memory_mb) == (1000, 512), "the options win"


def test_children_get_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = load_settings(worker_max_jobs=1000, worker_max_memory_mb=512)
    env = supervisor.child_environment(parent, URL, base={})

    assert (env["TASKHUB_WORKER_MAX_JOBS"], env["TASKHUB_WORKER_MAX_MEMORY_MB"]) == ("1000", "512")
    assert "TASKHUB_WORKER_MAX_JOBS" not in supervisor.child_environment(load_settings(), URL, {})


class Memory(ResidentMemory):
    def __init__(self, mb: int) -> None:
        self.mb = mb

    def megabytes(self) -> int:
        return self.mb


def test_when_a_worker_is_recycled() -> None:
    both = Recycling(max_jobs=1000, max_memory_mb=800, index=2)
    assert both.enabled
    assert both.name == "worker 2"
    assert not Recycling().enabled
    assert Recycling(max_jobs=5).name == "worker"

    assert both.due(999, Memory(799)) is None
    assert both.due(1000, Memory(10)) == "after 1000 jobs"
    assert both.due(3, Memory(812)) == "at 812 MB"
    assert Recycling(max_jobs=5).due(4, None) is None
    assert (both.jobs_left(998), Recycling(max_memory_mb=1).jobs_left(998)) == (2, None)


def test_a_memory_limit_below_the_start_is_refused() -> None:
    Recycling(max_memory_mb=300).check_start(Memory(120))
    Recycling(max_jobs=10).check_start(Memory(10_000))

    with pytest.raises(SettingsError) as caught:
        Recycling(max_memory_mb=100).check_start(Memory(120))
    assert caught.value.message.startswith("TASKHUB_WORKER_MAX_MEMORY_MB=100 is below ")
    assert "(120 MB)" in caught.value.message


def test_resident_memory_follows_what_the_process_holds() -> None:
    memory = ResidentMemory()
    try:
        before = memory.megabytes()
        held = b"x" * (64 * 1024 * 1024)
        after = memory.megabytes()
        assert 10 < before < 10_000
        assert after - before >= 60, (before, after)
        del held
        if sys.platform == "linux":
            assert memory.megabytes() < after, "current, not peak, where /proc is read"
    finally:
        memory.close()


def test_a_recycled_worker_process_exits_with_the_recycle_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def recycled(*args: Any, **kwargs: Any) -> None:
        assert kwargs["worker_index"] == 3
        raise WorkerRecycled("after 5 jobs")

    monkeypatch.setattr(cli, "_serve", recycled)
    args = argparse.Namespace(supervisor_pid=None, worker_index=3)
    assert cli._worker_process(load_settings(), builtin_apps(), args) == RECYCLE_EXIT_CODE

    monkeypatch.setattr(cli, "_serve", lambda *args, **kwargs: None)
    assert cli._worker_process(load_settings(), builtin_apps(), args) == 0


async def test_a_recycled_child_is_started_again_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No backoff, no warning, and never the give-up of a child dying at start."""
    monkeypatch.setattr(supervisor, "RESTART_DELAY", 30.0)
    caplog.set_level(logging.INFO, logger="backend.process.supervisor")
    recycled = [sys.executable, "-c", f"raise SystemExit({RECYCLE_EXIT_CODE})"]
    workers = WorkerSupervisor(load_settings(), URL, 1, command=recycled)
    running = asyncio.create_task(workers.run())
    try:
        await wait_for(lambda: caplog.text.count("exited to be recycled") >= 4, "4 recycles")
        assert not running.done()
    finally:
        workers.stop()
        await asyncio.wait_for(running, 10)
    assert "exited unexpectedly" not in caplog.text, "a recycle is no crash"
    assert "worker process 1 (pid " in caplog.text
    assert "; starting a fresh one" in caplog.text
    assert os.getpid() not in workers.pids.values()
