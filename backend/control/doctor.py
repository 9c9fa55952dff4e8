"""``taskhub doctor``: one small check per thing that stops taskhub from working, each saying
``ok`` or what to do. A warning does not fail the run; a failure does."""

from __future__ import annotations

import asyncio
import datetime
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
import sqlalchemy
from alembic.runtime.migration import MigrationContext
from psycopg.rows import dict_row

from backend.declare.apps import LoadedApps, TaskhubApp, load_apps
from backend.declare.schedules import configured_schedules
from backend.errors import TaskhubError
from backend.maintenance import backups
from backend.process import migrate
from backend.queries import QUERIES
from backend.settings import Settings

#: A successful backup older than this is stale (the nightly one runs every 24 hours).
BACKUP_FRESH_HOURS = 26
MAX_CLOCK_SKEW = 2.0  # seconds
MAX_NOTIFY_ROUND_TRIP = 1.0  # seconds
CONNECT_TIMEOUT = 5  # seconds

Status = Literal["ok", "warning", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str = ""

    def line(self) -> str:
        word = {"ok": "ok", "warning": "warning", "fail": "FAIL"}[self.status]
        return f"{self.name:<12} {word}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class Doctor:
    """What every check may need: the settings, the database URL, the apps as loaded."""

    settings: Settings
    url: str
    apps: LoadedApps | None = None


async def _connect(url: str) -> psycopg.AsyncConnection[dict[str, Any]]:
    return await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT
    )


async def _one(url: str, query: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    async with await _connect(url) as conn:
        cursor = await conn.execute(QUERIES[query], params)
        row = await cursor.fetchone()
    assert row is not None
    return row


async def check_database(doctor: Doctor) -> Check:
    try:
        row = await _one(doctor.url, "doctor_server")
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check(
            "database", "fail", f"cannot connect ({first}): check DATABASE_URL and the server"
        )
    return Check("database", "ok", f"PostgreSQL {row['server_version_num'] // 10_000}")


def _current_revision(url: str, version_table: str) -> str | None:
    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(url), poolclass=sqlalchemy.NullPool
    )
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": version_table})
            return context.get_current_revision()
    finally:
        engine.dispose()


def _migration_targets(apps: LoadedApps | None) -> list[tuple[str, str, Path | None]]:
    """(label, version table, revisions folder) for taskhub and each app with migrations."""
    targets: list[tuple[str, str, Path | None]] = [("taskhub", "alembic_version", None)]
    app_list: Sequence[TaskhubApp] = apps.apps if apps else ()
    for app in app_list:
        if app.migrations is not None:
            targets.append((f"app {app.name}", app.version_table, app.migrations))
    return targets


async def check_migrations(doctor: Doctor) -> Check:
    behind = []
    for label, table, folder in _migration_targets(doctor.apps):
        head = migrate.head_revision(folder) if folder else migrate.head_revision()
        current = await asyncio.to_thread(_current_revision, doctor.url, table)
        if current != head:
            behind.append(f"{label} at {current or 'nothing'}, head {head}")
    if behind:
        return Check("migrations", "fail", "; ".join(behind) + ": run `taskhub migrate`")
    return Check("migrations", "ok")


async def check_apps(doctor: Doctor) -> Check:
    try:
        apps = load_apps(doctor.settings)
    except TaskhubError as exc:
        return Check("apps", "fail", f"{exc.message}: fix TASKHUB_APPS or --app")
    names = ", ".join(app.name for app in apps.apps)
    return Check("apps", "ok", names)


async def check_queues_served(doctor: Doctor) -> Check:
    async with await _connect(doctor.url) as conn:
        cursor = await conn.execute(
            QUERIES["doctor_queue_coverage"], {"rescue_after": doctor.settings.rescue_after}
        )
        rows = await cursor.fetchall()
    unserved = [row["queue_name"] for row in rows if not row["served"]]
    if unserved:
        return Check(
            "queues",
            "fail",
            f"waiting jobs and no live worker on {', '.join(unserved)}: start `taskhub worker`"
            f" (--queues {','.join(unserved)}, or all queues)",
        )
    return Check("queues", "ok", f"{len(rows)} with waiting jobs, all served")


async def check_schedules(doctor: Doctor) -> Check:
    blueprints = doctor.apps.blueprints if doctor.apps else ()
    try:
        schedules = configured_schedules(doctor.settings, blueprints)
    except TaskhubError as exc:
        return Check("schedules", "fail", f"{exc.message}: fix TASKHUB_SCHEDULES")
    off = sum(1 for schedule in schedules if not schedule.enabled)
    return Check("schedules", "ok", f"{len(schedules) - off} on, {off} off")


def _writable(directory: Path) -> str | None:
    """None when a file can be written in ``directory`` (made if missing), else why not."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


async def check_backup_tools(doctor: Doctor) -> Check:
    directory = doctor.settings.backups_path
    problem = _writable(directory)
    if problem is not None:
        return Check(
            "backups", "fail", f"cannot write in {directory} ({problem}): fix TASKHUB_BACKUP_DIR"
        )
    row = await _one(doctor.url, "doctor_server")
    try:
        tools = await backups.select_tools(doctor.settings, row["server_version_num"])
    except TaskhubError as exc:
        return Check("backups", "fail", exc.message)
    return Check("backups", "ok", f"{directory} writable; pg_dump {tools.major} ({tools.source})")


async def check_last_backup(doctor: Doctor) -> Check:
    row = await _one(doctor.url, "doctor_last_backup")
    last: datetime.datetime | None = row["last_success"]
    if last is None:
        if not row["any_run"]:
            return Check(
                "last backup",
                "warning",
                "no backup ran yet (nightly at 03:00; `taskhub defer taskhub.backup_database`"
                " backs up now)",
            )
        return Check(
            "last backup", "fail", "no backup ever succeeded: see `taskhub backups` for why"
        )
    age = datetime.datetime.now(datetime.UTC) - last
    hours = age.total_seconds() / 3600
    if hours > BACKUP_FRESH_HOURS:
        return Check(
            "last backup",
            "fail",
            f"the last successful backup is {hours:.0f} hours old: see `taskhub backups` and"
            " the worker serving the maintenance queue",
        )
    return Check("last backup", "ok", f"{hours:.1f} hours ago")


async def check_clock(doctor: Doctor) -> Check:
    async with await _connect(doctor.url) as conn:
        before = time.time()
        cursor = await conn.execute(QUERIES["doctor_server"])
        row = await cursor.fetchone()
        after = time.time()
    assert row is not None
    server = row["server_time"].timestamp()
    # The server read its clock somewhere in the round trip: skew beyond half of it is real.
    skew = max(0.0, abs(server - (before + after) / 2) - (after - before) / 2)
    if skew >= MAX_CLOCK_SKEW:
        return Check(
            "clock",
            "fail",
            f"this host's clock is {skew:.1f} s off the database's: run NTP (chrony, timesyncd)"
            " on both",
        )
    return Check("clock", "ok", f"{skew * 1000:.0f} ms off the database")


async def check_notify(doctor: Doctor) -> Check:
    token = uuid.uuid4().hex
    async with await _connect(doctor.url) as listener, await _connect(doctor.url) as sender:
        await listener.execute(QUERIES["doctor_listen"])
        started = time.monotonic()
        await sender.execute(QUERIES["doctor_notify"], {"token": token})
        elapsed: float | None = None
        async for notify in listener.notifies(timeout=MAX_NOTIFY_ROUND_TRIP):
            if notify.payload == token:
                elapsed = time.monotonic() - started
                break
    if elapsed is None or elapsed >= MAX_NOTIFY_ROUND_TRIP:
        return Check(
            "notify",
            "fail",
            f"a NOTIFY took over {MAX_NOTIFY_ROUND_TRIP:.0f} s to come back: workers poll"
            " instead of waking; check for a pooler in transaction mode (LISTEN needs session"
            " mode) or a saturated server",
        )
    return Check("notify", "ok", f"round trip {elapsed * 1000:.1f} ms")


async def check_vacuum(doctor: Doctor) -> Check:
    """Fetches walk the waiting jobs' index through the dead entries of jobs already fetched
    until VACUUM removes them: without autovacuum, workers slow down as jobs go through."""
    row = await _one(doctor.url, "doctor_autovacuum")
    if not row["server_on"]:
        return Check(
            "vacuum",
            "warning",
            "autovacuum is off on the server: fetches slow down as jobs go through; set"
            " autovacuum = on (and autovacuum_naptime = 10s for thousands of jobs a second)",
        )
    if not row["table_on"]:
        return Check(
            "vacuum",
            "warning",
            "autovacuum is off for procrastinate_jobs: run"
            " ALTER TABLE procrastinate_jobs RESET (autovacuum_enabled)",
        )
    return Check("vacuum", "ok", f"autovacuum every {row['naptime']}")


CheckFunction = Callable[[Doctor], Awaitable[Check]]
#: Run once the database answers, in this order.
DATABASE_CHECKS: tuple[CheckFunction, ...] = (
    check_migrations,
    check_queues_served,
    check_schedules,
    check_backup_tools,
    check_last_backup,
    check_clock,
    check_notify,
    check_vacuum,
)


async def _guarded(check: CheckFunction, doctor: Doctor) -> Check:
    """A check that raises says so, rather than ending the run."""
    try:
        return await check(doctor)
    except (psycopg.Error, TaskhubError, OSError, sqlalchemy.exc.SQLAlchemyError) as exc:
        name = check.__name__.removeprefix("check_").replace("_", " ")
        message = exc.message if isinstance(exc, TaskhubError) else str(exc).strip()
        return Check(name, "fail", message.splitlines()[0] if message else type(exc).__name__)


async def run_checks(settings: Settings, url: str) -> list[Check]:
    """Every check: the apps first (the others need them), then the database's."""
    results = [await check_apps(Doctor(settings, url))]
    apps = None if results[0].status == "fail" else load_apps(settings)
    doctor = Doctor(settings, url, apps)
    results.append(await check_database(doctor))
    if results[-1].status == "fail":
        return results
    for check in DATABASE_CHECKS:
        results.append(await _guarded(check, doctor))
    return results


def failed(results: Sequence[Check]) -> bool:
    return any(result.status == "fail" for result in results)
