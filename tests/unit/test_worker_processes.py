"""--processes and TASKHUB_WORKER_PROCESSES, and the supervisor with stand-in children."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from backend import cli
from backend.errors import SettingsError
from backend.process import supervisor
from backend.process.supervisor import WorkerProcessesFailing, WorkerSupervisor
from backend.settings import load_settings

URL = "postgresql://app@db.example:5432/shop"
# A stand-in worker process: stops on SIGTERM/SIGINT like a worker, without a database.
SLEEPER = [
    sys.executable,
    "-c",
    "import signal, sys, time\n"
    "for sig in (signal.SIGTERM, signal.SIGINT):\n"
    "    signal.signal(sig, lambda *_: sys.exit(0))\n"
    "time.sleep(60)\n",
]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["worker", "--processes", "0"], "taskhub worker: error: argument --processes: must be"),
        (["up", "--processes", "-2"], "taskhub up: error: argument --processes: must be at least"),
        (["worker", "--processes", "two"], "argument --processes: 'two' is not a whole number"),
        (["api", "--processes", "2"], "taskhub: error: unrecognized arguments: --processes 2"),
        (["worker", "--max-jobs", "0"], "taskhub worker: error: argument --max-jobs: must be"),
        (["up", "--max-memory-mb", "-1"], "taskhub up: error: argument --max-memory-mb: must be"),
        (["worker", "--max-memory-mb", "1G"], "argument --max-memory-mb: '1G' is not a whole"),
        (["api", "--max-jobs", "5"], "taskhub: error: unrecognized arguments: --max-jobs 5"),
    ],
)
def test_bad_worker_options_exit_2_before_anything_starts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)

    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert message in err
    assert list(tmp_path.iterdir()) == [], "nothing started"


@pytest.mark.parametrize(
    ("argv", "processes"),
    [(["worker"], None), (["worker", "--processes", "3"], 3), (["up", "--processes", "1"], 1)],
)
def test_processes_option_becomes_the_setting(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], processes: int | None
) -> None:
    monkeypatch.setenv("TASKHUB_WORKER_PROCESSES", "5")
    args = cli.build_parser().parse_args(argv)

    assert args.processes == processes
    assert cli._settings_for(args).worker_processes == (processes or 5), "the option wins"


def test_the_worker_process_options_are_hidden(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["worker", "--help"])

    help_text = capsys.readouterr().out
    assert "--processes" in help_text
    assert "--worker-index" not in help_text
    assert "--supervisor-pid" not in help_text


def test_one_worker_process_per_core_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.worker_processes is None
    assert settings.worker_process_count == (os.cpu_count() or 1)

    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert load_settings().worker_process_count == 1, "unknown core count: one process"


@pytest.mark.parametrize(("raw", "expected"), [("4", 4), ("1", 1), ("", None), (" ", None)])
def test_worker_processes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: int | None
) -> None:
    monkeypatch.setenv("TASKHUB_WORKER_PROCESSES", raw)

    settings = load_settings()
    assert settings.worker_processes == expected
    assert settings.worker_process_count == (expected or os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [("0", "greater than or equal to 1"), ("-1", "greater than or equal to 1"), ("many", "int")],
)
def test_invalid_worker_processes_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str, problem: str
) -> None:
    monkeypatch.setenv("TASKHUB_WORKER_PROCESSES", raw)

    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.message.startswith(f"invalid setting TASKHUB_WORKER_PROCESSES={raw!r}: ")
    assert problem in caught.value.message


def test_children_get_the_parents_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Options, the apps and the tokens reach the children; the URL comes resolved."""
    monkeypatch.setenv("TASKHUB_HEARTBEAT_INTERVAL", "0.5")
    monkeypatch.setenv("taskhub_rescue_after", "2")  # read in any case, so dropped in any case
    parent = load_settings(
        worker_queues=["default", "emails"],
        worker_concurrency=3,
        worker_processes=4,
        data_dir=Path("/srv/taskhub"),
        shutdown_grace_period=2.5,
        tokens="ops=operate:s3-0123456789abcdef",
    ).model_copy(update={"apps": ["acme.jobs", "other.jobs:app"]})
    env = supervisor.child_environment(parent, URL, base={**os.environ, "PYTHONPATH": "/x"})

    assert "taskhub_rescue_after" not in env
    assert env["TASKHUB_RESCUE_AFTER"] == "2.0"
    assert env["DATABASE_URL"] == URL
    assert env["PYTHONPATH"].split(os.pathsep) == [str(Path(cli.__file__).parents[1]), "/x"]
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child = load_settings()
    assert child == parent.model_copy(update={"database_url": URL, "worker_processes": 1})
    assert child.apps == ["acme.jobs", "other.jobs:app"]
    assert child.tokens == "ops=operate:s3-0123456789abcdef"


def test_the_child_command_is_one_supervised_worker() -> None:
    command = supervisor.child_command(2, 4321)

    assert command[:4] == [sys.executable, "-P", "-m", "backend"]
    args = cli.build_parser().parse_args(command[4:])
    assert (args.command, args.processes) == ("worker", 1)
    assert (args.worker_index, args.supervisor_pid) == (2, 4321)


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        await asyncio.sleep(0.05)


async def test_stop_forwards_the_signal_and_waits_for_every_child() -> None:
    workers = WorkerSupervisor(load_settings(), URL, 2, command=SLEEPER)
    running = asyncio.create_task(workers.run())
    await wait_for(lambda: len(workers.pids) == 2, "two children")
    pids = list(workers.pids.values())
    await asyncio.sleep(0.3)  # let them install their handlers

    workers.stop(signal.SIGINT)
    await asyncio.wait_for(running, 10)
    assert all(gone(pid) for pid in pids)
    assert workers.pids == {}


async def test_a_second_stop_kills_the_children(caplog: pytest.LogCaptureFixture) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"  # as a worker busy stopping
        "time.sleep(60)\n",
    ]
    workers = WorkerSupervisor(load_settings(), URL, 2, command=stubborn)
    running = asyncio.create_task(workers.run())
    await wait_for(lambda: len(workers.pids) == 2, "two children")
    await asyncio.sleep(0.3)

    workers.stop(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert not running.done(), "the first stop waits for a graceful exit"
    workers.stop(signal.SIGTERM)
    await asyncio.wait_for(running, 10)
    assert caplog.text.count("stopped with signal SIGKILL") == 2


async def test_a_killed_child_is_restarted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="backend.process.supervisor")
    workers = WorkerSupervisor(load_settings(), URL, 2, command=SLEEPER)
    running = asyncio.create_task(workers.run())
    try:
        await wait_for(lambda: len(workers.pids) == 2, "two children")
        first = workers.pids[1]
        os.kill(first, signal.SIGKILL)
        await wait_for(lambda: workers.pids.get(1, first) != first, "restart")
        assert not running.done()
        assert workers.pids[2] not in (first, workers.pids[1])
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "worker process 1 (pid" in warnings[0]
        assert "exited unexpectedly with signal SIGKILL" in warnings[0]
    finally:
        workers.stop()
        await asyncio.wait_for(running, 10)


async def test_children_dying_at_start_make_it_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "RESTART_DELAY", 0.01)
    crashing = [sys.executable, "-c", "raise SystemExit(3)"]
    workers = WorkerSupervisor(load_settings(), URL, 2, command=crashing)

    began = time.monotonic()
    with pytest.raises(WorkerProcessesFailing) as caught:
        await asyncio.wait_for(workers.run(), 30)

    assert time.monotonic() - began < 20
    message = caught.value.message
    assert "\n" not in message
    assert "exited right after its start 3 times in a row" in message
    assert "last with exit code 3" in message
    assert workers.pids == {}


async def test_children_killed_at_start_are_restarted_without_giving_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGKILL is the OOM killer's (a poison job's memory), not a bad start: no give-up."""
    monkeypatch.setattr(supervisor, "RESTART_DELAY", 0.01)
    killed = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    workers = WorkerSupervisor(load_settings(), URL, 1, command=killed)
    started: set[int] = set()

    def six_starts() -> bool:
        started.update(workers.pids.values())
        return len(started) >= 6

    running = asyncio.create_task(workers.run())
    try:
        await wait_for(six_starts, "six starts")
        assert not running.done(), "it did not give up"
    finally:
        workers.stop()
        await asyncio.wait_for(running, 10)


async def test_a_stop_during_the_backoff_restarts_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervisor, "RESTART_DELAY", 30.0)
    caplog.set_level(logging.INFO, logger="backend.process.supervisor")
    workers = WorkerSupervisor(load_settings(), URL, 1, command=[sys.executable, "-c", ""])
    running = asyncio.create_task(workers.run())
    await wait_for(lambda: "restarting it in 10.0 s" in caplog.text, "an exit")

    workers.stop()
    await asyncio.wait_for(running, 5)
    assert workers.pids == {}
    assert caplog.text.count("worker process 1 started") == 1, "no restart after the stop"


def test_describe_exit() -> None:
    assert supervisor.describe_exit(1) == "exit code 1"
    assert supervisor.describe_exit(-9) == "signal SIGKILL"
    assert supervisor.describe_exit(-200) == "signal 200"
