"""Database backups with real pg_dump/pg_restore binaries, real workers and a real server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from procrastinate.periodic import PeriodicDeferrer
from psycopg.rows import dict_row

from backend import defer
from backend.control import alerts, jobs
from backend.db import DictConnection
from backend.errors import AlreadyQueued
from backend.maintenance import backups
from backend.process import migrate
from backend.process.embedded import BIN_DIR as EMBEDDED_BIN_DIR
from backend.process.embedded import embedded_server
from backend.queries import QUERIES
from backend.runtime.app import build_task_app
from backend.settings import Settings, load_settings
from backend.tasks.backups import backup_database
from backend.tasks.builtin import ping
from tests.conftest import BLUEPRINTS, TOKENS, create_database, drop_database, eventually
from tests.integration.conftest import running_worker

DAY = datetime.timedelta(days=1)


def settings_with(settings: Settings, **changes: Any) -> Settings:
    """The test's settings with some backup settings changed (validated like the real ones)."""
    base = {"database_url": settings.database_url, "data_dir": settings.data_dir, "tokens": TOKENS}
    return load_settings(**(base | changes))


async def defer_backup(conn: DictConnection) -> int:
    """What `taskhub defer taskhub.backup_database` does: a job deferred by hand."""
    await conn.commit()
    async with conn.transaction():
        return await defer.defer(conn, backup_database, {})


async def finished(conn: DictConnection, job_id: int, within: float = 60) -> jobs.JobView:
    async def done() -> bool:
        await conn.commit()  # see other connections' commits
        return (await jobs.get_job(conn, job_id)).status in jobs.FINISHED

    await eventually(done, within=within)
    return await jobs.get_job(conn, job_id)


async def fetch_one(conn: DictConnection, query: str, *params: Any) -> dict[str, Any]:
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    assert row is not None
    return row


async def backup_records(conn: DictConnection) -> list[backups.BackupRecord]:
    await conn.commit()
    return await backups.list_backups(conn, limit=100)


async def alert_events(conn: DictConnection) -> list[alerts.AlertEvent]:
    await conn.commit()
    return await alerts.list_alerts(conn, kind="backup_failed")


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def file_facts(path: Path) -> tuple[bytes, int, int]:
    """The first bytes, permission bits and size of a file."""
    return path.read_bytes()[:5], path.stat().st_mode & 0o777, path.stat().st_size


async def path_of(conn: DictConnection, backup_id: int) -> Path:
    record = await backups.get_backup(conn, backup_id)
    assert record is not None
    assert record.path is not None
    return Path(record.path)


@contextlib.asynccontextmanager
async def scratch_database(admin_url: str) -> AsyncIterator[str]:
    name = f"taskhub_restore_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    try:
        yield url
    finally:
        drop_database(admin_url, name)


@contextlib.asynccontextmanager
async def blocked_pg_dump(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """Hold an exclusive lock on a table, so a pg_dump of this database waits for it."""
    async with await psycopg.AsyncConnection.connect(db_url) as blocker:
        await blocker.execute("CREATE TABLE blocker (id int)")
        await blocker.commit()
        await blocker.execute("LOCK TABLE blocker IN ACCESS EXCLUSIVE MODE")
        try:
            yield blocker
        finally:
            await blocker.rollback()


async def waiting_pg_dumps(conn: DictConnection) -> list[int]:
    """Backends of pg_dump processes waiting for a lock on this database."""
    await conn.commit()
    cursor = await conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'pg_dump' AND wait_event_type = 'Lock'"
    )
    return [int(row["pid"]) for row in await cursor.fetchall()]


async def test_a_backup_through_a_worker_is_written_checked_recorded_and_restorable(
    conn: DictConnection, settings: Settings, db_url: str, admin_url: str
) -> None:
    # A job the backup must carry: the worker below only serves "maintenance", so it waits.
    async with conn.transaction():
        kept_job = await defer.defer(conn, ping, {"message": "kept in the backup"})
    expected_tables = int((await fetch_one(conn, QUERIES["backup_table_count"]))["tables"])
    job_id = await defer_backup(conn)
    async with running_worker(settings, db_url, queues=["maintenance"]):
        job = await finished(conn, job_id)

    assert job.state == jobs.JobState.SUCCESS, job.errors
    report = backups.BackupReport.model_validate(job.result)
    path = Path(report.path)
    assert path.parent == settings.backups_path
    assert files_in(settings.backups_path) == [path.name], "no partial file is left"
    magic, mode, size = file_facts(path)
    assert magic == b"PGDMP", "custom format"
    assert mode == 0o600

    [record] = await backup_records(conn)
    assert record.id == report.backup_id
    assert (record.status, record.job_id, record.attempt) == ("succeeded", job_id, 1)
    assert record.path == str(path)
    assert record.size_bytes == size > 0
    assert record.duration_seconds is not None
    assert record.duration_seconds > 0
    assert record.finished_at is not None
    assert record.tables == report.tables == expected_tables > 10
    assert record.toc_entries == report.toc_entries > record.tables
    assert record.error is None

    # Progress counted pg_dump's "dumping contents of table" lines against the table count.
    assert job.progress is not None
    assert job.progress.counters == {"tables_dumped": expected_tables}
    assert (job.progress.done, job.progress.total) == (expected_tables, expected_tables)

    tools = await backups.select_tools(settings, conn.info.server_version)
    assert report.pg_dump == record.pg_dump == tools.describe()
    assert await backups.verify_archive(tools, path) == record.toc_entries

    async with scratch_database(admin_url) as scratch_url:
        await backups.restore_archive(
            tools, path, scratch_url, server_version_num=conn.info.server_version
        )
        async with await psycopg.AsyncConnection.connect(scratch_url) as restored:
            cursor = await restored.execute(
                "SELECT task_name, status::text, args FROM procrastinate_jobs WHERE id = %s",
                (kept_job,),
            )
            assert await cursor.fetchone() == (
                "taskhub.ping",
                "todo",
                {"message": "kept in the backup", "sleep": 0},
            )
            cursor = await restored.execute("SELECT count(*) FROM taskhub.backups")
            assert await cursor.fetchone() == (1,)  # the row of this very run, as 'running'


async def test_newer_client_tools_restore_into_an_older_server(
    conn: DictConnection, settings: Settings, db_url: str, admin_url: str
) -> None:
    """The embedded package's v18 tools dump any server; restoring a v18 archive into a server
    before 17 goes through psql without the `SET transaction_timeout` it would refuse."""
    embedded_tools = settings_with(settings, pg_bin_dir=EMBEDDED_BIN_DIR)
    job_id = await defer_backup(conn)
    async with running_worker(embedded_tools, db_url, queues=["maintenance"]):
        job = await finished(conn, job_id)
    assert job.state == jobs.JobState.SUCCESS, job.errors
    report = backups.BackupReport.model_validate(job.result)
    tools = await backups.select_tools(embedded_tools, conn.info.server_version)
    assert tools.source == "TASKHUB_PG_BIN_DIR"
    assert tools.major >= 18
    assert report.pg_dump == tools.describe()

    if conn.info.server_version < 170000:
        # pg_restore 18 connecting itself to PostgreSQL < 17: the failure the detour avoids.
        async with scratch_database(admin_url) as scratch_url:
            with pytest.raises(backups.BackupError, match="transaction_timeout"):
                await backups.restore_archive(
                    tools,
                    Path(report.path),
                    scratch_url,
                    server_version_num=conn.info.server_version,
                    through_psql=False,
                )
    for through_psql in (None, True):  # chosen by versions, then forced
        async with scratch_database(admin_url) as scratch_url:
            await backups.restore_archive(
                tools,
                Path(report.path),
                scratch_url,
                server_version_num=conn.info.server_version,
                through_psql=through_psql,
            )
            async with await psycopg.AsyncConnection.connect(scratch_url) as restored:
                cursor = await restored.execute(
                    "SELECT status, job_id FROM taskhub.backups ORDER BY id"
                )
                assert await cursor.fetchall() == [("running", job_id)]


async def test_binary_selection(settings: Settings, conn: DictConnection) -> None:
    server = conn.info.server_version
    # The embedded server (no DATABASE_URL) always uses the binaries it ships with.
    embedded = await backups.select_tools(settings_with(settings, database_url=None), server)
    assert (embedded.source, embedded.bin_dir) == ("embedded", EMBEDDED_BIN_DIR)
    assert embedded.major >= 18

    # An external server: the pg_dump on PATH when it is recent enough, else the embedded ones.
    on_path = shutil.which("pg_dump")
    assert on_path is not None, "the test machine has PostgreSQL client tools on PATH"
    path_major, _ = await backups.tool_version(Path(on_path))
    chosen = await backups.select_tools(settings, server)
    if path_major >= backups.server_major(server):
        assert (chosen.source, chosen.bin_dir) == ("PATH", Path(on_path).parent)
    else:
        assert (chosen.source, chosen.bin_dir) == ("embedded", EMBEDDED_BIN_DIR)
    newer_than_path = (path_major + 1) * 10_000
    assert (await backups.select_tools(settings, newer_than_path)).source == "embedded"
    with pytest.raises(backups.BackupError, match="set TASKHUB_PG_BIN_DIR"):
        await backups.select_tools(settings, 990_000)

    # TASKHUB_PG_BIN_DIR wins, and one older than the server is refused with what to do.
    pinned = settings_with(settings, pg_bin_dir=Path(on_path).parent)
    assert (await backups.select_tools(pinned, path_major * 10_000)).source == "TASKHUB_PG_BIN_DIR"
    with pytest.raises(backups.BackupError, match="older than the server"):
        await backups.select_tools(pinned, newer_than_path)


async def test_a_backup_of_the_embedded_server_uses_its_binaries() -> None:
    home = Path(tempfile.mkdtemp(prefix="taskhub-backup-pg-"))
    try:
        settings = load_settings(data_dir=home / ".taskhub", tokens=TOKENS)  # no DATABASE_URL
        with embedded_server(settings.embedded_data_dir) as url:
            migrate.upgrade(url)
            async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
                job_id = await defer_backup(conn)
                async with running_worker(settings, url, queues=["maintenance"]):
                    job = await finished(conn, job_id)
                assert job.state == jobs.JobState.SUCCESS, job.errors
                [record] = await backup_records(conn)
        assert record.status == "succeeded"
        assert record.pg_dump is not None
        assert f"(embedded: {EMBEDDED_BIN_DIR})" in record.pg_dump
        assert record.path is not None
        assert Path(record.path).parent == home / ".taskhub" / "backups"
        tools = await backups.select_tools(settings, 180000)
        assert await backups.verify_archive(tools, Path(record.path)) == record.toc_entries
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def insert_backup(
    conn: DictConnection, directory: Path, started_at: datetime.datetime, status: str
) -> int:
    """A past run, with its file when it succeeded: the test decides the dates."""
    path = directory / f"past-{started_at:%Y%m%dT%H%M%S}.dump"
    if status == "succeeded":
        path.write_bytes(b"PGDMP past backup")
    row = await fetch_one(
        conn,
        "INSERT INTO taskhub.backups (status, path, started_at, finished_at, size_bytes)"
        " VALUES (%s, %s, %s, %s, 17) RETURNING id",
        status,
        str(path) if status == "succeeded" else None,
        started_at,
        started_at + datetime.timedelta(minutes=1),
    )
    return int(row["id"])


async def test_retention_keeps_the_newest_n_and_recent_days(
    conn: DictConnection, tmp_path: Path
) -> None:
    now = datetime.datetime(2026, 3, 1, 3, 0, tzinfo=datetime.UTC)
    ages = [1, 2, 3, 10, 20, 30]
    ids = {age: await insert_backup(conn, tmp_path, now - age * DAY, "succeeded") for age in ages}
    # Newer failed runs never count among the kept backups.
    for hours in (1, 2, 3):
        await insert_backup(conn, tmp_path, now - datetime.timedelta(hours=hours), "failed")
    await conn.commit()

    async def retain(keep: int, keep_days: float) -> list[int]:
        async with conn.transaction():
            await backups.apply_retention(conn, keep=keep, keep_days=keep_days, now=now)
        return [
            r.id for r in await backup_records(conn) if r.status == "succeeded" and not r.deleted_at
        ]

    # keep 2 and every backup younger than 15 days: 1, 2, 3, 10 days old stay.
    assert await retain(keep=2, keep_days=15) == [ids[1], ids[2], ids[3], ids[10]]
    assert (await path_of(conn, ids[20])).name not in files_in(tmp_path)
    # Count only: the newest two.
    assert await retain(keep=2, keep_days=0) == [ids[1], ids[2]]
    assert files_in(tmp_path) == sorted(
        Path(str(r.path)).name for r in await backup_records(conn) if r.id in (ids[1], ids[2])
    )
    # Nothing is young enough and only one is kept: the newest successful one.
    assert await retain(keep=1, keep_days=0.001) == [ids[1]]
    records = {r.id: r for r in await backup_records(conn)}
    assert all(records[ids[age]].deleted_at is not None for age in ages[1:])
    assert [r.status for r in records.values()].count("failed") == 3


def replace_with_directory(path: Path) -> None:
    path.unlink()
    (path / "inside").mkdir(parents=True)


async def test_retention_reports_a_file_it_cannot_delete(
    conn: DictConnection, tmp_path: Path
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    newest = await insert_backup(conn, tmp_path, now - DAY, "succeeded")
    stuck = await insert_backup(conn, tmp_path, now - 3 * DAY, "succeeded")
    gone = await insert_backup(conn, tmp_path, now - 4 * DAY, "succeeded")
    stuck_path, gone_path = await path_of(conn, stuck), await path_of(conn, gone)
    replace_with_directory(stuck_path)  # unlink fails on it
    os.remove(gone_path)  # already removed by hand: fine, counted as deleted
    async with conn.transaction():
        report = await backups.apply_retention(conn, keep=1, keep_days=0, now=now)
    assert report.deleted == [str(gone_path)]
    assert len(report.errors) == 1
    assert report.errors[0].startswith(f"{stuck_path}: ")
    records = {r.id: r for r in await backup_records(conn)}
    assert records[stuck].deleted_at is None, "tried again next time"
    assert records[gone].deleted_at is not None
    assert records[newest].deleted_at is None


async def test_a_backup_applies_retention_to_older_runs(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    settings = settings_with(settings, backup_keep=2, backup_keep_days=0)
    settings.backups_path.mkdir(parents=True)
    now = datetime.datetime.now(datetime.UTC)
    old = [
        await insert_backup(conn, settings.backups_path, now - d * DAY, "succeeded")
        for d in (1, 2, 3)
    ]
    await conn.commit()
    job_id = await defer_backup(conn)
    async with running_worker(settings, db_url, queues=["maintenance"]):
        job = await finished(conn, job_id)
    assert job.state == jobs.JobState.SUCCESS, job.errors
    report = backups.BackupReport.model_validate(job.result)
    records = {r.id: r for r in await backup_records(conn)}
    kept = [old[0], report.backup_id]
    assert sorted(report.retention.deleted) == sorted(str(records[i].path) for i in old[1:])
    assert files_in(settings.backups_path) == sorted(Path(str(records[i].path)).name for i in kept)
    assert [i for i, r in records.items() if r.deleted_at is None] == sorted(kept, reverse=True)


@pytest.mark.parametrize("problem", ["bad binary dir", "backup dir is a file"])
async def test_a_failed_backup_is_recorded_alerted_and_fails_its_job(
    conn: DictConnection, settings: Settings, db_url: str, tmp_path: Path, problem: str
) -> None:
    if problem == "bad binary dir":
        settings = settings_with(settings, pg_bin_dir=tmp_path / "no-postgres-here")
        expected = "TASKHUB_PG_BIN_DIR="
    else:
        (tmp_path / "a-file").write_text("not a directory")
        settings = settings_with(settings, backup_dir=tmp_path / "a-file" / "backups")
        expected = "cannot create the backup directory"
    job_id = await defer_backup(conn)
    async with running_worker(settings, db_url, queues=["maintenance"]):
        job = await finished(conn, job_id)

    assert job.state == jobs.JobState.FAILURE
    assert job.last_error is not None
    assert job.last_error.type == "BackupError"
    assert expected in job.last_error.message
    [record] = await backup_records(conn)
    assert record.status == "failed"
    assert record.error is not None
    assert expected in record.error
    assert record.finished_at is not None
    [alert] = await alert_events(conn)
    assert (alert.job_id, alert.severity, alert.details["backup_id"]) == (
        job_id,
        "error",
        record.id,
    )
    assert expected in alert.message
    assert files_in(settings.backups_path) == []


async def test_a_backup_failing_mid_dump_leaves_no_partial_file(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    async with blocked_pg_dump(db_url):
        job_id = await defer_backup(conn)
        async with running_worker(settings, db_url, queues=["maintenance"]):

            async def dump_waiting() -> bool:
                return bool(await waiting_pg_dumps(conn))

            await eventually(dump_waiting, within=30)
            # The start was committed on its own: the run is visible while pg_dump works.
            [running] = await backup_records(conn)
            assert running.status == "running"
            assert running.path is not None
            assert files_in(settings.backups_path) == [Path(running.path).name + ".partial"]
            # The server drops pg_dump's connection (a restart, an admin's kill).
            [pid] = await waiting_pg_dumps(conn)
            await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            job = await finished(conn, job_id)

    assert job.state == jobs.JobState.FAILURE
    [record] = await backup_records(conn)
    assert record.status == "failed"
    assert record.error is not None
    assert record.error.startswith("pg_dump failed (exit 1): pg_dump: error:")
    assert files_in(settings.backups_path) == []
    [alert] = await alert_events(conn)
    assert alert.details["backup_id"] == record.id
    assert alert.job_id == job_id


async def test_an_interrupted_run_is_closed_by_the_next_one(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    settings.backups_path.mkdir(parents=True)
    partial = settings.backups_path / "taskhub-20260301T030000Z-1.dump.partial"
    partial.write_bytes(b"PGDMP cut short")
    stale = await fetch_one(
        conn,
        "INSERT INTO taskhub.backups (job_id, path) VALUES (NULL, %s) RETURNING id",
        str(partial).removesuffix(".partial"),
    )
    await conn.commit()
    job_id = await defer_backup(conn)
    async with running_worker(settings, db_url, queues=["maintenance"]):
        job = await finished(conn, job_id)
    assert job.state == jobs.JobState.SUCCESS, job.errors
    records = {r.id: r for r in await backup_records(conn)}
    assert records[stale["id"]].status == "failed"
    assert "interrupted" in str(records[stale["id"]].error)
    assert not partial.exists()
    [alert] = await alert_events(conn)
    assert alert.details["backup_id"] == stale["id"]


async def test_one_backup_per_tick_however_many_workers_defer_it(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    apps = [build_task_app(db_url, settings, BLUEPRINTS) for _ in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app.open_async())
        deferrers = [PeriodicDeferrer(app.periodic_registry) for app in apps]
        # 03:00:30 UTC on a fixed day: each deferrer sees the 03:00 tick as due (time is ours).
        at = datetime.datetime(2026, 3, 1, 3, 0, 30, tzinfo=settings.tzinfo()).timestamp()
        due = [
            [
                (task, tick)
                for task, tick in deferrer.get_previous_tasks(at=at)
                if task.task.name == "taskhub.backup_database"
            ]
            for deferrer in deferrers
        ]
        assert all(len(each) == 1 for each in due)
        ticks = {tick for each in due for _, tick in each}
        assert len(ticks) == 1
        await asyncio.gather(*(d.defer_jobs(each) for d, each in zip(deferrers, due, strict=True)))

    await conn.commit()
    cursor = await conn.execute(
        "SELECT id, args, lock, queueing_lock, queue_name FROM procrastinate_jobs"
        " WHERE task_name = 'taskhub.backup_database'"
    )
    [row] = await cursor.fetchall()
    assert row["args"] == {"timestamp": ticks.pop()}
    assert (row["lock"], row["queueing_lock"], row["queue_name"]) == (
        "taskhub.backup_database",
        "taskhub.backup_database",
        "maintenance",
    )
    # While it waits, a second one (by hand, or the next tick) is refused, not piled up.
    with pytest.raises(AlreadyQueued):
        await defer_backup(conn)


async def test_two_backups_never_run_at_once(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    # The worker tried the second job when it was deferred; it takes it at the next poll.
    settings = settings_with(settings, fetch_polling_interval=0.2)
    async with blocked_pg_dump(db_url) as blocker:
        first = await defer_backup(conn)
        async with running_worker(settings, db_url, queues=["maintenance"], concurrency=4):

            async def dump_waiting() -> bool:
                return bool(await waiting_pg_dumps(conn))

            await eventually(dump_waiting, within=30)
            second = await defer_backup(conn)  # the first is running: no longer queueing-locked
            await asyncio.sleep(1.0)  # the worker was woken for it and has free slots
            assert (await jobs.get_job(conn, first)).status == "doing"
            assert (await jobs.get_job(conn, second)).status == "todo"
            assert len(await waiting_pg_dumps(conn)) == 1
            await blocker.rollback()  # let the first finish; the second follows
            first_job = await finished(conn, first)
            second_job = await finished(conn, second)

    assert (first_job.state, second_job.state) == (jobs.JobState.SUCCESS, jobs.JobState.SUCCESS)
    by_job = {r.job_id: r for r in await backup_records(conn)}
    first_finished = by_job[first].finished_at
    assert first_finished is not None
    assert by_job[second].started_at >= first_finished
    assert len(files_in(settings.backups_path)) == 2
