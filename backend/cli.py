"""The ``taskhub`` command: up, api, worker, migrate, defer, jobs."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TextIO

import psycopg
from procrastinate.exceptions import ConnectorException
from procrastinate.jobs import Job
from psycopg.rows import dict_row
from pythonjsonlogger.json import JsonFormatter

from backend import defer
from backend.auth import parse_tokens
from backend.control import doctor, jobs, queues, schedules, stats, workers
from backend.control.waiting import JobWatcher, reuse, wait_until_finished
from backend.db import DictConnection, check_database, describe_database
from backend.declare.apps import LoadedApps, load_apps
from backend.declare.schedules import configured_schedules
from backend.defer import QUEUE_PATTERN
from backend.errors import TaskhubError
from backend.maintenance import backups
from backend.process import migrate
from backend.process.embedded import database_url
from backend.runtime.progress import Progress
from backend.settings import Settings, load_settings

logger = logging.getLogger("taskhub")

MAX_JOB_ID = 2**63 - 1
MAX_LIMIT = 500  # jobs per page, as over REST
BAR_WIDTH = 10
FOLLOW_REFRESH = 0.5  # seconds between progress reads while following a job
ERROR_WIDTH = 60  # characters of the last error a table row shows
DEAD_LETTERS = """\
Dead letters are the jobs that failed their last attempt (state FAILURE):
  taskhub jobs list --state FAILURE     list them, newest first
  taskhub jobs show ID                  read one's errors and last traceback
  taskhub jobs retry ID                 run it again
"""


def _queues(value: str) -> list[str]:
    queues = [name.strip() for name in value.split(",") if name.strip()]
    if not queues:
        raise argparse.ArgumentTypeError(
            "give at least one queue name, e.g. --queues default,emails"
        )
    return queues


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _json_object(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. \'{"message": "hi"}\'')
    return parsed


def _job_id(value: str) -> int:
    """A job id as PostgreSQL's bigint takes it, so a typo fails here, not in a query."""
    number = _positive(value)
    if number > MAX_JOB_ID:
        raise argparse.ArgumentTypeError(f"{value} is too large for a job id")
    return number


def _limit(value: str) -> int:
    """The page size REST allows too."""
    number = _positive(value)
    if number > MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"at most {MAX_LIMIT} jobs per page")
    return number


def _status(value: str) -> jobs.JobStatus:
    """procrastinate's status, in any case, so ``--status FAILED`` still works."""
    try:
        return jobs.JobStatus(value.strip().lower())
    except ValueError:
        choices = ", ".join(jobs.JobStatus)
        raise argparse.ArgumentTypeError(f"{value!r} is not a status; use {choices}") from None


def _state(value: str) -> jobs.JobState:
    """A Celery state, in any case; a status given instead gets pointed to --status."""
    try:
        return jobs.JobState(value.strip().upper())
    except ValueError:
        choices = ", ".join(jobs.JobState)
        hint = ""
        if value.strip().lower() in jobs.JobStatus.__members__:
            hint = f" ({value.strip().lower()} is a status: use --status for it)"
        raise argparse.ArgumentTypeError(f"{value!r} is not a state; use {choices}{hint}") from None


def _cursor(value: str) -> str:
    """Check the cursor before connecting: a bad one is the user's input, exit 2."""
    try:
        jobs.decode_cursor(value)
    except jobs.InvalidCursor as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return value


def _queue_name(value: str) -> str:
    if not re.fullmatch(QUEUE_PATTERN, value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a queue name (letters, digits, '_', '.', ':', '-'; at most 40)"
        )
    return value


def _add_queues_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """``taskhub queues [list|pause NAME|resume NAME]``."""
    queues_cmd = commands.add_parser(
        "queues", help="jobs per queue; pause or resume a queue", description="Queues."
    )
    actions = queues_cmd.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="jobs per status in each queue, and which are paused")
    for name, text in (
        ("pause", "workers stop taking this queue's jobs (running ones finish); audited"),
        ("resume", "workers take this queue's jobs again, at once; audited"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("name", type=_queue_name, help="queue name")


def queues_table(rows: Sequence[queues.QueueInfo]) -> str:
    header = f"{'QUEUE':<40} {'TODO':>7} {'DOING':>6} {'OLDEST WAITING':<20} PAUSED"
    lines = [header]
    for row in rows:
        oldest = f"{row.oldest_todo_at:%Y-%m-%d %H:%M:%S}" if row.oldest_todo_at else ""
        paused = f"yes, by {row.paused_by}" if row.paused else ""
        lines.append(f"{row.name:<40} {row.todo:>7} {row.doing:>6} {oldest:<20} {paused}")
    return "\n".join(lines) if rows else "no queues yet"


async def _queues_action(url: str, args: argparse.Namespace) -> int:
    async with await _connect(url) as conn:
        if args.action in (None, "list"):
            print(queues_table(await queues.list_queues(conn)))
            return 0
        change = queues.pause_queue if args.action == "pause" else queues.resume_queue
        queue = await change(conn, args.name, actor=_actor())
        await conn.commit()
    print(f"queue {queue.name}: {'paused' if queue.paused else 'running'} ({queue.todo} waiting)")
    return 0


def workers_table(rows: Sequence[workers.WorkerInfo]) -> str:
    header = (
        f"{'ID':>6} {'HOST':<20} {'PID':>7} {'STATE':<6} {'QUEUES':<20} {'SLOTS':>5} "
        f"{'STARTED (UTC)':<19} {'LAST HEARTBEAT':<19} {'RUNNING':>7} {'DONE':>9}"
    )
    lines = [header]
    for row in rows:
        state = "live" if row.alive else "dead"
        queue_list = ",".join(row.queues) if row.queues is not None else "all"
        started = row.started_at.astimezone(datetime.UTC)
        beat = row.last_heartbeat.astimezone(datetime.UTC)
        lines.append(
            f"{row.id:>6} {_shorten(row.host, 20):<20} {row.pid:>7} {state:<6} "
            f"{_shorten(queue_list, 20):<20} {row.concurrency:>5} {started:%Y-%m-%d %H:%M:%S} "
            f"{beat:%Y-%m-%d %H:%M:%S} {row.jobs_running:>7} {row.jobs_done:>9}"
        )
    return "\n".join(lines) if rows else "no workers yet"


PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _period(text: str) -> datetime.timedelta:
    """``90s``, ``15m``, ``1h``, ``7d`` (or plain seconds), at most 366 days."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a period such as 15m, 1h or 7d")
    seconds = float(match.group(1)) * PERIOD_UNITS[match.group(2) or "s"]
    if not 0 < seconds <= 366 * 86_400:
        raise argparse.ArgumentTypeError(f"{text!r}: give a period above 0 and up to 366d")
    return datetime.timedelta(seconds=seconds)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def stats_table(answer: stats.StatsAnswer) -> str:
    """One row per task and queue over the whole period (one step)."""
    header = (
        f"{'TASK':<32} {'QUEUE':<16} {'SUCCEEDED':>9} {'FAILED':>6} {'RETRIED':>7} "
        f"{'ABORTED':>7} {'P50 s':>8} {'P95 s':>8} {'P99 s':>8}"
    )
    lines = [header]
    for series in sorted(answer.series, key=lambda item: (item.task, item.queue)):
        for point in series.points:
            lines.append(
                f"{series.task:<32} {series.queue:<16} {point.succeeded:>9} {point.failed:>6} "
                f"{point.retried:>7} {point.aborted:>7} {_seconds(point.p50):>8} "
                f"{_seconds(point.p95):>8} {_seconds(point.p99):>8}"
            )
    return "\n".join(lines) if len(lines) > 1 else "no finished jobs in that period"


def _stats_command(settings: Settings, args: argparse.Namespace) -> int:
    """``taskhub stats``: one step over the period, so one row per task and queue."""

    async def show(url: str) -> int:
        until = datetime.datetime.now(datetime.UTC)
        since = until - args.since
        step = max(60, int(args.since.total_seconds()))
        async with await _connect(url) as conn:
            answer = await stats.series(conn, since, until, step, args.task, args.queue)
        print(answer.model_dump_json(indent=2) if args.json else stats_table(answer))
        return 0

    return _on_database(settings, show)


def _workers_command(settings: Settings, args: argparse.Namespace) -> int:
    async def show(url: str) -> int:
        async with await _connect(url) as conn:
            rows = await workers.list_workers(conn, settings.rescue_after)
        if args.json:
            for row in rows:
                print(row.model_dump_json())
        else:
            print(workers_table(rows))
        return 0

    return _on_database(settings, show)


def _confirm_purge(name: str, assume_yes: bool, stdin: TextIO) -> bool:
    """``--yes``, or a "y" typed at a terminal; no terminal and no ``--yes``: refuse."""
    if assume_yes:
        return True
    if not stdin.isatty():
        print(
            f"taskhub: error: not purging queue {name}: no terminal to confirm on; "
            "add --yes to purge without asking",
            file=sys.stderr,
        )
        return False
    answer = input(f"delete every waiting job of queue {name}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _purge_command(settings: Settings, args: argparse.Namespace) -> int:
    """``taskhub purge QUEUE``: the queue's waiting jobs deleted, audited as ``cli:<user>``."""
    if not _confirm_purge(args.name, args.yes, sys.stdin):
        return 1

    async def purge(url: str) -> int:
        async with await _connect(url) as conn:
            result = await queues.purge(conn, args.name, actor=_actor())
            await conn.commit()
        print(f"queue {result.name}: {result.purged} waiting jobs deleted")
        return 0

    return _on_database(settings, purge)


def _doctor_command(settings: Settings) -> int:
    """``taskhub doctor``: each check's line; exit 1 when any failed (warnings pass)."""
    with database_url(settings) as url:
        results = asyncio.run(doctor.run_checks(settings, url))
    for result in results:
        print(result.line())
    return 1 if doctor.failed(results) else 0


def _on_database(settings: Settings, action: Callable[[str], Coroutine[Any, Any, int]]) -> int:
    """Run ``action(url)`` on DATABASE_URL or the embedded server, once it is migrated
    ("run `taskhub migrate`" rather than a missing-relation traceback)."""
    with database_url(settings) as url:
        check_database(url)
        return asyncio.run(action(url))


def _queues_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run a ``queues`` action on DATABASE_URL or the embedded server, like ``jobs``."""
    return _on_database(settings, lambda url: _queues_action(url, args))


def schedules_table(rows: Sequence[schedules.ScheduleView]) -> str:
    header = f"{'TASK':<32} {'CRON':<20} {'NEXT RUN':<26} LAST RUN"
    lines = [header]
    for row in rows:
        cron = row.cron or "off"
        next_run = f"{row.next_run_at:%Y-%m-%d %H:%M:%S %Z}" if row.next_run_at else ""
        last = row.last_run
        if last is None:
            last_run = "never"
        else:
            job = f"job {last.job_id} {last.status}" if last.job_id else "job pruned"
            tick = last.tick_at.astimezone(row.next_run_at.tzinfo if row.next_run_at else None)
            last_run = f"{tick:%Y-%m-%d %H:%M:%S}: {job}"
        lines.append(f"{row.task:<32} {cron:<20} {next_run:<26} {last_run}")
    return "\n".join(lines) if rows else "no schedules"


def _schedules_command(settings: Settings, apps: LoadedApps) -> int:
    """``taskhub schedules``: the table, in TASKHUB_TIMEZONE."""

    async def show(url: str) -> int:
        async with await _connect(url) as conn:
            rows = await schedules.list_schedules(conn, settings, blueprints=apps.blueprints)
        print(f"timezone {settings.timezone}")
        print(schedules_table(rows))
        return 0

    # A bad TASKHUB_SCHEDULES, before any connection.
    configured_schedules(settings, apps.blueprints)
    return _on_database(settings, show)


def backups_table(rows: Sequence[backups.BackupRecord]) -> str:
    header = f"{'ID':>5} {'STARTED (UTC)':<20} {'STATUS':<10} {'SIZE':>10} {'SECONDS':>8} FILE"
    lines = [header]
    for row in rows:
        size = f"{row.size_bytes / 1_048_576:.1f} MiB" if row.size_bytes is not None else ""
        seconds = f"{row.duration_seconds:.1f}" if row.duration_seconds is not None else ""
        started = row.started_at.astimezone(datetime.UTC)
        where = row.error if row.status == "failed" else row.path or ""
        if row.deleted_at:
            where = f"{where} (deleted by retention)"
        lines.append(
            f"{row.id:>5} {started:%Y-%m-%d %H:%M:%S} {row.status:<10} {size:>10} "
            f"{seconds:>8} {where}"
        )
    return "\n".join(lines) if rows else "no backups yet"


def _backups_command(settings: Settings, args: argparse.Namespace) -> int:
    async def show(url: str) -> int:
        async with await _connect(url) as conn:
            rows = await backups.list_backups(conn, limit=args.limit)
        if args.json:
            for row in rows:
                print(row.model_dump_json())
        else:
            print(backups_table(rows))
        return 0

    return _on_database(settings, show)


def _add_jobs_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """``taskhub jobs list|show|retry|cancel``: what operators do without the REST API."""
    jobs_cmd = commands.add_parser(
        "jobs",
        help="list, show, retry or cancel jobs",
        description="Read and control jobs.\n"
        "`taskhub jobs list --state FAILURE` lists the dead letters.",
        epilog=DEAD_LETTERS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = jobs_cmd.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser(
        "list",
        help="jobs newest first; --state FAILURE lists the dead letters",
        description="Jobs newest first, one page at a time.\n"
        "`taskhub jobs list --state FAILURE` lists the dead letters.",
        epilog=DEAD_LETTERS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument(
        "--status",
        dest="statuses",
        action="append",
        type=_status,
        metavar="STATUS",
        help=f"procrastinate status ({', '.join(jobs.JobStatus)}); repeatable",
    )
    listing.add_argument(
        "--state",
        dest="states",
        action="append",
        type=_state,
        metavar="STATE",
        help=f"Celery state ({', '.join(jobs.JobState)}); repeatable. "
        "FAILURE lists the dead letters",
    )
    listing.add_argument("--task", help="only this task, e.g. taskhub.ping")
    listing.add_argument("--queue", help="only this queue")
    listing.add_argument(
        "--limit", type=_limit, default=50, help=f"jobs per page (default 50, at most {MAX_LIMIT})"
    )
    listing.add_argument(
        "--cursor", type=_cursor, help="the next cursor a previous page printed (older jobs)"
    )
    listing.add_argument("--json", action="store_true", help="print the page as JSON")

    show = actions.add_parser(
        "show",
        help="a job's status, progress, result and errors",
        description="A job's status, progress, result and errors, with the last traceback.",
    )
    show.add_argument("id", type=_job_id, help="job id")
    show.add_argument("--json", action="store_true", help="print the job as JSON")
    show.add_argument(
        "--follow",
        action="store_true",
        help="show progress until the job finishes; exit 0 if it succeeded, 1 if not",
    )

    retry = actions.add_parser(
        "retry",
        help="run a failed, cancelled or aborted job again",
        description="Run a failed, cancelled or aborted job again (audited).",
    )
    cancel = actions.add_parser(
        "cancel",
        help="cancel a waiting job, or abort a running one",
        description="Cancel a waiting job, or ask a running one to abort (audited).",
    )
    for command in (retry, cancel):
        command.add_argument("id", type=_job_id, help="job id")
        command.add_argument("--json", action="store_true", help="print the job as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskhub", description="Background tasks on PostgreSQL alone."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="migrate, then run the API and the workers")
    api = commands.add_parser("api", help="run the REST API")
    for command in (up, api):
        command.add_argument("--host", help="API address (TASKHUB_API_HOST)")
        command.add_argument("--port", type=int, help="API port (TASKHUB_API_PORT)")

    up.add_argument(
        "--demo",
        action="store_true",
        help="also serve a stand-in ERP and scheduling API and point the examples at them",
    )
    worker = commands.add_parser("worker", help="run the workers (one process per core)")
    for command in (up, worker):
        command.add_argument("--queues", type=_queues, help="comma-separated queues (default: all)")
        command.add_argument(
            "--concurrency", type=_positive, help="jobs run at once by each worker process"
        )
        command.add_argument(
            "--processes",
            type=_positive,
            help="worker processes (TASKHUB_WORKER_PROCESSES; default: one per core)",
        )
        command.add_argument(
            "--max-jobs",
            type=_positive,
            help="recycle a worker process after this many jobs (TASKHUB_WORKER_MAX_JOBS)",
        )
        command.add_argument(
            "--max-memory-mb",
            type=_positive,
            help="recycle a worker process above this resident memory, in MB "
            "(TASKHUB_WORKER_MAX_MEMORY_MB)",
        )
    # Set by the supervisor on the worker processes it starts (backend/process/supervisor.py).
    worker.add_argument("--worker-index", type=_positive, help=argparse.SUPPRESS)
    worker.add_argument("--supervisor-pid", type=_positive, help=argparse.SUPPRESS)

    migrate_cmd = commands.add_parser("migrate", help="upgrade the schema to the latest revision")
    migrate_cmd.add_argument(
        "--downgrade", metavar="REVISION", help="downgrade to REVISION (e.g. base)"
    )

    defer = commands.add_parser("defer", help="enqueue a job")
    defer.add_argument("task", help="task name, e.g. taskhub.ping")
    defer.add_argument("--args", type=_json_object, default={}, help="arguments as a JSON object")
    defer.add_argument("--queue")
    defer.add_argument("--priority", type=int)
    defer.add_argument("--schedule-in", type=float, metavar="SECONDS")
    defer.add_argument("--lock")
    defer.add_argument("--queueing-lock")

    _add_jobs_parser(commands)
    _add_queues_parser(commands)
    commands.add_parser(
        "schedules",
        help="periodic tasks: cron, timezone, next run, last run",
        description="Periodic tasks, built-in maintenance included (TASKHUB_TIMEZONE, "
        "TASKHUB_SCHEDULES).",
    )
    stats_cmd = commands.add_parser(
        "stats",
        help="per task and queue: outcomes and duration percentiles over a period",
        description="Outcomes and duration percentiles per task and queue, from the statistics "
        "kept after jobs are pruned (rolled up every minute).",
    )
    stats_cmd.add_argument("--task", help="only this task")
    stats_cmd.add_argument("--queue", help="only this queue")
    stats_cmd.add_argument(
        "--since",
        type=_period,
        default=datetime.timedelta(hours=1),
        metavar="PERIOD",
        help="how far back: 90s, 15m, 1h (default), 7d",
    )
    stats_cmd.add_argument("--json", action="store_true", help="print the answer as JSON")
    backups_cmd = commands.add_parser(
        "backups",
        help="recent backup runs: file, size, duration, status",
        description="Runs of taskhub.backup_database, newest first (defer it to back up now).",
    )
    backups_cmd.add_argument("--limit", type=_positive, default=20, help="runs shown (20)")
    backups_cmd.add_argument("--json", action="store_true", help="JSON lines")
    workers_cmd = commands.add_parser(
        "workers",
        help="worker processes: host, pid, queues, heartbeat, jobs running and done",
        description="Every worker process, live ones first; dead ones stay listed 7 days.",
    )
    workers_cmd.add_argument("--json", action="store_true", help="JSON lines")
    purge = commands.add_parser(
        "purge",
        help="delete a queue's waiting jobs (audited)",
        description="Delete the queue's waiting jobs (todo); running ones go on. Asks first.",
    )
    purge.add_argument("name", type=_queue_name, help="queue name")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    commands.add_parser(
        "hash-password",
        help="hash a dashboard password for TASKHUB_DASHBOARD_USERS",
        description="Reads a password (asked twice on a terminal, else one line of standard "
        "input) and prints its scrypt hash: put it in TASKHUB_DASHBOARD_USERS as "
        "name=scope:hash. The password itself is never stored.",
    )
    commands.add_parser(
        "doctor",
        help="check the database, migrations, apps, workers, schedules, backups, clock, NOTIFY",
        description="Each check prints ok or what to do; exit 1 when one fails.",
    )
    _add_app_option(parser)
    return parser


def _add_app_option(parser: argparse.ArgumentParser) -> None:
    """``--app MODULE`` on every command, repeatable, added to TASKHUB_APPS."""
    subcommands = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    if not subcommands:
        parser.add_argument(
            "--app",
            dest="apps",
            action="append",
            default=argparse.SUPPRESS,
            metavar="MODULE",
            help="load this app (module or module:attribute) besides TASKHUB_APPS; repeatable",
        )
    for action in subcommands:
        for subparser in dict.fromkeys(action.choices.values()):
            _add_app_option(subparser)


def _configure_logging(settings: Settings, process: str = "") -> None:
    """``process`` (``[worker 2] ``) tells the lines of several worker processes apart."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                static_fields={"process": process.strip(" []")} if process else None,
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {process}%(name)s: %(message)s")
        )
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    if settings.log_level != "DEBUG":
        # Start-up chatter; what matters is printed by taskhub itself.
        for name in ("alembic", "procrastinate.blueprints", "procrastinate.periodic"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _settings_for(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    for option, field in (
        ("host", "api_host"),
        ("port", "api_port"),
        ("queues", "worker_queues"),
        ("concurrency", "worker_concurrency"),
        ("processes", "worker_processes"),
        ("max_jobs", "worker_max_jobs"),
        ("max_memory_mb", "worker_max_memory_mb"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            overrides[field] = value
    if getattr(args, "apps", None):
        overrides["apps"] = [*load_settings().apps, *args.apps]
    return load_settings(**overrides)


def _where(settings: Settings, url: str) -> str:
    if settings.database_url:
        return describe_database(url)
    return f"embedded PostgreSQL in {settings.embedded_data_dir}, database taskhub"


def _api_auth(settings: Settings) -> tuple[str, str]:
    """The banner's token line and the curl header, so the printed commands work as copied."""
    if parse_tokens(settings.tokens):
        return "  tokens:   from TASKHUB_TOKENS", '-H "Authorization: Bearer $TASKHUB_TOKEN"'
    # The API serves the same generated token (created here on first use).
    secret = settings.api_tokens()[0].secret
    where = settings.data_dir / "admin-token"
    return (
        f"  token:    {secret} (admin; kept in {where})",
        f"-H 'Authorization: Bearer {secret}'",
    )


def _serve_demo(settings: Settings) -> None:
    """``taskhub up --demo``: both example apps, each with its stand-in served beside."""
    from backend.examples.demo import TRY_LINES, demo

    with demo(settings) as (with_examples, lines):
        _serve(
            with_examples,
            load_apps(with_examples),
            api=True,
            worker=True,
            migrate_first=True,
            demo_lines=lines,
            demo_try=TRY_LINES,
        )


def _serve(
    settings: Settings,
    apps: LoadedApps,
    *,
    api: bool,
    worker: bool,
    migrate_first: bool,
    demo_lines: Sequence[str] = (),
    demo_try: Sequence[str] = (),
    quiet: bool = False,
    worker_index: int | None = None,
) -> None:
    """Run the API and/or the workers until a signal; ``quiet`` (a supervised worker process,
    number ``worker_index``) prints nothing: its supervisor speaks for it."""
    from backend.process.runner import WorkerOptions, bind_api_socket, run_services

    sock = bind_api_socket(settings.api_host, settings.api_port) if api else None
    if worker and not api:
        from backend.process.supervisor import lower_cpu_priority

        lower_cpu_priority(settings.worker_nice)
    base = f"http://{settings.api_host}:{settings.api_port}"
    with database_url(settings) as url:
        if migrate_first:
            migrate.upgrade(url, apps=apps.apps)
        elif worker:
            check_database(url)
        options = (
            WorkerOptions(
                queues=settings.worker_queues,
                concurrency=settings.worker_concurrency,
                processes=settings.worker_process_count,
                max_jobs=settings.worker_max_jobs,
                max_memory_mb=settings.worker_max_memory_mb,
                index=worker_index,
            )
            if worker
            else None
        )
        token_line, auth = _api_auth(settings) if api else ("", "")

        def announce() -> None:
            lines = ["", "taskhub is up", f"  database: {_where(settings, url)}"]
            if api:
                lines.append(f"  API:      {base}  (OpenAPI docs: {base}/docs)")
                lines.append(f"  dashboard: {base}/dashboard  (log in with the token)")
                lines.append(token_line)
            if options:
                queues = ",".join(options.queues) if options.queues else "all queues"
                processes = (
                    f"in each of {options.processes} processes"
                    if options.processes > 1
                    else "in 1 process"
                )
                lines.append(f"  worker:   {queues}, concurrency {options.concurrency} {processes}")
                limits = [
                    f"{options.max_jobs} jobs" if options.max_jobs else "",
                    f"{options.max_memory_mb} MB" if options.max_memory_mb else "",
                ]
                if any(limits):
                    each = " or ".join(filter(None, limits))
                    lines.append(f"            each process recycled after {each}")
            lines += demo_lines
            if api:
                lines += [
                    "Defer a job and read it back:",
                    f"  curl -s -X POST {base}/jobs {auth} -H 'content-type: application/json' "
                    '-d \'{"task": "taskhub.ping", "args": {"message": "hello"}}\'',
                    f"  curl -s {auth} '{base}/jobs?task=taskhub.ping&limit=1'",
                ]
            if api:
                lines += [line.format(auth=auth, base=base) for line in demo_try]
            lines.append("Stop with Ctrl-C.")
            print("\n".join(lines), flush=True)

        ready = None if quiet else announce
        asyncio.run(
            run_services(
                settings,
                url,
                apps,
                api_socket=sock,
                worker=options,
                on_ready=ready,
                supervised=quiet,
            )
        )
    if not quiet:
        print("taskhub stopped", flush=True)


def _worker_process(settings: Settings, apps: LoadedApps, args: argparse.Namespace) -> int:
    """One worker process a ``taskhub worker/up --processes N`` supervisor started; its exit
    code tells the supervisor when it stopped to be recycled."""
    from backend.process.supervisor import stop_with_parent
    from backend.runtime.recycling import RECYCLE_EXIT_CODE, WorkerRecycled

    if args.supervisor_pid is not None:
        stop_with_parent(args.supervisor_pid)
    try:
        _serve(
            settings,
            apps,
            api=False,
            worker=True,
            migrate_first=False,
            quiet=True,
            worker_index=args.worker_index,
        )
    except WorkerRecycled:
        return RECYCLE_EXIT_CODE
    return 0


def _migrate(settings: Settings, apps: LoadedApps, downgrade_to: str | None) -> None:
    """taskhub's schema, then the schema of each enabled app that has migrations."""
    with_schemas = [app.name for app in apps.apps if app.migrations is not None]
    also = f" (and the schemas of {', '.join(with_schemas)})" if with_schemas else ""
    with database_url(settings) as url:
        if downgrade_to:
            migrate.downgrade(url, downgrade_to, apps=apps.apps)
            also = also if downgrade_to == "base" else ""
            print(f"downgraded {_where(settings, url)} to {downgrade_to}{also}")
        else:
            migrate.upgrade(url, apps=apps.apps)
            print(f"migrated {_where(settings, url)} to head{also}")


def _defer(settings: Settings, apps: LoadedApps, args: argparse.Namespace) -> None:
    # Validate everything before touching the database: bad input starts nothing.
    request = defer.DeferRequest.parse(
        {
            "task": args.task,
            "args": args.args,
            "queue": args.queue,
            "priority": args.priority,
            "schedule_in": args.schedule_in,
            "lock": args.lock,
            "queueing_lock": args.queueing_lock,
        }
    )
    job = defer.make_job(apps.task(request.task), request.args, **request.options())
    with database_url(settings) as url:
        shown = jobs.masked(asyncio.run(_insert_and_read(url, job)), apps.mask_args)
        print(shown.model_dump_json(indent=2))


async def _insert_and_read(url: str, job: Job) -> jobs.JobView:
    async with await _connect(url) as conn:
        async with conn.transaction():
            [job_id] = await defer.insert_jobs(conn, [job])
        return await jobs.get_job(conn, job_id)


def _actor() -> str:
    """Who the audit log names for a CLI action: the login user."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name, e.g. a container user without a passwd entry
        user = f"uid-{os.getuid()}"
    return f"cli:{user}"


def _when(value: datetime.datetime | None) -> str:
    """Local time to the second: what an operator compares with their clock."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _shorten(text: str, width: int) -> str:
    """One line of at most ``width`` characters, so a table row stays a row."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3].rstrip() + "..."


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def progress_line(progress: Progress) -> str:
    """``[#####.....] 1500/3000 50% Processing...``: what a task reported, on one line."""
    parts: list[str] = []
    if progress.total:
        done = progress.done or 0
        ratio = min(max(done / progress.total, 0.0), 1.0)
        filled = int(ratio * BAR_WIDTH)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        parts.append(f"[{bar}] {done}/{progress.total} {int(ratio * 100)}%")
    elif progress.done is not None:
        parts.append(str(progress.done) if progress.total is None else f"{progress.done}/0")
    if progress.message:
        parts.append(progress.message)
    if progress.counters:
        parts.append("(" + ", ".join(f"{k}={v}" for k, v in progress.counters.items()) + ")")
    return " ".join(parts) or "progress reported"


def live_line(job: jobs.JobSummary) -> str:
    """Where a followed job is: its progress once it reports some, else its state."""
    if job.progress is not None:
        line = progress_line(job.progress)
    elif job.status == jobs.JobStatus.todo:
        line = f"{job.state.value}: waiting for a worker"
        if job.scheduled_at is not None and job.scheduled_at > datetime.datetime.now(datetime.UTC):
            line += f" (scheduled for {_when(job.scheduled_at)})"
    else:
        line = f"{job.state.value}: running, no progress reported"
    return line + (" (abort requested)" if job.abort_requested else "")


def final_line(job: jobs.JobSummary) -> str:
    """How a job ended, in one line."""
    line = f"job {job.id} {job.status.value} ({job.state.value})"
    if job.attempts:
        line += f" after {_attempts(job.attempts)}"
    if job.status == jobs.JobStatus.succeeded:
        return f"{line}; result: {_shorten(json.dumps(job.result), 200)}"
    if job.status == jobs.JobStatus.failed and job.last_error is not None:
        return f"{line}: {job.last_error.type}: {_shorten(job.last_error.message, 200)}"
    return line


def jobs_table(page: jobs.JobPage) -> str:
    """A page of jobs as a table, with the cursor of the next page."""
    if not page.items:
        return "no jobs"
    header = ("ID", "TASK", "QUEUE", "STATE", "ATTEMPTS", "CREATED", "FINISHED", "LAST ERROR")
    rows = [
        (
            str(job.id),
            job.task,
            job.queue,
            job.state.value,
            str(job.attempts),
            _when(job.created_at),
            _when(job.finished_at),
            _shorten(f"{job.last_error.type}: {job.last_error.message}", ERROR_WIDTH)
            if job.last_error
            else "",
        )
        for job in page.items
    ]
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    numeric = {0, 4}
    lines = [
        "  ".join(
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in (header, *rows)
    ]
    if page.next_cursor:
        lines.append(f"next cursor: {page.next_cursor}  (add --cursor {page.next_cursor})")
    return "\n".join(lines)


def describe_job(job: jobs.JobView, *, full: bool = True) -> str:
    """A job's details, one per line; with its errors and last traceback for a full view."""
    fields: list[tuple[str, str]] = [
        ("status", f"{job.status.value} ({job.state.value})"),
        ("attempts", str(job.attempts)),
        ("args", _shorten(json.dumps(job.args), 500)),
    ]
    for label, value in (("lock", job.lock), ("queueing lock", job.queueing_lock)):
        if value is not None:
            fields.append((label, value))
    fields += [("created", _when(job.created_at))]
    if job.scheduled_at is not None:
        fields.append(("scheduled", _when(job.scheduled_at)))
    fields += [("started", _when(job.started_at)), ("finished", _when(job.finished_at))]
    if job.worker_id is not None:
        fields.append(("worker", str(job.worker_id)))
    if job.abort_requested:
        fields.append(("abort", "requested; the task stops at its next check"))
    if job.progress is not None:
        fields.append(("progress", progress_line(job.progress)))
    if job.result is not None:
        fields.append(("result", _shorten(json.dumps(job.result), 1000)))
    lines = [f"job {job.id}: {job.task} on queue {job.queue} (priority {job.priority})"]
    lines += [f"  {label + ':':<15}{value}" for label, value in fields]
    if full and job.errors:
        lines.append(f"  {'errors:':<15}{len(job.errors)}")
        lines += [
            f"    attempt {error.attempt} at {_when(error.at)}: "
            f"{error.type}: {_shorten(error.message, 200)}"
            for error in job.errors
        ]
        last = job.errors[-1]
        if last.traceback:
            lines.append("  last traceback:")
            lines += [f"    {line}" for line in last.traceback.rstrip().splitlines()]
    elif job.last_error is not None:
        lines.append(
            f"  {'last error:':<15}{job.last_error.type}: {_shorten(job.last_error.message, 200)}"
        )
    return "\n".join(lines)


class LiveLine:
    """One status line: redrawn in place on a terminal, one line per change otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last: str | None = None
        self._drawn = 0

    def show(self, text: str) -> None:
        if text == self._last:
            return
        self._last = text
        if self._tty:
            # A wrapped line cannot be redrawn with \r: keep it within the terminal.
            text = _shorten(text, max(shutil.get_terminal_size().columns - 1, 10))
            self._stream.write("\r" + text + " " * max(self._drawn - len(text), 0))
            self._drawn = len(text)
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._tty and self._last is not None:
            self._stream.write("\n")
            self._stream.flush()
        self._last = None


async def _connect(url: str, *, autocommit: bool = False) -> DictConnection:
    """A connection of the shape backend.control.jobs expects (dict rows)."""
    return await psycopg.AsyncConnection.connect(url, autocommit=autocommit, row_factory=dict_row)


async def _jobs_list(url: str, args: argparse.Namespace, apps: LoadedApps) -> int:
    filters = jobs.JobFilters(
        statuses=args.statuses, states=args.states, task=args.task, queue=args.queue
    )
    async with await _connect(url) as conn:
        page = await jobs.list_jobs(conn, filters, limit=args.limit, cursor=args.cursor)
    page = jobs.masked_page(page, apps.mask_args)
    print(page.model_dump_json(indent=2) if args.json else jobs_table(page))
    return 0


async def follow_job(url: str, job_id: int, live: LiveLine) -> jobs.JobView:
    """Show a job's progress until it finishes: woken by NOTIFY, progress read in between."""
    watcher = JobWatcher(url)
    await watcher.start()
    try:
        async with await _connect(url, autocommit=True) as conn:
            job = await jobs.get_job(conn, job_id)
            while job.status not in jobs.FINISHED:
                live.show(live_line(job))
                job = await wait_until_finished(watcher, job_id, FOLLOW_REFRESH, reuse(conn))
    finally:
        await watcher.stop()
        live.close()
    return job


async def _jobs_show(url: str, args: argparse.Namespace, apps: LoadedApps) -> int:
    if args.follow:
        # With --json, stdout carries only the final JSON; the live line goes to stderr.
        job = await follow_job(url, args.id, LiveLine(sys.stderr if args.json else sys.stdout))
        job = jobs.masked(job, apps.mask_args)
        print(job.model_dump_json(indent=2) if args.json else final_line(job), flush=True)
        return 0 if job.status == jobs.JobStatus.succeeded else 1
    async with await _connect(url) as conn:
        job = jobs.masked(await jobs.get_job(conn, args.id), apps.mask_args)
    print(job.model_dump_json(indent=2) if args.json else describe_job(job))
    return 0


JobAction = Callable[[DictConnection, int, str], Awaitable[jobs.JobView]]


async def _control(
    url: str, args: argparse.Namespace, apps: LoadedApps, action: JobAction, done: str
) -> int:
    """Retry or cancel in one transaction, so the action and its audit row commit together."""
    async with await _connect(url) as conn, conn.transaction():
        job = await action(conn, args.id, _actor())
    job = jobs.masked(job, apps.mask_args)
    if args.json:
        print(job.model_dump_json(indent=2))
        return 0
    if job.status == jobs.JobStatus.doing:
        done = "asked to abort: its task stops at its next check"
    print(f"job {job.id} {done}")
    print(describe_job(job, full=False))
    return 0


async def _jobs_retry(url: str, args: argparse.Namespace, apps: LoadedApps) -> int:
    return await _control(url, args, apps, jobs.retry_job, "will run again")


async def _jobs_cancel(url: str, args: argparse.Namespace, apps: LoadedApps) -> int:
    return await _control(url, args, apps, jobs.cancel_job, "cancelled")


JobsCommand = Callable[[str, argparse.Namespace, LoadedApps], Coroutine[Any, Any, int]]
JOB_ACTIONS: dict[str, JobsCommand] = {
    "list": _jobs_list,
    "show": _jobs_show,
    "retry": _jobs_retry,
    "cancel": _jobs_cancel,
}


def _jobs(settings: Settings, apps: LoadedApps, args: argparse.Namespace) -> int:
    """Run a ``jobs`` action on DATABASE_URL or the embedded server, like ``defer``."""
    with database_url(settings) as url:
        check_database(url)  # "run `taskhub migrate`" rather than a missing-relation traceback
        try:
            return asyncio.run(JOB_ACTIONS[args.action](url, args, apps))
        except KeyboardInterrupt:  # Ctrl-C while following: stop quietly
            return 130


class PasswordRejected(TaskhubError):
    exit_code = 2


def _hash_password_command() -> int:
    """``taskhub hash-password``: the scrypt hash of a password read without echo."""
    import getpass

    from backend.dashboard.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise PasswordRejected("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        print(hash_password(password))
    except ValueError as exc:
        raise PasswordRejected(str(exc)) from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    index = getattr(args, "worker_index", None)
    process = f"[worker {index}] " if index is not None else ""
    try:
        settings = _settings_for(args)
        _configure_logging(settings, process)
        if args.command == "up" and args.demo:
            _serve_demo(settings)
            return 0
        if args.command == "doctor":
            return _doctor_command(settings)
        if args.command == "hash-password":
            return _hash_password_command()  # a broken app is one of its checks
        apps = load_apps(settings)  # every app whole, or nothing starts
        if index is not None:
            return _worker_process(settings, apps, args)
        if args.command == "up":
            _serve(settings, apps, api=True, worker=True, migrate_first=True)
        elif args.command == "api":
            _serve(settings, apps, api=True, worker=False, migrate_first=False)
        elif args.command == "worker":
            _serve(settings, apps, api=False, worker=True, migrate_first=False)
        elif args.command == "migrate":
            _migrate(settings, apps, args.downgrade)
        elif args.command == "defer":
            _defer(settings, apps, args)
        elif args.command == "jobs":
            return _jobs(settings, apps, args)
        elif args.command == "queues":
            return _queues_command(settings, args)
        elif args.command == "schedules":
            return _schedules_command(settings, apps)
        elif args.command == "backups":
            return _backups_command(settings, args)
        elif args.command == "workers":
            return _workers_command(settings, args)
        elif args.command == "stats":
            return _stats_command(settings, args)
        elif args.command == "purge":
            return _purge_command(settings, args)
    except TaskhubError as exc:
        print(f"taskhub: {process}error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except (psycopg.OperationalError, ConnectorException) as exc:
        message = f"taskhub: {process}error: cannot reach the database: {exc}"
        print(message.rstrip(), file=sys.stderr)
        return 1
    return 0
