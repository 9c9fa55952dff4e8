"""Run the API and/or the workers in one event loop, and stop them cleanly on SIGINT/SIGTERM.

One worker process runs in this event loop; several run as children of a
:class:`~backend.process.supervisor.WorkerSupervisor` this loop drives, and so does one that
is recycled (TASKHUB_WORKER_MAX_JOBS, TASKHUB_WORKER_MAX_MEMORY_MB): its supervisor replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import procrastinate
import psycopg
import uvicorn
from procrastinate.exceptions import ConnectorException

from backend.api import create_app
from backend.declare.apps import LoadedApps
from backend.errors import SettingsError, TaskhubError
from backend.process.supervisor import WorkerSupervisor
from backend.runtime.app import build_task_app
from backend.runtime.context import APP_SETTINGS_KEY, SETTINGS_KEY
from backend.runtime.recycling import Recycling, WorkerRecycled
from backend.runtime.worker import TaskhubWorker
from backend.settings import Settings

logger = logging.getLogger(__name__)


class ServiceFailed(TaskhubError):
    """A service (API or worker) stopped on its own."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class WorkerOptions:
    queues: list[str] | None
    concurrency: int
    processes: int = 1  # more than one: child processes, each running one worker
    max_jobs: int | None = None  # then recycled: a fresh process takes over
    max_memory_mb: int | None = None
    index: int | None = None  # a supervised worker process's number, for its log lines

    @property
    def recycling(self) -> Recycling:
        return Recycling(self.max_jobs, self.max_memory_mb, self.index)


def bind_api_socket(host: str, port: int) -> socket.socket:
    """Bind before starting anything, so a busy port is a clear error, not a half start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and without
    # it every response after the first on a kept-alive connection waited ~40 ms (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SettingsError(
            f"cannot listen on {host}:{port} ({exc.strerror}); set TASKHUB_API_PORT or pass --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def _describe(error: BaseException) -> str:
    """A database error's first line (procrastinate's ConnectorException says only
    "Database error": its cause does)."""
    if isinstance(error, ConnectorException) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, psycopg.Error):
        first_line = (str(error).strip().splitlines() or [""])[0]
        return f"database error: {type(error).__name__}: {first_line}"
    return repr(error)


async def run_worker(
    app: procrastinate.App,
    settings: Settings,
    options: WorkerOptions,
    apps: LoadedApps | None = None,
) -> None:
    """Run taskhub's worker on ``app`` until cancelled (then it stops gracefully); tasks
    get ``apps``' settings from ``ctx.settings_of``. :class:`WorkerRecycled` when it stopped
    at its limit of jobs or memory."""
    worker = TaskhubWorker(
        app=app,
        recycling=options.recycling,
        queues=options.queues or None,
        concurrency=options.concurrency,
        fetch_job_polling_interval=settings.fetch_polling_interval,
        shutdown_graceful_timeout=settings.shutdown_grace_period,
        update_heartbeat_interval=settings.heartbeat_interval,
        stalled_worker_timeout=settings.rescue_after,
        install_signal_handlers=False,
        listen_notify=True,
        additional_context={
            SETTINGS_KEY: settings,
            APP_SETTINGS_KEY: dict(apps.settings) if apps else {},
        },
    )
    # Sync tasks run in the loop's default thread pool (procrastinate's sync_to_async), which
    # holds min(32, cores + 4) threads: as many threads as slots, so none waits for one.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="taskhub-job")
    )
    worker.check_recycling()
    async with app.open_async():
        await worker.run()
    if worker.recycled is not None:
        raise WorkerRecycled(worker.recycled)


#: Net new container objects between two of Python's youngest-generation collections (700 by
#: default). Every job leaves a few reference cycles (its asyncio task, context and callbacks).
GC_YOUNG_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Python's cycle collector, set for a long-running server process.

    With the defaults, a worker draining no-op jobs spent about 15% of its CPU in the collector,
    most of it in full collections walking every object the imports created (procrastinate,
    FastAPI, pydantic and their models) again and again. ``gc.freeze`` sets those aside for
    good, and a higher young-generation threshold collects the jobs' cycles in fewer, larger
    passes: a worker draining no-op jobs spent 10-20% less CPU per job.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


#: Seconds past the grace period a stopping worker process may take before it exits anyway.
STOP_MARGIN = 5.0


def stop_watchdog(seconds: float) -> threading.Timer:
    """Exit the process if the graceful stop has not ended within ``seconds``.

    A statement on a database that stopped answering (a cut network path, no reset) waits
    forever on a pooled connection, and a worker's last writes (unregistering, requeueing)
    would hold its stop up for ever: a SIGTERM must end the process all the same. The jobs it
    still held are rescued after TASKHUB_RESCUE_AFTER, as a crash's would be.
    """

    def give_up() -> None:
        logger.error(
            "the worker did not stop within %.0f s (is the database reachable?): exiting now;"
            " the jobs it held are rescued after TASKHUB_RESCUE_AFTER",
            seconds,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()
    return timer


async def run_services(
    settings: Settings,
    url: str,
    apps: LoadedApps,
    *,
    api_socket: socket.socket | None,
    worker: WorkerOptions | None,
    on_ready: Callable[[], None] | None = None,
    supervised: bool = False,
) -> None:
    """Run until a signal arrives or a service stops; raise :class:`ServiceFailed` on the latter.

    With several worker processes, signals stay handled until every child has exited: a
    second SIGINT/SIGTERM kills the children rather than the parent, which would leave them
    running on without it. A ``supervised`` worker process (one of those children) ignores
    signals after the first: its supervisor decides when to kill it, and the kernel's
    parent-death SIGTERM comes once for each thread of the dying supervisor.
    """
    tune_garbage_collector()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[signal.Signals] = []
    supervisor: WorkerSupervisor | None = None

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        if not stop.is_set():
            stop.set()
        elif supervisor is not None:
            supervisor.stop(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)

    services: dict[str, asyncio.Task[None]] = {}
    server: _Server | None = None
    if api_socket is not None:
        config = uvicorn.Config(
            create_app(settings, url, apps),
            log_level=settings.log_level.lower(),
            access_log=settings.log_level == "DEBUG",
            lifespan="on",
        )
        server = _Server(config)
        services["api"] = asyncio.create_task(server.serve(sockets=[api_socket]), name="api")
    # Recycling needs a parent to start the fresh process: with --processes 1 as well, the
    # worker runs in one supervised child (unless this is that child).
    recycled = worker is not None and worker.recycling.enabled and not supervised
    if worker is not None and (worker.processes > 1 or recycled):
        # A setting the children would refuse (e.g. TASKHUB_SCHEDULES) fails here, once.
        build_task_app(url, settings, apps.blueprints)
        supervisor = WorkerSupervisor(settings, url, worker.processes)
        services["workers"] = asyncio.create_task(supervisor.run(), name="workers")
    elif worker is not None:
        task_app = build_task_app(url, settings, apps.blueprints)
        services["worker"] = asyncio.create_task(
            run_worker(task_app, settings, worker, apps), name="worker"
        )

    stop_waiter = asyncio.create_task(stop.wait(), name="signal")
    try:
        if server is not None:
            # uvicorn exposes startup only as a flag.
            while not server.started and not services["api"].done():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        if on_ready is not None and not any(task.done() for task in services.values()):
            on_ready()
        done, _ = await asyncio.wait(
            [stop_waiter, *services.values()], return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        if supervisor is None and not supervised:
            # A second Ctrl-C now stops this process at once.
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        stop_waiter.cancel()
        failed = [name for name, task in services.items() if task.done()]
        logger.info("stopping %s", ", ".join(services) or "nothing")
        if server is not None:
            server.should_exit = True
        watchdog = None
        if "worker" in services:
            services["worker"].cancel()
            watchdog = stop_watchdog(settings.shutdown_grace_period + STOP_MARGIN)
        if supervisor is not None:
            supervisor.stop(received[0] if received else signal.SIGTERM)
        try:
            results = await asyncio.gather(*services.values(), return_exceptions=True)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if supervisor is not None or supervised:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
    for name, result in zip(services, results, strict=True):
        if isinstance(result, TaskhubError | WorkerRecycled):
            raise result  # its message is the one line to show; a recycle, the exit code
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise ServiceFailed(f"{name} failed: {_describe(result)}") from result
    if failed and stop_waiter not in done:
        raise ServiceFailed(f"{', '.join(failed)} stopped unexpectedly")
