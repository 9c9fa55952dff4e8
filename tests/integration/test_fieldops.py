"""Field operations (the Flask app) against a real database, a real worker and a local S3
(moto's server): the request's session commits a row and its job together or neither; each
task's behaviour; the PDF read back with pypdf; the crons in Asia/Riyadh.

The database and the jobs come from taskhub's pytest plugin (``taskhub_database_url``,
``taskhub_run_jobs``), as a user's project would use them; some tasks run in-process with
``run_task``.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from flask.testing import FlaskClient
from moto.server import ThreadedMotoServer
from psycopg.rows import dict_row
from pypdf import PdfReader

from backend.declare.apps import LoadedApps, load_app_settings, load_apps
from backend.declare.registry import PeriodicArgs
from backend.declare.schedules import next_tick
from backend.defer import defer_sync
from backend.errors import SettingsError
from backend.examples.fieldops import app as fieldops_app
from backend.examples.fieldops import tasks
from backend.examples.fieldops.blueprint import QUEUES
from backend.examples.fieldops.settings import FieldopsSettings
from backend.examples.fieldops.web import create_app
from backend.settings import Settings
from backend.testing import run_task
from backend.testing.jobs import JobRunner

pytestmark = pytest.mark.taskhub_apps("backend.examples.fieldops")

RIYADH = zoneinfo.ZoneInfo("Asia/Riyadh")
BUCKET = "k9-offsite"


@pytest.fixture
def fieldops_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The app's settings for the workers (read from the environment, as in production)."""
    reports = tmp_path / "reports"
    monkeypatch.setenv("TASKHUB_FIELDOPS_REPORTS_DIR", str(reports))
    monkeypatch.setenv("TASKHUB_TIMEZONE", "Asia/Riyadh")
    return reports


@pytest.fixture
def taskhub_loaded_apps(taskhub_settings: Settings, fieldops_env: Path) -> LoadedApps:
    """As the plugin loads them, after this module's environment is set."""
    return load_apps(taskhub_settings)


@pytest.fixture
def web(taskhub_database_url: str, fieldops_env: Path) -> Iterator[FlaskClient]:
    app = create_app(load_app_settings(FieldopsSettings), database_url=taskhub_database_url)
    app.testing = True
    yield app.test_client()
    app.extensions["fieldops"].engine.dispose()


@pytest.fixture
def s3() -> Iterator[str]:
    """A local S3 (moto's server) with one bucket; its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    ).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


def s3_env(monkeypatch: pytest.MonkeyPatch, url: str, target: str) -> None:
    monkeypatch.setenv("TASKHUB_FIELDOPS_OFFSITE_TARGET", target)
    monkeypatch.setenv("TASKHUB_FIELDOPS_S3_ENDPOINT_URL", url)
    monkeypatch.setenv("TASKHUB_FIELDOPS_S3_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("TASKHUB_FIELDOPS_S3_SECRET_ACCESS_KEY", "s")


def rows(url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def jobs(url: str) -> list[dict[str, Any]]:
    return rows(url, "SELECT id, task_name, queue_name, args FROM procrastinate_jobs ORDER BY id")


# -- the request's transaction ------------------------------------------------------------


def test_a_schedule_and_its_job_commit_together(
    web: FlaskClient, taskhub_database_url: str, taskhub_run_jobs: JobRunner
) -> None:
    response = web.post(
        "/schedules", json={"title": "Gate patrol", "day": "2030-01-07", "assignee": "salem"}
    )
    assert response.status_code == 201, response.text
    body = response.get_json()
    schedule = body["schedule"]["id"]
    assert jobs(taskhub_database_url) == [
        {
            "id": body["job_id"],
            "task_name": "fieldops.notify_assignee",
            "queue_name": "k9_tasks",
            "args": {"schedule_id": schedule},
        }
    ]
    [outcome] = taskhub_run_jobs()
    assert outcome.status == "succeeded", outcome.error
    [note] = rows(taskhub_database_url, "SELECT recipient, message FROM fieldops.notifications")
    assert note == {"recipient": "salem", "message": "You are on duty: Gate patrol on 2030-01-07"}
    audit = web.get(f"/schedules/{schedule}/audit").get_json()["audit"]
    assert [entry["action"] for entry in audit] == ["schedule_created"]


def test_a_failed_request_leaves_no_row_and_no_job(
    web: FlaskClient, taskhub_database_url: str
) -> None:
    day = {"day": "2030-01-07", "assignee": "salem"}
    batch = [{"title": "Gate", **day}, {"title": "Kennels", **day}, {"title": "Gate", **day}]
    response = web.post("/schedules/bulk", json={"schedules": batch})
    # Two schedules and two jobs were written before the duplicate was refused: all rolled back.
    assert response.status_code == 409, response.text
    assert "already exists" in response.get_json()["error"]
    assert rows(taskhub_database_url, "SELECT id FROM fieldops.schedules") == []
    assert jobs(taskhub_database_url) == []
    response = web.post("/schedules/bulk", json={"schedules": batch[:2]})
    assert response.status_code == 201
    assert len(jobs(taskhub_database_url)) == 2


def test_invalid_requests_are_refused_with_what_to_fix(
    web: FlaskClient, taskhub_database_url: str
) -> None:
    response = web.post("/schedules", json={"title": "Gate", "day": "someday", "assignee": "x"})
    assert response.status_code == 422
    assert response.get_json()["details"][0]["loc"] == ["day"]
    response = web.post("/reports", json={"day_from": "2030-01-08", "day_to": "2030-01-07"})
    assert response.status_code == 422
    assert "day_from must not be after day_to" in response.get_json()["details"][0]["msg"]
    assert web.patch("/schedules/999", json={"title": "x"}).status_code == 404
    assert jobs(taskhub_database_url) == []


def test_the_app_needs_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("TASKHUB_FIELDOPS_DATABASE_URL", raising=False)
    with pytest.raises(RuntimeError, match="TASKHUB_FIELDOPS_DATABASE_URL or DATABASE_URL"):
        create_app(FieldopsSettings())


# -- queues, limits, schedules ---------------------------------------------------------------


def test_every_task_runs_on_its_queue_under_the_seed_limits(
    taskhub_loaded_apps: LoadedApps,
) -> None:
    fieldops = {
        name: task
        for name, task in taskhub_loaded_apps.tasks.items()
        if name.startswith("fieldops.")
    }
    assert {name: task.queue for name, task in fieldops.items()} == {
        "fieldops.notify_assignee": "k9_tasks",
        "fieldops.run_automated_backup": "backups",
        "fieldops.cleanup_old_notifications": "notifications",
        "fieldops.auto_lock_yesterday_schedules": "schedules",
        "fieldops.generate_pdf_report": "reports",
    }
    assert set(QUEUES) == {task.queue for task in fieldops.values()}
    assert {(task.soft_time_limit, task.time_limit) for task in fieldops.values()} == {(1500, 1800)}
    assert fieldops_app.defaults.queue == "k9_tasks"


def test_the_crons_tick_in_riyadh() -> None:
    # Sunday 2030-01-06 12:00 UTC: the next cleanup is Monday 02:00 in Riyadh (Sunday 23:00 UTC).
    at = datetime.datetime(2030, 1, 6, 12, tzinfo=datetime.UTC).timestamp()
    cleanup = next_tick(tasks.cleanup_old_notifications.cron or "", RIYADH, at)
    assert datetime.datetime.fromtimestamp(cleanup, RIYADH) == datetime.datetime(
        2030, 1, 7, 2, tzinfo=RIYADH
    )
    assert tasks.auto_lock_yesterday_schedules.cron == "0 1 * * *"  # the default hour
    lock = next_tick(tasks.auto_lock_yesterday_schedules.cron or "", RIYADH, at)
    assert datetime.datetime.fromtimestamp(lock, datetime.UTC) == datetime.datetime(
        2030, 1, 6, 22, tzinfo=datetime.UTC
    )


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("TASKHUB_FIELDOPS_AUTO_LOCK_HOUR", "24", "AUTO_LOCK_HOUR='24'"),
        ("TASKHUB_FIELDOPS_OFFSITE_TARGET", "ftp://backups", "s3://bucket/prefix"),
        ("TASKHUB_FIELDOPS_OFFSITE_TARGET", "s3:///nightly", "needs a bucket name"),
        ("TASKHUB_FIELDOPS_NOTIFICATION_RETENTION_DAYS", "0", "RETENTION_DAYS='0'"),
    ],
)
def test_invalid_settings_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=problem):
        load_app_settings(FieldopsSettings)


# -- the tasks ------------------------------------------------------------------------------


def test_auto_lock_locks_yesterday_in_riyadh_with_an_audit_row_each(
    web: FlaskClient, taskhub_database_url: str, taskhub_settings: Settings
) -> None:
    for title, day in [
        ("Gate", "2030-01-06"),
        ("Gate", "2030-01-07"),
        ("Kennels", "2030-01-07"),
        ("Gate", "2030-01-08"),
    ]:
        assert (
            web.post("/schedules", json={"title": title, "day": day, "assignee": "a"}).status_code
            == 201
        )
    # 22:00 UTC on the 7th is 01:00 on the 8th in Riyadh: yesterday there is the 7th (in UTC,
    # it would have been the 6th).
    tick = int(datetime.datetime(2030, 1, 7, 22, tzinfo=datetime.UTC).timestamp())
    settings = taskhub_settings.model_copy(update={"timezone": "Asia/Riyadh"})
    run = run_task(
        tasks.auto_lock_yesterday_schedules,
        PeriodicArgs(timestamp=tick),
        connection_url=taskhub_database_url,
        settings=settings,
        job_id=77,
    )
    assert run.result["day"] == "2030-01-07"
    locked = run.result["locked"]
    assert len(locked) == 2
    assert rows(
        taskhub_database_url,
        "SELECT schedule_id, action, actor, details->>'job_id' AS job"
        " FROM fieldops.audit_trail WHERE action = 'schedule_locked' ORDER BY schedule_id",
    ) == [
        {
            "schedule_id": sid,
            "action": "schedule_locked",
            "actor": "fieldops.auto_lock_yesterday_schedules",
            "job": "77",
        }
        for sid in locked
    ]
    # A rerun locks nothing more and audits nothing twice.
    again = run_task(
        tasks.auto_lock_yesterday_schedules,
        PeriodicArgs(timestamp=tick),
        connection_url=taskhub_database_url,
        settings=settings,
    )
    assert again.result["locked"] == []
    # A locked schedule is read-only in the web app; the day after is not locked.
    response = web.patch(f"/schedules/{locked[0]}", json={"title": "Changed"})
    assert response.status_code == 409
    assert "past days are read-only" in response.get_json()["error"]
    [open_day] = rows(
        taskhub_database_url, "SELECT id FROM fieldops.schedules WHERE day = '2030-01-08'"
    )
    assert web.patch(f"/schedules/{open_day['id']}", json={"title": "Changed"}).status_code == 200


def test_cleanup_removes_read_notifications_past_the_retention(
    taskhub_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.datetime(2030, 1, 7, 2, tzinfo=RIYADH)
    with psycopg.connect(taskhub_database_url) as conn:
        for message, read_days_ago in [("old read", 31), ("recent read", 29), ("unread", None)]:
            read_at = now - datetime.timedelta(days=read_days_ago) if read_days_ago else None
            conn.execute(
                "INSERT INTO fieldops.notifications (recipient, message, read_at, created_at)"
                " VALUES ('a', %s, %s, %s)",
                (message, read_at, now - datetime.timedelta(days=90)),
            )
    tick = PeriodicArgs(timestamp=int(now.timestamp()))
    run = run_task(tasks.cleanup_old_notifications, tick, connection_url=taskhub_database_url)
    assert run.result["deleted"] == 1
    left = rows(taskhub_database_url, "SELECT message FROM fieldops.notifications ORDER BY id")
    assert [row["message"] for row in left] == ["recent read", "unread"]
    # The retention is a setting.
    settings = FieldopsSettings(notification_retention_days=7)
    run = run_task(
        tasks.cleanup_old_notifications,
        tick,
        connection_url=taskhub_database_url,
        app_settings=[settings],
    )
    assert run.result["deleted"] == 1
    left = rows(taskhub_database_url, "SELECT message FROM fieldops.notifications ORDER BY id")
    assert [row["message"] for row in left] == ["unread"]


def test_a_report_is_a_real_pdf_served_by_the_flask_app(
    web: FlaskClient, taskhub_database_url: str, taskhub_run_jobs: JobRunner, fieldops_env: Path
) -> None:
    for title, day in [
        ("Gate patrol", "2030-01-07"),
        ("Kennel check", "2030-01-08"),
        ("Outside the period", "2030-02-01"),
    ]:
        web.post("/schedules", json={"title": title, "day": day, "assignee": "salem"})
    response = web.post("/reports", json={"day_from": "2030-01-01", "day_to": "2030-01-31"})
    assert response.status_code == 202
    report = response.get_json()["report"]
    assert web.get(f"/reports/{report['id']}/pdf").status_code == 404  # not written yet
    outcomes = {outcome.task: outcome for outcome in taskhub_run_jobs(queues=["reports"])}
    assert outcomes["fieldops.generate_pdf_report"].status == "succeeded"
    assert web.get(f"/reports/{report['id']}").get_json()["report"]["status"] == "ready"
    response = web.get(f"/reports/{report['id']}/pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    data = response.data
    response.close()  # the file it streamed
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
    assert f"Field operations report {report['id']}" in text
    assert "Schedules from 2030-01-01 to 2030-01-31" in text
    assert "Gate patrol" in text
    assert "Kennel check" in text
    assert "Outside the period" not in text
    assert "2 schedules" in text
    assert (fieldops_env / f"report-{report['id']}.pdf").read_bytes() == data


def test_a_report_that_is_gone_fails_its_job_saying_so(taskhub_database_url: str) -> None:
    run = run_task(
        tasks.generate_pdf_report,
        {"report_id": 999},
        connection_url=taskhub_database_url,
        raises=False,
    )
    assert run.status == "failed"
    assert "report 999 does not exist" in str(run.error)


# -- backups --------------------------------------------------------------------------------


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def backup_runner(url: str, settings: Settings, **changes: Any) -> JobRunner:
    """The plugin's runner, with the off-site settings this test has just set in the
    environment (read when the apps load, as a worker reads them at start)."""
    changed = settings.model_copy(update=changes)
    return JobRunner(url, changed, load_apps(changed))


def test_backups_are_copied_to_the_bucket_and_follow_the_retention(
    taskhub_database_url: str,
    taskhub_settings: Settings,
    s3: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3_env(monkeypatch, s3, f"s3://{BUCKET}/nightly")
    runner = backup_runner(taskhub_database_url, taskhub_settings, backup_keep=1)
    client = boto3.client(
        "s3",
        endpoint_url=s3,
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    )
    keys = []
    for _ in range(2):
        with psycopg.connect(taskhub_database_url) as conn:
            from backend.defer import defer_sync

            defer_sync(conn, tasks.run_automated_backup, {})
        [outcome] = runner(queues=["backups"])
        assert outcome.status == "succeeded", outcome.error
        local = Path(outcome.result["backup"]["path"])
        copy = outcome.result["offsite"]
        assert copy["location"] == f"s3://{BUCKET}/nightly/{local.name}"
        body = client.get_object(Bucket=BUCKET, Key=f"nightly/{local.name}")["Body"].read()
        assert digest(body) == digest(local.read_bytes())
        keys.append(f"nightly/{local.name}")
    # TASKHUB_BACKUP_KEEP=1: the first backup is gone here and off-site.
    listed = client.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert [item["Key"] for item in listed] == [keys[1]]
    assert outcome.result["offsite"]["removed"] == [f"s3://{BUCKET}/{keys[0]}"]


def test_backups_are_copied_to_a_directory(
    taskhub_database_url: str,
    taskhub_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = tmp_path / "offsite"
    monkeypatch.setenv("TASKHUB_FIELDOPS_OFFSITE_TARGET", f"file://{target}")
    with psycopg.connect(taskhub_database_url) as conn:
        defer_sync(conn, tasks.run_automated_backup, {})
    [outcome] = backup_runner(taskhub_database_url, taskhub_settings)(queues=["backups"])
    assert outcome.status == "succeeded", outcome.error
    local = Path(outcome.result["backup"]["path"])
    assert (target / local.name).read_bytes() == local.read_bytes()
    assert list(target.iterdir()) == [target / local.name]  # no .partial left


def test_a_failed_offsite_copy_fails_the_job_and_alerts_but_keeps_the_backup(
    taskhub_database_url: str,
    taskhub_settings: Settings,
    s3: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3_env(monkeypatch, s3, "s3://no-such-bucket/nightly")
    with psycopg.connect(taskhub_database_url) as conn:
        defer_sync(conn, tasks.run_automated_backup, {})
    [outcome] = backup_runner(taskhub_database_url, taskhub_settings)(queues=["backups"])
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert "OffsiteCopyError" in outcome.error
    assert "no-such-bucket" in outcome.error
    [backup] = rows(taskhub_database_url, "SELECT status, path FROM taskhub.backups")
    assert backup["status"] == "succeeded"
    assert Path(backup["path"]).exists()
    [alert] = rows(taskhub_database_url, "SELECT kind, message FROM taskhub.alert_events")
    assert alert["kind"] == "backup_offsite_failed"
    assert "TASKHUB_FIELDOPS_OFFSITE_TARGET" in alert["message"]
