"""The latency bench's worker process: taskhub's worker (or bare procrastinate's) plus the probe.

Runs until SIGTERM/SIGINT. Settings come from the environment, as for ``taskhub worker``
(``DATABASE_URL``, ``TASKHUB_WORKER_CONCURRENCY``, ...)::

    DATABASE_URL=postgresql://... .venv/bin/python bench/probe_worker.py --flavour taskhub
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

import probe_tasks

from backend.declare.apps import builtin_apps
from backend.process.runner import WorkerOptions, run_worker
from backend.runtime.app import build_task_app
from backend.settings import Settings, load_settings


async def run_taskhub(url: str, settings: Settings) -> None:
    app = build_task_app(
        url, settings, blueprints=(*builtin_apps().blueprints, probe_tasks.blueprint)
    )
    options = WorkerOptions(queues=settings.worker_queues, concurrency=settings.worker_concurrency)
    await run_worker(app, settings, options)


async def run_procrastinate(url: str, settings: Settings) -> None:
    """Stock procrastinate's worker, with the options backend/process/runner.py gives taskhub's."""
    app = probe_tasks.procrastinate_app(url, settings)
    async with app.open_async():
        await app.run_worker_async(
            concurrency=settings.worker_concurrency,
            fetch_job_polling_interval=settings.fetch_polling_interval,
            shutdown_graceful_timeout=settings.shutdown_grace_period,
            update_heartbeat_interval=settings.heartbeat_interval,
            stalled_worker_timeout=settings.rescue_after,
            install_signal_handlers=False,
            listen_notify=True,
            wait=True,
        )


async def serve(flavour: str) -> None:
    settings = load_settings()
    if not settings.database_url:
        raise SystemExit("probe_worker: set DATABASE_URL")
    runner = run_taskhub if flavour == "taskhub" else run_procrastinate
    worker = asyncio.create_task(runner(settings.database_url, settings))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await worker


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--flavour", choices=("taskhub", "procrastinate"), default="taskhub")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    asyncio.run(serve(args.flavour))
    return 0


if __name__ == "__main__":
    sys.exit(main())
