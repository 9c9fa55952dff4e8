"""The taskhub CLI rejects bad input with exit code 2 before any database is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend import cli
from backend.control.jobs import JobState, JobStatus
from backend.declare.apps import builtin_apps


def refuse_database(*args: Any, **kwargs: Any) -> Iterator[str]:
    raise AssertionError("the CLI touched the database for input it should have rejected")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, no DATABASE_URL, and no way to reach a database."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "database_url", refuse_database)
    monkeypatch.setattr(cli, "_serve", refuse_database)
    assert "DATABASE_URL" not in os.environ
    return tmp_path


def assert_nothing_started(workdir: Path) -> None:
    assert not (workdir / ".taskhub").exists()
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["defer", "taskhub.ping", "--args", "{bad"],
            "taskhub defer: error: argument --args: not valid JSON: ",
        ),
        (
            ["defer", "taskhub.ping", "--args", "[1]"],
            "taskhub defer: error: argument --args: must be a JSON object",
        ),
        (
            ["defer", "taskhub.ping", "--args", '"text"'],
            "taskhub defer: error: argument --args: must be a JSON object",
        ),
        (
            ["worker", "--concurrency", "0"],
            "taskhub worker: error: argument --concurrency: must be at least 1",
        ),
        (
            ["up", "--concurrency", "-3"],
            "taskhub up: error: argument --concurrency: must be at least 1",
        ),
        (
            ["worker", "--queues", ","],
            "taskhub worker: error: argument --queues: give at least one queue name",
        ),
        (["api", "--port", "http"], "taskhub api: error: argument --port: invalid int value"),
        (["api", "--queues", "a"], "taskhub: error: unrecognized arguments: --queues a"),
        (["defer"], "taskhub defer: error: the following arguments are required: task"),
        ([], "taskhub: error: the following arguments are required: COMMAND"),
        (["launch"], "taskhub: error: argument COMMAND: invalid choice: 'launch'"),
        (["jobs"], "taskhub jobs: error: the following arguments are required: ACTION"),
        (["jobs", "drop"], "taskhub jobs: error: argument ACTION: invalid choice: 'drop'"),
        (
            ["jobs", "list", "--state", "DEAD"],
            "taskhub jobs list: error: argument --state: 'DEAD' is not a state; use PENDING, "
            "STARTED, PROGRESS, RETRY, SUCCESS, FAILURE, REVOKED\n",
        ),
        (
            ["jobs", "list", "--state", "failed"],
            "argument --state: 'failed' is not a state; use PENDING, STARTED, PROGRESS, RETRY, "
            "SUCCESS, FAILURE, REVOKED (failed is a status: use --status for it)",
        ),
        (
            ["jobs", "list", "--status", "done"],
            "taskhub jobs list: error: argument --status: 'done' is not a status; use todo, doing, "
            "succeeded, failed, cancelled, aborted",
        ),
        (["jobs", "list", "--limit", "0"], "argument --limit: must be at least 1"),
        (["jobs", "list", "--limit", "501"], "argument --limit: at most 500 jobs per page"),
        (
            ["jobs", "list", "--cursor", "bm9wZQ"],
            "argument --cursor: invalid cursor: use the next_cursor of a previous page",
        ),
        (["jobs", "show"], "taskhub jobs show: error: the following arguments are required: id"),
        (["jobs", "show", "abc"], "taskhub jobs show: error: argument id: 'abc' is not a whole"),
        (["jobs", "retry", "0"], "taskhub jobs retry: error: argument id: must be at least 1"),
        (
            ["jobs", "cancel", str(2**63)],
            f"taskhub jobs cancel: error: argument id: {2**63} is too large for a job id",
        ),
        (["jobs", "cancel", "1", "--follow"], "unrecognized arguments: --follow"),
    ],
)
def test_argument_errors_exit_2(
    workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)

    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: taskhub")
    assert message in err
    assert_nothing_started(workdir)


def test_defer_of_an_unknown_task(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["defer", "nope"]) == 2

    out, err = capsys.readouterr()
    assert out == ""
    known = ", ".join(sorted(builtin_apps().tasks))
    assert err == f"taskhub: error: unknown task 'nope'; registered tasks: {known}\n"
    assert "taskhub.ping" in known
    assert_nothing_started(workdir)


def test_defer_with_invalid_task_arguments(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["defer", "taskhub.ping", "--args", '{"sleep": -1}']) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("taskhub: error: invalid job: args.sleep: ")
    assert err.count("\n") == 1
    assert_nothing_started(workdir)


def test_defer_with_an_unexpected_argument(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["defer", "taskhub.ping", "--args", '{"mesage": "typo"}']) == 2

    assert "args.mesage" in capsys.readouterr().err
    assert_nothing_started(workdir)


@pytest.mark.parametrize(
    "argv",
    [["up"], ["api"], ["worker"], ["migrate"], ["defer", "taskhub.ping"], ["jobs", "list"]],
)
def test_an_invalid_setting_fails_every_command(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    monkeypatch.setenv("TASKHUB_API_PORT", "abc")

    assert cli.main(argv) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("taskhub: error: invalid setting TASKHUB_API_PORT='abc': ")
    assert err.count("\n") == 1
    assert_nothing_started(workdir)


def test_an_invalid_port_option_names_the_setting(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["api", "--port", "70000"]) == 2

    err = capsys.readouterr().err
    assert err.startswith("taskhub: error: invalid setting TASKHUB_API_PORT=70000: ")
    assert "less than or equal to 65535" in err
    assert_nothing_started(workdir)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["worker", "--queues", "a, b,,c"], {"queues": ["a", "b", "c"], "concurrency": None}),
        (["worker", "--concurrency", "4"], {"queues": None, "concurrency": 4}),
        (["api", "--host", "0.0.0.0", "--port", "8001"], {"host": "0.0.0.0", "port": 8001}),
        (
            ["defer", "taskhub.ping", "--args", '{"message": "hi"}', "--schedule-in", "1.5"],
            {"task": "taskhub.ping", "args": {"message": "hi"}, "schedule_in": 1.5},
        ),
        (["defer", "taskhub.ping"], {"args": {}, "priority": None, "queue": None}),
        (["migrate", "--downgrade", "base"], {"downgrade": "base"}),
        (
            ["jobs", "list"],
            {"statuses": None, "states": None, "limit": 50, "cursor": None, "json": False},
        ),
        (
            ["jobs", "list", "--state", "failure", "--state", " Revoked", "--status", "FAILED"],
            {
                "action": "list",
                "states": [JobState.FAILURE, JobState.REVOKED],
                "statuses": [JobStatus.failed],
            },
        ),
        (
            ["jobs", "list", "--task", "t", "--queue", "q", "--limit", "500", "--cursor", "aWQ6Mw"],
            {"task": "t", "queue": "q", "limit": 500, "cursor": "aWQ6Mw"},
        ),
        (["jobs", "show", "7"], {"action": "show", "id": 7, "json": False, "follow": False}),
        (["jobs", "show", "7", "--follow", "--json"], {"id": 7, "json": True, "follow": True}),
        (["jobs", "retry", "8"], {"action": "retry", "id": 8}),
        (["jobs", "cancel", str(2**63 - 1)], {"action": "cancel", "id": 2**63 - 1}),
    ],
)
def test_the_parser_converts_arguments(argv: list[str], expected: dict[str, object]) -> None:
    namespace = vars(cli.build_parser().parse_args(argv))

    assert namespace["command"] == argv[0]
    assert {key: namespace[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["worker", "--concurrency", "abc"], "'abc' is not a whole number"),
        (["defer", "taskhub.ping", "--priority", str(2**40)], "priority"),
        (["defer", "taskhub.ping", "--queue", "no spaces allowed"], "queue"),
        (["defer", "taskhub.ping", "--args", '{"message": "a\\u0000b"}'], "NUL"),
    ],
)
def test_cli_validates_like_the_api(
    workdir: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = int(str(exit_.code))
    assert code == 2
    assert message in capsys.readouterr().err
    assert_nothing_started(workdir)


def run_python(script: str) -> str:
    """What ``script`` prints, run in a fresh interpreter: process-wide settings stay there."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def test_lower_cpu_priority_sets_a_floor_not_a_step() -> None:
    """A supervised worker process inherits its supervisor's niceness: it must not add more."""
    script = (
        "import os\n"
        "from backend.process.supervisor import lower_cpu_priority\n"
        "start = os.getpriority(os.PRIO_PROCESS, 0)\n"
        "lower_cpu_priority(0)\n"
        "unchanged = os.getpriority(os.PRIO_PROCESS, 0)\n"
        "lower_cpu_priority(5)\n"
        "lower_cpu_priority(5)\n"
        "print(start, unchanged, os.getpriority(os.PRIO_PROCESS, 0))\n"
    )
    start, unchanged, after = (int(value) for value in run_python(script).split())
    assert unchanged == start
    assert after == max(start, 5)


def test_serving_processes_set_their_import_time_objects_aside_from_the_collector() -> None:
    """``run_services`` starts with it: a worker's full collections no longer walk every
    module's objects, and the young generation is collected in larger passes."""
    script = (
        "import gc\n"
        "from backend.process.runner import GC_YOUNG_THRESHOLD, tune_garbage_collector\n"
        "before = gc.get_freeze_count()\n"
        "tune_garbage_collector()\n"
        "print(before, gc.get_freeze_count(), gc.get_threshold()[0] == GC_YOUNG_THRESHOLD)\n"
    )
    before, frozen, threshold_set = run_python(script).split()
    assert int(before) == 0
    assert int(frozen) > 10_000, "the imported modules' objects are frozen"
    assert threshold_set == "True"
