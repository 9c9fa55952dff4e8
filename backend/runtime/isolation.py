"""Running a sync task in a child process, so a hard time limit (or an abort) can stop it.

A thread cannot be stopped from outside; a process can. Sync tasks that declare
``time_limit`` run in a child forked from the worker. Everything that crosses back is JSON
over a pipe (progress reports, log records, the result, or the error's type, message and
traceback): no pickle.

The fork copies the worker whole, so the child first leaves the worker behind
(:func:`leave_the_worker`): it drops the signal handlers and the event loop's signal
wake-up descriptor (a SIGTERM meant for the child would otherwise wake the worker's loop and
stop the worker), every inherited descriptor but the pipe (database connections, the loop's
selector, log files: a stray write from the child must not reach the worker's peers), the
worker's log handlers (its records travel to the worker, which logs them as its own), and
its terminal input; and it dies with the worker.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from procrastinate.exceptions import JobAborted

from backend.runtime.lifetime import signal_on_parent_death
from backend.runtime.progress import Progress

POLL = 0.05  # seconds between checks for the limit or an abort while the child runs
TERM_GRACE = 0.2  # seconds a stopped child gets after SIGTERM before SIGKILL
# A log record's attributes that say where and when it was made (the rest is rebuilt).
RECORD_FIELDS = (
    "name",
    "levelno",
    "levelname",
    "pathname",
    "filename",
    "module",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "relativeCreated",
    "process",
    "processName",
    "stack_info",
)
STANDARD_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class TimeLimitExceeded(Exception):
    """The task ran past its hard time limit and was stopped."""


class SoftTimeLimitExceeded(Exception):
    """The task ran past its soft time limit: clean up and stop (it may be caught)."""


class ChildTaskError(Exception):
    """An error raised in the child, carried back as its type name, message and traceback."""

    def __init__(self, type_name: str, message: str, trace: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.trace = trace


class PipeReporter:
    """The child's side of the pipe: progress reports, log records and the outcome.

    A lock keeps messages whole when threads of the task report at once.
    """

    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe
        self._lock = threading.Lock()

    def report(self, progress: Progress) -> None:
        self.send({"kind": "progress", "progress": progress.model_dump(mode="json")})

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, default=repr).encode()
        with self._lock:
            self._pipe.send_bytes(data)


class PipeLogHandler(logging.Handler):
    """In the child: every log record goes to the worker as JSON."""

    def __init__(self, reporter: PipeReporter) -> None:
        super().__init__()
        self._reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._reporter.send({"kind": "log", "record": record_to_json(record)})
        except Exception:
            self.handleError(record)


def record_to_json(record: logging.LogRecord) -> dict[str, Any]:
    """A log record as JSON data: the message formatted, the traceback as text, and the
    extra attributes (``logger.info(..., extra={...})``) that are JSON themselves."""
    data: dict[str, Any] = {field: getattr(record, field, None) for field in RECORD_FIELDS}
    data["msg"] = record.getMessage()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    data["exc_text"] = record.exc_text
    for key, value in vars(record).items():
        if key in STANDARD_RECORD_ATTRIBUTES:
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        data[key] = value
    return data


def log_in_worker(data: dict[str, Any]) -> None:
    """Hand a record from the child to the worker's own loggers and handlers."""
    record = logging.makeLogRecord({**data, "args": None})
    logging.getLogger(record.name).handle(record)


def leave_the_worker(keep: set[int], reporter: PipeReporter) -> None:
    """In the forked child, before the task runs: drop what belongs to the worker."""
    worker_pid = os.getppid()
    # Signals: the worker's loop set a no-op Python handler for SIGINT/SIGTERM and a wake-up
    # descriptor that forwards their numbers to the worker's loop. The child obeys SIGTERM at
    # once and leaves Ctrl-C to the worker, which decides when its jobs stop.
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, TypeError):
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    # If the worker is killed, its job is rescued and may run elsewhere: this copy must end.
    signal_on_parent_death(signal.SIGKILL)
    if os.getppid() != worker_pid:
        os._exit(1)
    # Descriptors: each inherited one becomes /dev/null rather than closed, so a stray use
    # by an object of the worker's fails or reads nothing instead of writing into a file the
    # task has opened since under the same number.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in inherited_descriptors():
        if fd not in keep and fd not in (1, 2, null):
            with contextlib.suppress(OSError):
                os.dup2(null, fd)
    os.close(null)
    # Logging: records reach the worker's handlers through the pipe, once each.
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.handlers.clear()
    logging.root.handlers[:] = [PipeLogHandler(reporter)]


def inherited_descriptors() -> list[int]:
    """The open descriptors of this process."""
    fd_dir = Path("/proc/self/fd") if Path("/proc/self/fd").is_dir() else Path("/dev/fd")
    with contextlib.suppress(OSError):
        return sorted(int(name) for name in os.listdir(fd_dir))
    return list(range(os.sysconf("SC_OPEN_MAX")))


def _child(
    target: Callable[[], Any], pipe: Connection, prepare: Callable[[PipeReporter], None]
) -> None:
    reporter = PipeReporter(pipe)
    leave_the_worker({pipe.fileno()}, reporter)
    prepare(reporter)
    try:
        value = target()
        reporter.send({"kind": "result", "value": value})
    except BaseException as exc:
        reporter.send(
            {
                "kind": "error",
                "type": type(exc).__qualname__,
                "message": str(exc),
                "traceback": "".join(traceback.format_exception(exc)),
            }
        )


def _rebuild(message: dict[str, Any]) -> BaseException:
    """The child's error as the same builtin exception type when there is one, so retry
    policies that name ConnectionError or TimeoutError still match."""
    name, text = message["type"], message["message"]
    if name == SoftTimeLimitExceeded.__qualname__:
        return SoftTimeLimitExceeded(text)
    if name == JobAborted.__qualname__:
        return JobAborted(text)
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            error = kind(text)
            error.add_note(message["traceback"])
            return error
        except TypeError:
            pass
    return ChildTaskError(name, text, message["traceback"])


def _fork() -> int:
    """Fork, with the standard streams flushed first so the child repeats no buffered line.

    Python 3.12 warns about forking a process with threads: the child here runs one
    thread's task and leaves everything else behind (:func:`leave_the_worker`).
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


class ChildProcess:
    """A forked child running ``target``; the parent reaps it."""

    def __init__(self, target: Callable[[], Any], prepare: Callable[[PipeReporter], None]) -> None:
        self.receiver, sender = Pipe(duplex=False)
        self.exit_status: int | None = None
        self.pid = _fork()
        if self.pid == 0:  # the child
            code = 1
            try:
                self.receiver.close()
                _child(target, sender, prepare)
                code = 0
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os._exit(code)
        sender.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Reap the child; True once it has ended (``timeout=None``: block until then)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.exit_status is None:
            flags = 0 if deadline is None else os.WNOHANG
            pid, status = os.waitpid(self.pid, flags)
            if pid == self.pid:
                self.exit_status = os.waitstatus_to_exitcode(status)
            elif deadline is None or time.monotonic() >= deadline:
                return False
            else:
                time.sleep(0.005)
        return True

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the task set its own handler and lingers."""
        if self.exit_status is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if not self.wait(TERM_GRACE):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.wait()


def run_in_child(
    target: Callable[[], Any],
    *,
    time_limit: float,
    prepare: Callable[[PipeReporter], None],
    on_progress: Callable[[Progress], None],
    should_abort: Callable[[], bool],
) -> Any:
    """Run ``target`` in a forked child and return what it returned (JSON data).

    Raise :class:`TimeLimitExceeded` after ``time_limit`` seconds, ``JobAborted`` once
    ``should_abort()`` (the child is stopped either way), or the child's error.
    """
    child = ChildProcess(target, prepare)
    deadline = time.monotonic() + time_limit
    try:
        while True:
            if child.receiver.poll(min(POLL, max(deadline - time.monotonic(), 0))):
                try:
                    message = json.loads(child.receiver.recv_bytes())
                except EOFError:
                    child.wait()
                    raise ChildTaskError(
                        "ChildDied", f"the task's process died (exit code {child.exit_status})", ""
                    ) from None
                if message["kind"] == "progress":
                    on_progress(Progress.model_validate(message["progress"]))
                    continue
                if message["kind"] == "log":
                    log_in_worker(message["record"])
                    continue
                child.wait()
                if message["kind"] == "result":
                    return message["value"]
                raise _rebuild(message)
            if time.monotonic() >= deadline:
                child.stop()
                raise TimeLimitExceeded(f"stopped after its hard time limit of {time_limit:g} s")
            if should_abort():
                child.stop()
                raise JobAborted("the job was aborted")
    finally:
        child.receiver.close()
        child.stop()
