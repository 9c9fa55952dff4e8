"""One worker process per core: the parent starts N children, forwards signals, restarts crashes.

Each child is ``python -P -m backend worker --processes 1``, the very command an operator
could run by hand, rather than a ``multiprocessing`` child: nothing is pickled, nothing is
forked from a process that already has an event loop, threads or connections, and a child
stops, logs and exits exactly like a single worker. The parent only needs pids and exit codes,
which asyncio's subprocess support gives without polling.

- The parent resolves the database once (it alone starts the embedded server) and gives the
  children its settings, that URL included, in their environment (:func:`child_environment`).
- Children run in their own session: a Ctrl-C in the terminal reaches only the parent, which
  forwards it to every child (each stops gracefully). A second Ctrl-C SIGKILLs them: a worker
  interrupted inside its graceful stop could mark a running job aborted, whereas a killed one
  leaves it to the rescue, like a crash. The parent exits when all of them have.
- A child that dies while the parent is not stopping is restarted after a backoff; its jobs are
  rescued like any dead worker's. A child that exits to be recycled (after N jobs or above M MB,
  backend/runtime/recycling.py) has finished or handed back its jobs: it is replaced at once.
  A child that keeps dying right after its start (a bad setting, a schema behind the code)
  makes the parent stop the others and fail with one line; one killed by SIGKILL (the OOM
  killer) is only restarted.
- A child notices its parent's death (kill -9, OOM) through ``PR_SET_PDEATHSIG`` on Linux, or
  by polling its parent pid elsewhere, and stops as on SIGTERM: no orphaned workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import backend
from backend.errors import TaskhubError
from backend.runtime.lifetime import signal_on_parent_death
from backend.runtime.recycling import RECYCLE_EXIT_CODE
from backend.settings import Settings, env_name

logger = logging.getLogger(__name__)

# A child that exits sooner than this after its start never really ran (a worker's imports
# alone can take several seconds on a busy machine).
FAST_EXIT_SECONDS = 20.0
GIVE_UP_AFTER = 3  # fast exits in a row of one worker process before the parent gives up
RESTART_DELAY = 0.5  # seconds before a restart, doubled for each fast exit in a row
MAX_RESTART_DELAY = 10.0
PARENT_POLL_SECONDS = 1.0  # where PR_SET_PDEATHSIG is missing


class WorkerProcessesFailing(TaskhubError):
    """A worker process keeps exiting right after its start; restarting it again is pointless."""


class SupervisorGone(TaskhubError):
    """The supervisor that started this worker process has already exited."""


def lower_cpu_priority(niceness: int) -> None:
    """Background work gives way to requests: a worker-only process runs at niceness
    ``niceness`` (or the higher one it inherited), so that the API, and PostgreSQL serving it,
    stay responsive while the workers keep every core busy."""
    if hasattr(os, "setpriority") and os.getpriority(os.PRIO_PROCESS, 0) < niceness:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    # Where Linux groups processes by session for the scheduler (autogroup), niceness only
    # ranks a process within its session's group. A supervised worker process leads its own
    # session, alone in its group: the group itself must be niced. Never another session's
    # group (a shell's, say), which would slow everything started from it.
    autogroup = Path("/proc/self/autogroup")
    if hasattr(os, "getsid") and os.getsid(0) == os.getpid() and autogroup.exists():
        with contextlib.suppress(OSError, ValueError):
            if int(autogroup.read_text().split()[-1]) < niceness:
                autogroup.write_text(str(niceness))


def describe_exit(code: int) -> str:
    """``exit code 1`` or ``signal SIGKILL``, as asyncio reports a child's end."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit code {code}"


def _env_value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | bool):
        return json.dumps(value)
    return str(value)


def child_environment(
    settings: Settings, url: str, base: dict[str, str] | None = None
) -> dict[str, str]:
    """``base`` (the parent's environment) with every setting as the parent resolved it:
    command-line options and ``up --demo``'s stand-ins included, and the database URL
    already resolved, so a child never starts an embedded server of its own."""
    env = dict(os.environ if base is None else base)
    values = {env_name(name): getattr(settings, name) for name in Settings.model_fields}
    values["DATABASE_URL"] = url
    values[env_name("worker_processes")] = 1
    names = set(values)
    for key in [key for key in env if key.upper() in names]:
        del env[key]  # pydantic-settings reads names in any case: drop every spelling
    env.update({name: _env_value(value) for name, value in values.items() if value is not None})
    # The parent's own `backend` package, whatever the child's working directory holds.
    package_root = str(Path(backend.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def child_command(index: int, parent_pid: int) -> list[str]:
    """``-P``: the working directory is not on the child's path, so a project's own
    ``backend/`` folder cannot shadow taskhub's."""
    return [
        sys.executable,
        "-P",
        "-m",
        "backend",
        "worker",
        "--processes",
        "1",
        "--worker-index",
        str(index),
        "--supervisor-pid",
        str(parent_pid),
    ]


def stop_with_parent(parent_pid: int) -> None:
    """In a worker process: get SIGTERM when the supervisor dies, so the worker hands its jobs
    back and exits instead of running on as an orphan."""
    if not signal_on_parent_death(signal.SIGTERM):

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(PARENT_POLL_SECONDS)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # it died before the signal was armed
        raise SupervisorGone(f"the supervisor (pid {parent_pid}) has already exited")


class WorkerSupervisor:
    """Keep ``processes`` worker processes running until :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        processes: int,
        *,
        command: Sequence[str] | None = None,
    ) -> None:
        self._env = child_environment(settings, url)
        self._processes = processes
        self._command = command  # tests run a stand-in child
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._stop_signal = signal.SIGTERM

    @property
    def pids(self) -> dict[int, int]:
        """Worker process index to pid, for the children running now."""
        return {index: child.pid for index, child in self._children.items()}

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Forward ``sig`` to every child (each stops gracefully) and restart none of them;
        called again (a second Ctrl-C), SIGKILL them."""
        if self._stopping.is_set():
            sig = signal.SIGKILL
        self._stop_signal = sig
        self._stopping.set()
        for child in list(self._children.values()):
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(sig)

    async def run(self) -> None:
        """Until :meth:`stop` and every child's exit; :class:`WorkerProcessesFailing` when
        one keeps dying at start (the others are stopped first)."""
        slots = [
            asyncio.create_task(self._keep_running(index), name=f"worker-process-{index}")
            for index in range(1, self._processes + 1)
        ]
        try:
            done, pending = await asyncio.wait(slots, return_when=asyncio.FIRST_EXCEPTION)
            failure = next((task.exception() for task in done if task.exception()), None)
            if failure is not None:
                self.stop()
                await asyncio.gather(*pending, return_exceptions=True)
                raise failure
        finally:
            if any(not task.done() for task in slots):  # cancelled: leave no worker behind
                self.stop()
                for task in slots:
                    task.cancel()

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        command = self._command or child_command(index, os.getpid())
        child = await asyncio.create_subprocess_exec(
            *command,
            env=self._env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # the terminal's Ctrl-C goes to the parent only
        )
        self._children[index] = child
        if self._stopping.is_set():  # a stop arrived while it was being started
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(self._stop_signal)
        logger.info("worker process %d started (pid %d)", index, child.pid)
        return child

    async def _keep_running(self, index: int) -> None:
        fast_exits = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            child = await self._spawn(index)
            try:
                code = await child.wait()
            finally:
                self._children.pop(index, None)
            if self._stopping.is_set():
                if code not in (0, RECYCLE_EXIT_CODE):
                    logger.warning("worker process %d stopped with %s", index, describe_exit(code))
                return
            lived = time.monotonic() - started
            if code == RECYCLE_EXIT_CODE:  # its own line said why; no crash, no backoff
                logger.info(
                    "worker process %d (pid %d) exited to be recycled (it ran %.1f s); "
                    "starting a fresh one",
                    index,
                    child.pid,
                    lived,
                )
                fast_exits = 0
                continue
            # SIGKILL comes from outside (the OOM killer, an operator), not from a bad start: a
            # poison job that got three processes killed within seconds stopped every worker.
            killed = code == -signal.SIGKILL
            fast_exits = fast_exits + 1 if lived < FAST_EXIT_SECONDS and not killed else 0
            if fast_exits >= GIVE_UP_AFTER:
                raise WorkerProcessesFailing(
                    f"worker process {index} exited right after its start {fast_exits} times "
                    f"in a row (within {FAST_EXIT_SECONDS:g} s; last with {describe_exit(code)}), "
                    "so every worker process was stopped; its errors are in the log above"
                )
            delay = min(RESTART_DELAY * 2 ** max(fast_exits - 1, 0), MAX_RESTART_DELAY)
            logger.warning(
                "worker process %d (pid %d) exited unexpectedly with %s after %.1f s; "
                "restarting it in %.1f s",
                index,
                child.pid,
                describe_exit(code),
                lived,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
