"""How `taskhub jobs` renders jobs, and the token the start banner prints (no database)."""

from __future__ import annotations

import contextlib
import datetime
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import backend.process.migrate
import backend.process.runner
from backend import cli
from backend.control.jobs import JobPage, JobSummary, JobView
from backend.declare.apps import builtin_apps
from backend.runtime.progress import Progress
from backend.settings import load_settings

AT = datetime.datetime(2025, 3, 1, 12, 0, tzinfo=datetime.UTC)


def job(**overrides: Any) -> JobView:
    fields: dict[str, Any] = {
        "id": 7,
        "task": "taskhub.ping",
        "queue": "default",
        "priority": 0,
        "args": {"message": "hi"},
        "lock": None,
        "queueing_lock": None,
        "status": "todo",
        "state": "PENDING",
        "attempts": 0,
        "scheduled_at": None,
        "created_at": AT,
        "started_at": None,
        "finished_at": None,
        "abort_requested": False,
        "worker_id": None,
        "progress": None,
        "result": None,
        "last_error": None,
        "events": [{"type": "deferred", "at": AT}],
        "errors": [],
    }
    return JobView.model_validate({**fields, **overrides})


FAILED = {
    "status": "failed",
    "state": "FAILURE",
    "attempts": 2,
    "last_error": {"attempt": 2, "type": "ConnectionError", "message": "ERP " * 40, "at": AT},
    "errors": [
        {"attempt": 1, "type": "ConnectionError", "message": "first", "traceback": None, "at": AT},
        {
            "attempt": 2,
            "type": "ConnectionError",
            "message": "ERP " * 40,
            "traceback": "Traceback (most recent call last):\n  File x\nConnectionError: ERP\n",
            "at": AT,
        },
    ],
}


@pytest.mark.parametrize(
    ("progress", "line"),
    [
        (
            Progress(done=1500, total=3000, message="Processing..."),
            "[#####.....] 1500/3000 50% Processing...",
        ),
        (Progress(done=0, total=3), "[..........] 0/3 0%"),
        (Progress(done=2999, total=3000), "[#########.] 2999/3000 99%"),
        (Progress(done=5000, total=3000), "[##########] 5000/3000 100%"),
        (Progress(done=12, message="rows"), "12 rows"),
        (Progress(done=0, total=0), "0/0"),
        (Progress(message="warming up", counters={"created": 2}), "warming up (created=2)"),
        (Progress(), "progress reported"),
    ],
)
def test_progress_line(progress: Progress, line: str) -> None:
    assert cli.progress_line(progress) == line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_line_redraws_one_line_on_a_terminal() -> None:
    stream = Terminal()
    live = cli.LiveLine(stream)
    live.show("PENDING: waiting for a worker")
    live.show("PENDING: waiting for a worker")  # unchanged: not redrawn
    live.show("[#####.....] 1/2 50%")
    live.close()

    assert stream.getvalue() == (
        "\rPENDING: waiting for a worker"
        "\r[#####.....] 1/2 50%" + " " * 9 + "\n"  # blanks over the longer line before
    )


def test_live_line_prints_one_line_per_change_elsewhere() -> None:
    stream = io.StringIO()
    live = cli.LiveLine(stream)
    for text in ("a", "a", "b", "a"):
        live.show(text)
    live.close()

    assert stream.getvalue() == "a\nb\na\n"


def test_live_line_and_final_line_say_where_a_job_is() -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    assert cli.live_line(job()) == "PENDING: waiting for a worker"
    assert cli.live_line(job(scheduled_at=later)).startswith(
        "PENDING: waiting for a worker (scheduled for "
    )
    running = job(status="doing", state="STARTED", abort_requested=True)
    assert cli.live_line(running) == "STARTED: running, no progress reported (abort requested)"
    progressing = job(status="doing", state="PROGRESS", progress={"done": 1, "total": 4})
    assert cli.live_line(progressing) == "[##........] 1/4 25%"

    done = job(status="succeeded", state="SUCCESS", attempts=1, result={"n": 1})
    assert cli.final_line(done) == 'job 7 succeeded (SUCCESS) after 1 attempt; result: {"n": 1}'
    failed = cli.final_line(job(**FAILED))
    assert failed.startswith("job 7 failed (FAILURE) after 2 attempts: ConnectionError: ERP ERP")
    # taskhub.job_overview reports abort_requested only for running jobs (see
    # test_cancel_a_waiting_job): a cancelled one says nothing about an abort.
    cancelled = job(status="cancelled", state="REVOKED", abort_requested=False)
    assert cli.final_line(cancelled) == "job 7 cancelled (REVOKED)"
    assert "abort" not in cli.describe_job(cancelled)


def test_jobs_table() -> None:
    page = JobPage(
        items=[
            JobSummary.model_validate(job(id=12, **FAILED).model_dump()),
            JobSummary.model_validate(job(id=9, queue="emails").model_dump()),
        ],
        next_cursor="aWQ6OQ",
    )
    lines = cli.jobs_table(page).splitlines()

    header = "ID|TASK|QUEUE|STATE|ATTEMPTS|CREATED|FINISHED|LAST ERROR"
    assert re.split(r"\s{2,}", lines[0]) == header.split("|")
    created = AT.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    error = "ConnectionError:" + " ERP" * 10 + "..."
    row = f"12|taskhub.ping|default|FAILURE|2|{created}|-|{error}"
    assert re.split(r"\s{2,}", lines[1].strip()) == row.split("|")
    assert len(error) <= cli.ERROR_WIDTH
    assert lines[2].startswith(" 9  taskhub.ping  emails ")
    assert lines[3] == "next cursor: aWQ6OQ  (add --cursor aWQ6OQ)"
    assert cli.jobs_table(JobPage(items=[], next_cursor=None)) == "no jobs"


def test_describe_job_full_and_compact() -> None:
    failed = job(**FAILED, progress={"done": 3, "total": 4, "message": "syncing"})

    full = cli.describe_job(failed)
    assert full.splitlines()[:4] == [
        "job 7: taskhub.ping on queue default (priority 0)",
        "  status:        failed (FAILURE)",
        "  attempts:      2",
        '  args:          {"message": "hi"}',
    ]
    assert "  progress:      [#######...] 3/4 75% syncing" in full
    assert "  errors:        2\n    attempt 1 at " in full
    assert full.endswith(
        "  last traceback:\n"
        "    Traceback (most recent call last):\n"
        "      File x\n"
        "    ConnectionError: ERP"
    )

    compact = cli.describe_job(failed, full=False)
    assert "traceback" not in compact
    assert compact.splitlines()[-1].startswith("  last error:    ConnectionError: ERP ERP")


@pytest.fixture
def fake_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_serve` with the API, worker and database replaced: only the banner is real."""

    @contextlib.contextmanager
    def fake_database_url(settings: Any) -> Iterator[str]:
        yield "postgresql://taskhub@db.example/taskhub"

    async def fake_run_services(*args: Any, on_ready: Any, **kwargs: Any) -> None:
        on_ready()

    monkeypatch.setattr(cli, "database_url", fake_database_url)
    monkeypatch.setattr(backend.process.runner, "bind_api_socket", lambda host, port: None)
    monkeypatch.setattr(backend.process.runner, "run_services", fake_run_services)
    monkeypatch.setattr(backend.process.migrate, "upgrade", lambda url, apps=(): None)


@pytest.mark.usefixtures("fake_services")
def test_banner_prints_the_generated_admin_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(database_url="postgresql://taskhub@db.example/taskhub")

    cli._serve(settings, builtin_apps(), api=True, worker=False, migrate_first=False)

    token = (tmp_path / ".taskhub" / "admin-token").read_text().strip()
    assert token == settings.api_tokens()[0].secret
    lines = capsys.readouterr().out.splitlines()
    assert f"  token:    {token} (admin; kept in .taskhub/admin-token)" in lines
    curls = [line for line in lines if line.startswith("  curl ")]
    assert len(curls) == 2
    assert all(f"-H 'Authorization: Bearer {token}'" in line for line in curls)


@pytest.mark.usefixtures("fake_services")
def test_banner_with_configured_tokens_prints_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "operate-token-0123456789"
    settings = load_settings(
        database_url="postgresql://taskhub@db.example/taskhub",
        data_dir=tmp_path / ".taskhub",
        tokens=f"ops=operate:{secret}",
    )

    cli._serve(settings, builtin_apps(), api=True, worker=False, migrate_first=False)

    output = capsys.readouterr().out
    assert "  tokens:   from TASKHUB_TOKENS\n" in output
    assert secret not in output
    assert output.count('-H "Authorization: Bearer $TASKHUB_TOKEN"') == 2
    assert not (tmp_path / ".taskhub").exists()


@pytest.mark.usefixtures("fake_services")
def test_up_without_api_generates_no_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(
        database_url="postgresql://taskhub@db.example/taskhub", data_dir=tmp_path / ".taskhub"
    )
    cli._serve(settings, builtin_apps(), api=False, worker=True, migrate_first=True)

    output = capsys.readouterr().out
    assert "taskhub is up" in output
    assert "token" not in output
    assert not (tmp_path / ".taskhub").exists()
