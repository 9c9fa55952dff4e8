"""Running a sync task in a child process, so a hard time limit (or an abort) can stop it.

A thread cannot be stopped from outside; a process can. Sync tasks that declare
``time_limit`` run in a forked child. Everything that crosses back is JSON over a pipe
(progress reports, the result, or the error's type, message and traceback): no pickle.
"""

from __future__ import annotations

import builtins
import json
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from procrastinate.exceptions import JobAborted

from backend.runtime.progress import Progress

POLL = 0.05  # seconds between checks for an abort while the child runs


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
    """The child's progress reporter: each report goes to the parent, which throttles it."""

    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe

    def report(self, progress: Progress) -> None:
        self._send({"kind": "progress", "progress": progress.model_dump(mode="json")})

    def _send(self, message: dict[str, Any]) -> None:
        self._pipe.send_bytes(json.dumps(message).encode())


def _child(target: Callable[[], Any], pipe: Connection, prepare: Callable[[Any], None]) -> None:
    reporter = PipeReporter(pipe)
    prepare(reporter)
    try:
        value = target()
        reporter._send({"kind": "result", "value": value})
    except BaseException as exc:
        reporter._send(
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


def _stop(process: multiprocessing.process.BaseProcess) -> None:
    process.terminate()
    process.join(1)
    if process.is_alive() and process.pid is not None:
        os.kill(process.pid, signal.SIGKILL)
        process.join(5)


def run_in_child(
    target: Callable[[], Any],
    *,
    time_limit: float,
    prepare: Callable[[Any], None],
    on_progress: Callable[[Progress], None],
    should_abort: Callable[[], bool],
) -> Any:
    """Run ``target`` in a forked child and return what it returned (JSON data).

    Raise :class:`TimeLimitExceeded` after ``time_limit`` seconds, ``JobAborted`` once
    ``should_abort()`` (the child is killed either way), or the child's error.
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(target, sender, prepare), daemon=True)
    process.start()
    sender.close()
    deadline = time.monotonic() + time_limit
    try:
        while True:
            if receiver.poll(POLL):
                try:
                    message = json.loads(receiver.recv_bytes())
                except EOFError:
                    process.join(5)
                    raise ChildTaskError(
                        "ChildDied", f"the task's process died (exit code {process.exitcode})", ""
                    ) from None
                if message["kind"] == "progress":
                    on_progress(Progress.model_validate(message["progress"]))
                    continue
                process.join(5)
                if message["kind"] == "result":
                    return message["value"]
                raise _rebuild(message)
            if time.monotonic() >= deadline:
                _stop(process)
                raise TimeLimitExceeded(f"stopped after its hard time limit of {time_limit:g} s")
            if should_abort():
                _stop(process)
                raise JobAborted("the job was aborted")
    finally:
        receiver.close()
        if process.is_alive():
            _stop(process)
