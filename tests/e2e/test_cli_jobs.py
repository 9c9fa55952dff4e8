"""`taskhub jobs list|show|retry|cancel` against a real database and a real worker."""

from __future__ import annotations

import getpass
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from backend import defer as deferring
from backend.tasks.builtin import ping
from tests.e2e.conftest import TASKHUB, TaskhubProcess, clean_env

pytestmark = pytest.mark.e2e

ACTOR = f"cli:{getpass.getuser()}"


def taskhub(db_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TASKHUB, *args],
        cwd=cwd,
        env=clean_env(DATABASE_URL=db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(db_url: str, cwd: Path, *args: str) -> str:
    result = taskhub(db_url, cwd, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def as_json(db_url: str, cwd: Path, *args: str) -> Any:
    return json.loads(ok(db_url, cwd, *args, "--json"))


def defer(db_url: str, args: dict[str, Any] | None = None, **options: Any) -> int:
    """Enqueue a taskhub.ping job the way application code does."""
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return deferring.defer_sync(conn, ping, args or {}, **options)


def defer_broken(db_url: str) -> int:
    """A job whose stored arguments no longer validate: the worker fails it (a dead letter)."""
    job_id = defer(db_url)
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE procrastinate_jobs SET args = '{\"sleep\": -1}' WHERE id = %s", [job_id]
        )
    return job_id


def audit(db_url: str, job_id: int) -> list[tuple[str, str]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT actor, action FROM taskhub.audit_log WHERE job_id = %s ORDER BY id", [job_id]
        ).fetchall()
    return [(actor, action) for actor, action in rows]


def table_ids(output: str) -> list[int]:
    """The job ids of a `jobs list` table, top to bottom."""
    lines = output.splitlines()
    header = "ID TASK QUEUE STATE ATTEMPTS CREATED FINISHED LAST ERROR"
    assert lines[0].split() == header.split()
    return [int(line.split()[0]) for line in lines[1:] if re.match(r"^\s*\d+\s", line)]


def start_worker(spawn: type[TaskhubProcess], cwd: Path, db_url: str) -> TaskhubProcess:
    worker = spawn(["worker", "--concurrency", "4"], cwd, clean_env(DATABASE_URL=db_url))
    worker.wait_for_line("Stop with Ctrl-C.")
    return worker


def follow(spawn: type[TaskhubProcess], cwd: Path, db_url: str, job_id: int) -> TaskhubProcess:
    return spawn(["jobs", "show", str(job_id), "--follow"], cwd, clean_env(DATABASE_URL=db_url))


def test_list_newest_first_with_filters_and_pages(tmp_path: Path, db_url: str) -> None:
    ids = [defer(db_url, {"message": n}) for n in range(3)]
    email = defer(db_url, {"message": "mail"}, queue="emails")
    newest_first = [email, *reversed(ids)]

    table = ok(db_url, tmp_path, "jobs", "list")
    assert table_ids(table) == newest_first
    assert "taskhub.ping  emails   PENDING" in table
    assert "next cursor" not in table

    first = as_json(db_url, tmp_path, "jobs", "list", "--limit", "3")
    assert [job["id"] for job in first["items"]] == newest_first[:3]
    assert first["next_cursor"]
    rest = as_json(
        db_url, tmp_path, "jobs", "list", "--limit", "3", "--cursor", first["next_cursor"]
    )
    assert ([job["id"] for job in rest["items"]], rest["next_cursor"]) == ([ids[0]], None)
    paged = ok(db_url, tmp_path, "jobs", "list", "--limit", "3")
    assert table_ids(paged) == newest_first[:3]
    assert paged.splitlines()[-1].startswith(f"next cursor: {first['next_cursor']}")

    assert table_ids(ok(db_url, tmp_path, "jobs", "list", "--queue", "emails")) == [email]
    both = as_json(db_url, tmp_path, "jobs", "list", "--status", "todo", "--state", "pending")
    assert [job["id"] for job in both["items"]] == newest_first
    assert ok(db_url, tmp_path, "jobs", "list", "--task", "crm.sync").strip() == "no jobs"
    assert ok(db_url, tmp_path, "jobs", "list", "--state", "FAILURE").strip() == "no jobs"

    job = as_json(db_url, tmp_path, "jobs", "show", str(email))
    expected = {"id": email, "task": "taskhub.ping", "queue": "emails", "state": "PENDING"}
    assert {key: job[key] for key in expected} == expected
    assert job["args"] == {"message": "mail", "sleep": 0.0}
    assert [event["type"] for event in job["events"]] == ["deferred"]
    shown = ok(db_url, tmp_path, "jobs", "show", str(email))
    assert shown.startswith(f"job {email}: taskhub.ping on queue emails (priority 0)\n")
    assert "  status:        todo (PENDING)\n" in shown


def test_cancel_and_retry_are_audited_and_checked(tmp_path: Path, db_url: str) -> None:
    # Scheduled an hour ahead: it waits, so it can be cancelled.
    deferred = ok(db_url, tmp_path, "defer", "taskhub.ping", "--schedule-in", "3600")
    job_id = json.loads(deferred)["id"]

    cancelled = ok(db_url, tmp_path, "jobs", "cancel", str(job_id))
    assert cancelled.startswith(f"job {job_id} cancelled\n")
    assert "  status:        cancelled (REVOKED)\n" in cancelled
    assert audit(db_url, job_id) == [(ACTOR, "cancel")]

    again = taskhub(db_url, tmp_path, "jobs", "cancel", str(job_id))
    assert (again.returncode, again.stdout) == (2, "")
    assert again.stderr == (
        f"taskhub: error: job {job_id} is cancelled: "
        "only waiting or running jobs can be cancelled\n"
    )

    retried = as_json(db_url, tmp_path, "jobs", "retry", str(job_id))
    assert [retried[key] for key in ("status", "state", "scheduled_at")] == [
        "todo",
        "PENDING",
        None,
    ]
    assert audit(db_url, job_id) == [(ACTOR, "cancel"), (ACTOR, "retry")]

    waiting = taskhub(db_url, tmp_path, "jobs", "retry", str(job_id))
    assert waiting.returncode == 2
    assert f"job {job_id} is todo: only failed, cancelled or aborted jobs can be retried" in (
        waiting.stderr
    )
    assert audit(db_url, job_id) == [(ACTOR, "cancel"), (ACTOR, "retry")], "refusals leave none"

    for action in ("show", "cancel", "retry"):
        missing = taskhub(db_url, tmp_path, "jobs", action, "999999")
        assert (missing.returncode, missing.stdout) == (2, "")
        assert missing.stderr == "taskhub: error: job 999999 not found\n"

    bad_state = taskhub(db_url, tmp_path, "jobs", "list", "--state", "failed")
    assert bad_state.returncode == 2
    assert "argument --state: 'failed' is not a state; use PENDING, STARTED" in bad_state.stderr
    assert "use --status for it" in bad_state.stderr


def test_follow_progress_then_cancel_exits_1(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    job_id = defer(db_url, schedule_in=3600)
    follower = follow(spawn, tmp_path, db_url, job_id)
    follower.wait_for_line("PENDING: waiting for a worker (scheduled for ")

    def report(done: int) -> None:
        with psycopg.connect(db_url) as conn:
            conn.execute(
                "INSERT INTO taskhub.job_progress (job_id, done, total, message) "
                "VALUES (%s, %s, 3000, 'Processing...') ON CONFLICT (job_id) DO UPDATE "
                "SET done = EXCLUDED.done, updated_at = now()",
                [job_id, done],
            )

    report(1500)
    follower.wait_for_line("[#####.....] 1500/3000 50% Processing...")
    report(3000)
    follower.wait_for_line("[##########] 3000/3000 100% Processing...")

    ok(db_url, tmp_path, "jobs", "cancel", str(job_id))
    assert follower.process.wait(timeout=10) == 1, follower.output
    follower.stop()
    # Not a terminal: one line per change, then the final state.
    assert follower.lines[1:] == [
        "[#####.....] 1500/3000 50% Processing...",
        "[##########] 3000/3000 100% Processing...",
        f"job {job_id} cancelled (REVOKED)",
    ], follower.output


def test_follow_a_worker_run_dead_letters_and_abort(
    spawn: type[TaskhubProcess], tmp_path: Path, db_url: str
) -> None:
    quick = defer(db_url, {"sleep": 1})
    broken = defer_broken(db_url)
    follower = follow(spawn, tmp_path, db_url, quick)
    follower.wait_for_line("PENDING: waiting for a worker")
    start_worker(spawn, tmp_path, db_url)

    assert follower.process.wait(timeout=20) == 0, follower.output
    follower.stop()
    assert follower.lines[-1] == f'job {quick} succeeded (SUCCESS) after 1 attempt; result: "pong"'

    failed = taskhub(db_url, tmp_path, "jobs", "show", str(broken), "--follow")
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout.splitlines()[-1].startswith(
        f"job {broken} failed (FAILURE) after 1 attempt: InvalidJobArguments: invalid job: "
    )

    # The dead letters: jobs that failed their last attempt.
    dead = ok(db_url, tmp_path, "jobs", "list", "--state", "FAILURE")
    assert table_ids(dead) == [broken]
    assert "FAILURE         1" in dead
    assert "InvalidJobArguments: invalid job: args.sleep: Input shoul..." in dead
    assert all(len(line) < 200 for line in dead.splitlines()), "the error is truncated"
    [letter] = as_json(db_url, tmp_path, "jobs", "list", "--state", "FAILURE")["items"]
    assert (letter["id"], letter["last_error"]["type"]) == (broken, "InvalidJobArguments")

    shown = ok(db_url, tmp_path, "jobs", "show", str(broken))
    assert "  status:        failed (FAILURE)\n" in shown
    assert "  errors:        1\n" in shown
    assert "  last traceback:\n    Traceback (most recent call last):\n" in shown
    assert "backend.errors.InvalidJobArguments: invalid job: args.sleep" in shown
    assert "-1" not in shown.split("last traceback:")[1], "the stored input is not quoted"

    retried = ok(db_url, tmp_path, "jobs", "retry", str(broken))
    assert retried.startswith(f"job {broken} will run again\n")
    assert "  status:        todo (RETRY)\n" in retried
    assert audit(db_url, broken) == [(ACTOR, "retry")]
    followed = taskhub(db_url, tmp_path, "jobs", "show", str(broken), "--follow", "--json")
    assert followed.returncode == 1, followed.stderr
    second = json.loads(followed.stdout)
    assert (second["status"], second["attempts"], len(second["errors"])) == ("failed", 2, 2)

    # A running job asked to abort: the follower ends with exit 1 once the worker stops it.
    slow = defer(db_url, {"sleep": 60})
    follower = follow(spawn, tmp_path, db_url, slow)
    follower.wait_for_line("STARTED: running, no progress reported")
    aborting = ok(db_url, tmp_path, "jobs", "cancel", str(slow))
    assert aborting.startswith(f"job {slow} asked to abort")
    assert follower.process.wait(timeout=20) == 1, follower.output
    follower.stop()
    assert follower.lines[-1] == f"job {slow} aborted (REVOKED) after 1 attempt"
    assert audit(db_url, slow) == [(ACTOR, "abort")]


def test_jobs_on_a_database_not_migrated_says_what_to_do(tmp_path: Path, empty_db_url: str) -> None:
    result = taskhub(empty_db_url, tmp_path, "jobs", "list")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "taskhub: error: the database has no taskhub schema yet: run `taskhub migrate`\n"
    )
