"""The ``taskhub`` command: up, api, worker, migrate, defer."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import psycopg
from procrastinate.exceptions import ConnectorException
from psycopg.rows import dict_row

from backend import jobs, migrate, queue
from backend.db import check_database, database_url, describe_database
from backend.errors import TaskhubError
from backend.settings import Settings, load_settings

logger = logging.getLogger("taskhub")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskhub", description="Background tasks on PostgreSQL alone."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="migrate, then run the API and a worker")
    api = commands.add_parser("api", help="run the REST API")
    for command in (up, api):
        command.add_argument("--host", help="API address (TASKHUB_API_HOST)")
        command.add_argument("--port", type=int, help="API port (TASKHUB_API_PORT)")

    worker = commands.add_parser("worker", help="run a worker")
    for command in (up, worker):
        command.add_argument("--queues", type=_queues, help="comma-separated queues (default: all)")
        command.add_argument("--concurrency", type=_positive, help="jobs run at once")

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
    return parser


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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
    ):
        value = getattr(args, option, None)
        if value is not None:
            overrides[field] = value
    return load_settings(**overrides)


def _where(settings: Settings, url: str) -> str:
    if settings.database_url:
        return describe_database(url)
    return f"embedded PostgreSQL in {settings.embedded_data_dir}, database taskhub"


def _serve(settings: Settings, *, api: bool, worker: bool, migrate_first: bool) -> None:
    from backend.runner import WorkerOptions, bind_api_socket, run_services

    sock = bind_api_socket(settings.api_host, settings.api_port) if api else None
    base = f"http://{settings.api_host}:{settings.api_port}"
    with database_url(settings) as url:
        if migrate_first:
            migrate.upgrade(url)
        elif worker:
            check_database(url)
        options = (
            WorkerOptions(queues=settings.worker_queues, concurrency=settings.worker_concurrency)
            if worker
            else None
        )

        def announce() -> None:
            lines = ["", "taskhub is up", f"  database: {_where(settings, url)}"]
            if api:
                lines.append(f"  API:      {base}  (OpenAPI docs: {base}/docs)")
            if options:
                queues = ",".join(options.queues) if options.queues else "all queues"
                lines.append(f"  worker:   {queues}, concurrency {options.concurrency}")
            if api:
                lines += [
                    "Defer a job and read it back:",
                    f"  curl -s -X POST {base}/jobs -H 'content-type: application/json' "
                    '-d \'{"task": "taskhub.ping", "args": {"message": "hello"}}\'',
                    f"  curl -s {base}/jobs/1",
                ]
            lines.append("Stop with Ctrl-C.")
            print("\n".join(lines), flush=True)

        asyncio.run(run_services(settings, url, api_socket=sock, worker=options, on_ready=announce))
    print("taskhub stopped", flush=True)


def _migrate(settings: Settings, downgrade_to: str | None) -> None:
    with database_url(settings) as url:
        if downgrade_to:
            migrate.downgrade(url, downgrade_to)
            print(f"downgraded {_where(settings, url)} to {downgrade_to}")
        else:
            migrate.upgrade(url)
            print(f"migrated {_where(settings, url)} to head")


def _defer(settings: Settings, args: argparse.Namespace) -> None:
    # Validate everything before touching the database: bad input starts nothing.
    request = queue.DeferRequest.parse(
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
    task = queue.get_task(request.task)
    queue.make_job(task, request.args, **request.options())
    with database_url(settings) as url, psycopg.connect(url, row_factory=dict_row) as conn:
        job_id = queue.defer_sync(conn, task, request.args, **request.options())
        conn.commit()
        job = asyncio.run(_read_job(url, job_id))
    print(job.model_dump_json(indent=2))


async def _read_job(url: str, job_id: int) -> jobs.JobView:
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        return await jobs.get_job(conn, job_id)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings_for(args)
        _configure_logging(settings)
        if args.command == "up":
            _serve(settings, api=True, worker=True, migrate_first=True)
        elif args.command == "api":
            _serve(settings, api=True, worker=False, migrate_first=False)
        elif args.command == "worker":
            _serve(settings, api=False, worker=True, migrate_first=False)
        elif args.command == "migrate":
            _migrate(settings, args.downgrade)
        elif args.command == "defer":
            _defer(settings, args)
    except TaskhubError as exc:
        print(f"taskhub: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except (psycopg.OperationalError, ConnectorException) as exc:
        print(f"taskhub: error: cannot reach the database: {exc}".rstrip(), file=sys.stderr)
        return 1
    return 0
