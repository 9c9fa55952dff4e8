"""`taskhub doctor`'s checks, each passing and failing on a real database."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg
import pytest

from backend import defer
from backend.control import doctor
from backend.control.doctor import Doctor
from backend.db import DictConnection
from backend.declare.apps import load_apps
from backend.process import migrate
from backend.settings import Settings
from backend.tasks.builtin import ping
from tests.integration.conftest import running_worker


def at(settings: Settings, url: str) -> Doctor:
    return Doctor(settings, url, load_apps(settings))


async def test_every_check_passes_with_a_live_worker_and_a_fresh_backup(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    await conn.set_autocommit(True)
    await defer.defer(conn, ping, {"message": "waits"}, queue="emails", schedule_in=3600)
    await conn.execute(
        "INSERT INTO taskhub.backups (status, finished_at) VALUES ('succeeded', now())"
    )
    async with running_worker(settings, db_url):  # all queues (maintenance's included)
        results = await doctor.run_checks(settings, db_url)
    cursor = await conn.execute("SELECT current_setting('autovacuum')::bool AS on")
    server_vacuums = (await cursor.fetchone() or {})["on"]  # off on some test machines
    assert [(result.name, result.status) for result in results] == [
        ("apps", "ok"),
        ("database", "ok"),
        ("migrations", "ok"),
        ("queues", "ok"),
        ("schedules", "ok"),
        ("backups", "ok"),
        ("last backup", "ok"),
        ("clock", "ok"),
        ("notify", "ok"),
        ("vacuum", "ok" if server_vacuums else "warning"),
    ], [result.line() for result in results]
    assert not doctor.failed(results)


async def test_an_unreachable_database_fails_and_stops_the_run(settings: Settings) -> None:
    url = "postgresql://postgres@127.0.0.1:1/nothing"
    results = await doctor.run_checks(settings, url)
    assert [(result.name, result.status) for result in results] == [
        ("apps", "ok"),
        ("database", "fail"),
    ]
    assert "check DATABASE_URL" in results[1].detail


async def test_a_database_not_at_head_fails(settings: Settings, empty_db_url: str) -> None:
    check = await doctor.check_migrations(at(settings, empty_db_url))
    assert (check.status, check.detail) == (
        "fail",
        f"taskhub at nothing, head {migrate.head_revision()}: run `taskhub migrate`",
    )
    migrate.upgrade(empty_db_url, "0009")
    check = await doctor.check_migrations(at(settings, empty_db_url))
    assert check.status == "fail"
    assert "taskhub at 0009" in check.detail


async def test_an_enabled_app_s_migrations_count_too(settings: Settings, db_url: str) -> None:
    with_app = settings.model_copy(update={"apps": ["backend.examples.scheduling"]})
    check = await doctor.check_migrations(at(with_app, db_url))
    assert check.status == "fail"
    assert "app scheduling at nothing" in check.detail
    migrate.upgrade(db_url, apps=load_apps(with_app).apps)
    assert (await doctor.check_migrations(at(with_app, db_url))).status == "ok"


async def test_an_app_that_does_not_import_fails(settings: Settings, db_url: str) -> None:
    broken = settings.model_copy(update={"apps": ["no_such_module.jobs"]})
    check = await doctor.check_apps(Doctor(broken, db_url))
    assert check.status == "fail"
    assert "no_such_module" in check.detail
    results = await doctor.run_checks(broken, db_url)
    assert results[0].status == "fail"
    assert doctor.failed(results)


async def test_a_queue_with_waiting_jobs_and_no_live_worker_fails(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    await conn.set_autocommit(True)
    assert (await doctor.check_queues_served(at(settings, db_url))).status == "ok"
    await defer.defer(conn, ping, {"message": "nobody"}, queue="emails", schedule_in=3600)
    check = await doctor.check_queues_served(at(settings, db_url))
    assert check.status == "fail"
    assert "no live worker on emails" in check.detail
    async with running_worker(settings, db_url, queues=["other"]):
        assert (await doctor.check_queues_served(at(settings, db_url))).status == "fail"
    # (the workers' schedules defer maintenance jobs: that queue needs a worker too)
    async with running_worker(settings, db_url, queues=["other", "emails", "maintenance"]):
        assert (await doctor.check_queues_served(at(settings, db_url))).status == "ok"
    # That worker stopped: dead, so the queue is unserved again.
    assert (await doctor.check_queues_served(at(settings, db_url))).status == "fail"
    # A worker silent for TASKHUB_RESCUE_AFTER is dead too.
    await conn.execute(
        "INSERT INTO taskhub.workers (worker_id, host, pid, concurrency, last_heartbeat)"
        " VALUES (999, 'frozen', 1, 1, now() - interval '5 minutes')"
    )
    assert (await doctor.check_queues_served(at(settings, db_url))).status == "fail"


async def test_schedules_check_fails_on_an_unusable_override(
    settings: Settings, db_url: str
) -> None:
    assert (await doctor.check_schedules(at(settings, db_url))).status == "ok"
    bad = settings.model_copy(update={"schedules": "no.such_task=off"})
    check = await doctor.check_schedules(at(bad, db_url))
    assert check.status == "fail"
    assert "no.such_task" in check.detail


async def test_backups_check_fails_on_a_directory_it_cannot_write(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    check = await doctor.check_backup_tools(at(settings, db_url))
    assert check.status == "ok", check.detail
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    bad = settings.model_copy(update={"backup_dir": blocker / "backups"})
    check = await doctor.check_backup_tools(at(bad, db_url))
    assert check.status == "fail"
    assert "TASKHUB_BACKUP_DIR" in check.detail
    old_tools = settings.model_copy(update={"pg_bin_dir": tmp_path})  # no pg_dump there
    check = await doctor.check_backup_tools(at(old_tools, db_url))
    assert check.status == "fail"
    assert "TASKHUB_PG_BIN_DIR" in check.detail


async def test_last_backup_none_is_a_warning_old_or_failed_a_failure(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    await conn.set_autocommit(True)
    check = await doctor.check_last_backup(at(settings, db_url))
    assert check.status == "warning"
    assert "no backup ran yet" in check.detail
    await conn.execute("INSERT INTO taskhub.backups (status, error) VALUES ('failed', 'disk')")
    assert (await doctor.check_last_backup(at(settings, db_url))).status == "fail"
    await conn.execute(
        "INSERT INTO taskhub.backups (status, finished_at)"
        " VALUES ('succeeded', now() - interval '30 hours')"
    )
    check = await doctor.check_last_backup(at(settings, db_url))
    assert check.status == "fail"
    assert "30 hours old" in check.detail
    await conn.execute(
        "INSERT INTO taskhub.backups (status, finished_at)"
        " VALUES ('succeeded', now() - interval '25 hours')"
    )
    assert (await doctor.check_last_backup(at(settings, db_url))).status == "ok"


async def test_clock_skew_fails_beyond_two_seconds(
    settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await doctor.check_clock(at(settings, db_url))).status == "ok"
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 5)  # this host runs 5 s ahead
    check = await doctor.check_clock(at(settings, db_url))
    assert check.status == "fail"
    assert "NTP" in check.detail


async def test_notify_round_trip(
    settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = await doctor.check_notify(at(settings, db_url))
    assert check.status == "ok", check.detail
    monkeypatch.setattr(doctor, "MAX_NOTIFY_ROUND_TRIP", 0.0)
    assert (await doctor.check_notify(at(settings, db_url))).status == "fail"


def test_a_check_that_raises_is_a_failure_line(settings: Settings) -> None:
    async def broken(_: Doctor) -> doctor.Check:
        raise psycopg.OperationalError("connection lost")

    check = asyncio.run(doctor._guarded(broken, Doctor(settings, "")))
    assert check.line() == "broken       FAIL: connection lost"


async def test_autovacuum_off_for_the_jobs_table_is_a_warning(
    settings: Settings, db_url: str, conn: DictConnection
) -> None:
    await conn.set_autocommit(True)
    cursor = await conn.execute("SELECT current_setting('autovacuum')::bool AS on")
    server_vacuums = (await cursor.fetchone() or {})["on"]
    before = await doctor.check_vacuum(at(settings, db_url))
    assert before.status == ("ok" if server_vacuums else "warning"), before.line()
    await conn.execute("ALTER TABLE procrastinate_jobs SET (autovacuum_enabled = false)")
    after = await doctor.check_vacuum(at(settings, db_url))
    assert after.status == "warning"
    assert "autovacuum is off" in after.detail
    if server_vacuums:
        assert "RESET (autovacuum_enabled)" in after.detail
