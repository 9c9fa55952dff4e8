"""Database backups: ``pg_dump`` in custom format, checked with ``pg_restore --list``, kept per
retention, every run recorded in ``taskhub.backups``.

The task (``backend/tasks/backups.py``) is the boundary: :func:`run_backup` gets its
``transaction`` factory and opens one short transaction per step (the 'running' row, the outcome,
retention), so a crash still leaves a visible row. The other helpers take a connection and never
commit, or run a PostgreSQL client binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import re
import shutil
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import BaseModel, Field

from backend.control import alerts
from backend.db import DictConnection
from backend.errors import TaskhubError
from backend.process.embedded import BIN_DIR as EMBEDDED_BIN_DIR
from backend.queries import QUERIES
from backend.settings import Settings

logger = logging.getLogger(__name__)

SUFFIX = ".dump"
PARTIAL_SUFFIX = ".partial"
#: pg_dump --verbose prints one such line per table whose rows it writes.
DUMPING_TABLE = re.compile(r'dumping contents of table "(?P<table>.+)"')
#: What pg_dump/pg_restore print when something goes wrong (``pg_dump: error: ...``).
PROBLEM = re.compile(r"^\S+: (error|detail|hint|warning): ")
VERSION = re.compile(r"\(PostgreSQL\) (?P<major>\d+)(?:\.\d+)?")
#: PostgreSQL 17+ clients start a restore with this setting, which older servers refuse.
TRANSACTION_TIMEOUT_LINE = "SET transaction_timeout = 0;"

ToolSource = Literal["embedded", "TASKHUB_PG_BIN_DIR", "PATH"]
TransactionFactory = Callable[[], AbstractAsyncContextManager[DictConnection]]


class BackupError(TaskhubError):
    """A backup could not be made or checked; the message says why and what to fix."""


class ProgressCallback(Protocol):
    def __call__(
        self,
        done: int | None = None,
        total: int | None = None,
        message: str | None = None,
        **counters: int,
    ) -> None: ...


# -- the client binaries ------------------------------------------------------------------


@dataclass(frozen=True)
class PgTools:
    """pg_dump, pg_restore and psql of one PostgreSQL installation."""

    bin_dir: Path
    major: int
    version: str  # as printed by ``pg_dump --version``
    source: ToolSource

    @property
    def pg_dump(self) -> Path:
        return self.bin_dir / "pg_dump"

    @property
    def pg_restore(self) -> Path:
        return self.bin_dir / "pg_restore"

    @property
    def psql(self) -> Path:
        return self.bin_dir / "psql"

    def describe(self) -> str:
        return f"{self.version} ({self.source}: {self.bin_dir})"


def server_major(server_version_num: int) -> int:
    """12 for 120004: the major version in ``server_version_num`` / ``conn.info.server_version``."""
    return server_version_num // 10_000


async def tool_version(binary: Path) -> tuple[int, str]:
    """The major version and the version line of a PostgreSQL client binary."""
    try:
        process = await asyncio.create_subprocess_exec(
            str(binary),
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise BackupError(f"cannot run {binary}: {exc.strerror or exc}") from None
    output, _ = await process.communicate()
    text = output.decode(errors="replace").strip()
    match = VERSION.search(text)
    if process.returncode != 0 or match is None:
        raise BackupError(f"{binary} --version did not print a PostgreSQL version: {text!r}")
    return int(match["major"]), text


async def _tools_in(bin_dir: Path, source: ToolSource) -> PgTools:
    dump_major, dump_version = await tool_version(bin_dir / "pg_dump")
    restore_major, _ = await tool_version(bin_dir / "pg_restore")
    if restore_major < dump_major:
        raise BackupError(
            f"{bin_dir}: pg_restore {restore_major} cannot read archives of pg_dump {dump_major}"
        )
    return PgTools(bin_dir=bin_dir, major=dump_major, version=dump_version, source=source)


async def select_tools(settings: Settings, server_version_num: int) -> PgTools:
    """The pg_dump/pg_restore to use against a server of that version.

    The embedded server uses the binaries it ships with. With ``DATABASE_URL``:
    ``TASKHUB_PG_BIN_DIR`` when set, else the ``pg_dump`` on PATH if its major version is at
    least the server's (pg_dump refuses newer servers), else the embedded package's binaries.
    """
    major = server_major(server_version_num)
    if settings.database_url is None:
        return await _tools_in(EMBEDDED_BIN_DIR, "embedded")
    if settings.pg_bin_dir is not None:
        try:
            tools = await _tools_in(settings.pg_bin_dir, "TASKHUB_PG_BIN_DIR")
        except BackupError as exc:
            raise BackupError(f"TASKHUB_PG_BIN_DIR={settings.pg_bin_dir}: {exc}") from None
        if tools.major < major:
            raise BackupError(
                f"TASKHUB_PG_BIN_DIR={settings.pg_bin_dir} has pg_dump {tools.major}, older than "
                f"the server ({major}): point it at PostgreSQL {major} or newer client tools"
            )
        return tools
    on_path = shutil.which("pg_dump")
    if on_path is not None:
        # Not resolved: /usr/bin/pg_dump may be a wrapper (Debian's pg_wrapper) that picks
        # the right version itself, and resolving it would lose that.
        with contextlib.suppress(BackupError):
            tools = await _tools_in(Path(on_path).parent, "PATH")
            if tools.major >= major:
                return tools
    tools = await _tools_in(EMBEDDED_BIN_DIR, "embedded")
    if tools.major < major:
        raise BackupError(
            f"no pg_dump for PostgreSQL {major}: set TASKHUB_PG_BIN_DIR to a directory with "
            f"PostgreSQL {major} or newer client tools"
        )
    return tools


def split_password(conninfo: str) -> tuple[str, dict[str, str]]:
    """The connection string without its password, and the environment that carries it.

    Command lines are visible to every user of the machine (``ps``); the environment is not.
    """
    params = conninfo_to_dict(conninfo)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


# -- running pg_dump and pg_restore ---------------------------------------------------------


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _problem_lines(lines: list[str] | deque[str]) -> str:
    problems = [line for line in lines if PROBLEM.match(line)]
    return " | ".join(problems[:6] or list(lines)[-3:]) or "no output"


@contextlib.asynccontextmanager
async def _running(
    *args: str, env: dict[str, str] | None = None, **kwargs: Any
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child process that is killed (and reaped) if the block is left early or cancelled."""
    process = await asyncio.create_subprocess_exec(
        *args, stdin=kwargs.pop("stdin", asyncio.subprocess.DEVNULL), env=env, **kwargs
    )
    try:
        yield process
    finally:
        await _stop(process)


async def run_pg_dump(
    tools: PgTools,
    conninfo: str,
    output: Path,
    on_table: Callable[[int, str], None],
) -> int:
    """Dump the database into ``output`` in custom format; returns the number of tables dumped.

    ``on_table(count, name)`` is called as pg_dump starts writing each table's rows.
    """
    dsn, env = split_password(conninfo)
    tables = 0
    tail: deque[str] = deque(maxlen=50)
    async with _running(
        str(tools.pg_dump),
        "--format=custom",
        "--verbose",
        "--no-password",
        f"--file={output}",
        f"--dbname={dsn}",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        limit=2**20,
    ) as process:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            if match := DUMPING_TABLE.search(line):
                tables += 1
                on_table(tables, match["table"])
            else:
                tail.append(line)
        returncode = await process.wait()
    if returncode != 0:
        raise BackupError(f"pg_dump failed (exit {returncode}): {_problem_lines(tail)}")
    return tables


async def verify_archive(tools: PgTools, archive: Path) -> int:
    """``pg_restore --list``: the archive's table of contents is readable; returns its entries."""
    async with _running(
        str(tools.pg_restore),
        "--list",
        str(archive),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    ) as process:
        stdout, stderr = await process.communicate()
    if process.returncode != 0:
        lines = stderr.decode(errors="replace").splitlines()
        raise BackupError(f"pg_restore --list cannot read {archive}: {_problem_lines(lines)}")
    listing = stdout.decode(errors="replace").splitlines()
    if not any(line.strip() == ";     Format: CUSTOM" for line in listing):
        raise BackupError(f"{archive} is not a custom-format archive")
    return sum(1 for line in listing if line.strip() and not line.startswith(";"))


async def restore_archive(
    tools: PgTools,
    archive: Path,
    conninfo: str,
    *,
    server_version_num: int,
    through_psql: bool | None = None,
) -> None:
    """Restore a backup into an existing, empty database, in one transaction.

    pg_restore 17+ starts with ``SET transaction_timeout = 0``, which servers before 17 refuse;
    for those (or with ``through_psql=True``) it goes through a script without that line, piped
    to psql. Otherwise pg_restore connects itself.
    """
    if through_psql is None:
        through_psql = tools.major >= 17 and server_major(server_version_num) < 17
    dsn, env = split_password(conninfo)
    if not through_psql:
        async with _running(
            str(tools.pg_restore),
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            f"--dbname={dsn}",
            str(archive),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        ) as process:
            _, stderr = await process.communicate()
        if process.returncode != 0:
            lines = stderr.decode(errors="replace").splitlines()
            raise BackupError(f"pg_restore failed: {_problem_lines(lines)}")
        return
    await _restore_through_psql(tools, archive, dsn, env)


async def _restore_through_psql(
    tools: PgTools, archive: Path, dsn: str, env: dict[str, str]
) -> None:
    async with (
        _running(
            str(tools.pg_restore),
            "--file=-",
            str(archive),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=2**24,
        ) as script,
        _running(
            str(tools.psql),
            "--no-password",
            "--quiet",
            "--no-psqlrc",
            "--single-transaction",
            "--set=ON_ERROR_STOP=1",
            f"--dbname={dsn}",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        ) as psql,
    ):
        assert script.stderr is not None
        assert psql.stderr is not None

        async def pump() -> None:
            assert script.stdout is not None
            assert psql.stdin is not None
            header = True
            try:
                async for line in script.stdout:
                    # Only the header's setting: the same text may be a row of table data later.
                    if header and line.rstrip(b"\r\n") == TRANSACTION_TIMEOUT_LINE.encode():
                        header = False
                        continue
                    if header and line.startswith((b"CREATE ", b"COPY ", b"ALTER ")):
                        header = False
                    psql.stdin.write(line)
                    await psql.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                # psql stopped at an error (its stderr says which): stop pg_restore too, or it
                # would block on a full pipe nobody reads.
                with contextlib.suppress(ProcessLookupError):
                    script.kill()
            finally:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    psql.stdin.close()

        _, script_text, psql_text = await asyncio.gather(
            pump(), script.stderr.read(), psql.stderr.read()
        )
        script_code, psql_code = await script.wait(), await psql.wait()
    if psql_code != 0:
        lines = psql_text.decode(errors="replace").splitlines()
        raise BackupError(f"restore through psql failed: {_problem_lines(lines)}")
    if script_code != 0:
        lines = script_text.decode(errors="replace").splitlines()
        raise BackupError(f"pg_restore failed: {_problem_lines(lines)}")


# -- records and retention ------------------------------------------------------------------


class BackupRecord(BaseModel):
    """One run of the backup task, as ``taskhub.backups`` keeps it."""

    id: int
    job_id: int | None
    attempt: int | None
    status: Literal["running", "succeeded", "failed"]
    path: str | None
    size_bytes: int | None
    tables: int | None
    toc_entries: int | None = Field(description="Entries pg_restore --list found in the file.")
    server_version: str | None
    pg_dump: str | None = Field(description="The pg_dump that wrote it, and where it came from.")
    error: str | None
    started_at: datetime.datetime
    finished_at: datetime.datetime | None
    duration_seconds: float | None
    deleted_at: datetime.datetime | None = Field(description="When retention deleted the file.")


async def _one(conn: DictConnection, query: str, params: dict[str, Any]) -> BackupRecord:
    cursor = await conn.execute(QUERIES[query], params)
    row = await cursor.fetchone()
    if row is None:
        raise BackupError(f"backup record missing ({query} {params})")
    return BackupRecord.model_validate(row)


async def list_backups(
    conn: DictConnection, *, limit: int = 20, status: str | None = None
) -> list[BackupRecord]:
    """Recent backup runs, newest first (for ``taskhub backups`` and the API)."""
    cursor = await conn.execute(QUERIES["list_backups"], {"limit": limit, "status": status})
    return [BackupRecord.model_validate(row) for row in await cursor.fetchall()]


async def get_backup(conn: DictConnection, backup_id: int) -> BackupRecord | None:
    cursor = await conn.execute(QUERIES["get_backup"], {"backup_id": backup_id})
    row = await cursor.fetchone()
    return BackupRecord.model_validate(row) if row else None


def partial_path(path: Path) -> Path:
    """Where pg_dump writes until the file is checked: never mistaken for a backup."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def backup_file_name(database: str, started_at: datetime.datetime, backup_id: int) -> str:
    """``taskhub-20260301T030000Z-42.dump``: sorts by time; UTC, so DST never reorders."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", database) or "database"
    stamp = started_at.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{safe}-{stamp}-{backup_id}{SUFFIX}"


class RetentionReport(BaseModel):
    deleted: list[str] = Field(default_factory=list, description="Files retention removed.")
    errors: list[str] = Field(default_factory=list, description="Files it could not remove.")


async def apply_retention(
    conn: DictConnection, *, keep: int, keep_days: float, now: datetime.datetime
) -> RetentionReport:
    """Delete the files of successful backups beyond the newest ``keep`` (and, with
    ``keep_days`` > 0, older than that), marking their rows; failed runs never count as kept.

    A file already gone counts as deleted; one that cannot be removed stays listed, to be tried
    again next time, and is reported in ``errors``.
    """
    cursor = await conn.execute(
        QUERIES["backups_past_retention"], {"keep": keep, "keep_days": keep_days, "now": now}
    )
    report = RetentionReport()
    removed: list[int] = []
    for row in await cursor.fetchall():
        path = Path(row["path"]) if row["path"] else None
        try:
            if path is not None:
                path.unlink(missing_ok=True)
        except OSError as exc:
            report.errors.append(f"{path}: {exc.strerror or exc}")
            continue
        removed.append(int(row["id"]))
        if path is not None:
            report.deleted.append(str(path))
    if removed:
        await conn.execute(QUERIES["mark_backups_deleted"], {"ids": removed})
    return report


# -- one run --------------------------------------------------------------------------------


class BackupReport(BaseModel):
    """What the backup task returns (the job's result)."""

    backup_id: int
    path: str
    size_bytes: int
    duration_seconds: float | None
    tables: int
    toc_entries: int
    pg_dump: str
    retention: RetentionReport


@dataclass(frozen=True)
class BackupRun:
    """Where one run writes, and how to reach the database it dumps."""

    settings: Settings
    conninfo: str
    job_id: int | None
    attempt: int | None
    transaction: TransactionFactory
    progress: ProgressCallback


async def _start(run: BackupRun) -> tuple[BackupRecord, Path, int, int]:
    """One short transaction: close rows of interrupted runs, then the 'running' row."""
    async with run.transaction() as conn:
        for stale in await _fetch_all(conn, "fail_interrupted_backups", {"job_id": run.job_id}):
            if stale.path:
                with contextlib.suppress(OSError):  # best effort: the alert names the path
                    partial_path(Path(stale.path)).unlink(missing_ok=True)
            await alerts.raise_alert(
                conn,
                kind="backup_failed",
                message=f"backup {stale.id} was interrupted (its worker stopped)",
                details={"backup_id": stale.id, "path": stale.path, "error": stale.error},
                job_id=stale.job_id,
            )
        cursor = await conn.execute(QUERIES["backup_table_count"])
        row = await cursor.fetchone()
        tables = int(row["tables"]) if row else 0
        version_num = conn.info.server_version
        record = await _one(
            conn,
            "start_backup",
            {
                "job_id": run.job_id,
                "attempt": run.attempt,
                "server_version": conn.info.parameter_status("server_version"),
            },
        )
        name = backup_file_name(conn.info.dbname, record.started_at, record.id)
        path = run.settings.backups_path / name
        record = await _one(conn, "set_backup_path", {"backup_id": record.id, "path": str(path)})
    return record, path, tables, version_num


async def _fetch_all(
    conn: DictConnection, query: str, params: dict[str, Any]
) -> list[BackupRecord]:
    cursor = await conn.execute(QUERIES[query], params)
    return [BackupRecord.model_validate(row) for row in await cursor.fetchall()]


def _prepare_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(
            f"cannot create the backup directory {directory} (TASKHUB_BACKUP_DIR): "
            f"{exc.strerror or exc}"
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BackupError(f"the backup directory {directory} (TASKHUB_BACKUP_DIR) is not writable")


async def _dump(
    run: BackupRun, path: Path, tools: PgTools, expected_tables: int
) -> tuple[int, int, int]:
    """pg_dump to the partial name, check it, then rename: only checked files bear the name."""
    _prepare_directory(path.parent)
    partial = partial_path(path)
    total = expected_tables

    def on_table(count: int, table: str) -> None:
        nonlocal total
        total = max(total, count)
        run.progress(done=count, total=total, message=f"dumping {table}", tables_dumped=count)

    try:
        run.progress(done=0, total=total, message="starting pg_dump", tables_dumped=0)
        tables = await run_pg_dump(tools, run.conninfo, partial, on_table)
        message = "checking with pg_restore --list"
        run.progress(done=tables, total=total, message=message, tables_dumped=tables)
        toc_entries = await verify_archive(tools, partial)
        size = _publish(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return size, tables, toc_entries


def _publish(partial: Path, path: Path) -> int:
    """Give the checked file its final name (readable by its owner only); returns its size."""
    partial.chmod(0o600)
    partial.rename(path)
    return path.stat().st_size


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "interrupted: the job was cancelled or its worker stopped"
    if isinstance(exc, TaskhubError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


async def run_backup(run: BackupRun) -> BackupReport:
    """Dump, check, record, prune. A failure is recorded, alerted, and raised: never silent."""
    record, path, expected_tables, version_num = await _start(run)
    tools: PgTools | None = None
    try:
        tools = await select_tools(run.settings, version_num)
        size, tables, toc_entries = await _dump(run, path, tools, expected_tables)
    except BaseException as exc:
        error = _describe_failure(exc)
        try:
            async with run.transaction() as conn:
                await _one(
                    conn,
                    "fail_backup",
                    {
                        "backup_id": record.id,
                        "error": error,
                        "pg_dump": tools.describe() if tools else None,
                    },
                )
                await alerts.raise_alert(
                    conn,
                    kind="backup_failed",
                    message=f"database backup failed: {error}",
                    details={"backup_id": record.id, "path": str(path), "error": error},
                    job_id=run.job_id,
                )
        except Exception:
            logger.exception("could not record the failure of backup %s", record.id)
        if isinstance(exc, Exception) and not isinstance(exc, BackupError):
            raise BackupError(error) from exc
        raise

    async with run.transaction() as conn:
        record = await _one(
            conn,
            "finish_backup",
            {
                "backup_id": record.id,
                "size_bytes": size,
                "tables": tables,
                "toc_entries": toc_entries,
                "pg_dump": tools.describe(),
            },
        )
    logger.info(
        "backup %s written: %s (%s bytes, %s tables)",
        record.id,
        path,
        size,
        tables,
        extra={"action": "backup_succeeded", "backup_id": record.id},
    )

    async with run.transaction() as conn:
        retention = await apply_retention(
            conn,
            keep=run.settings.backup_keep,
            keep_days=run.settings.backup_keep_days,
            now=datetime.datetime.now(datetime.UTC),
        )
        if retention.errors:
            await alerts.raise_alert(
                conn,
                kind="backup_retention_failed",
                severity="warning",
                message=f"retention could not delete {len(retention.errors)} old backup file(s)",
                details={"errors": retention.errors},
                job_id=run.job_id,
            )
    run.progress(
        done=tables,
        total=tables,
        message=f"backup {record.id} written and checked ({toc_entries} entries)",
        tables_dumped=tables,
    )
    return BackupReport(
        backup_id=record.id,
        path=str(path),
        size_bytes=size,
        duration_seconds=record.duration_seconds,
        tables=tables,
        toc_entries=toc_entries,
        pg_dump=tools.describe(),
        retention=retention,
    )
