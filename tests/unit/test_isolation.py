"""A sync task's child process: stopped at its limit or on abort, and nothing of the worker
(signal handlers, descriptors, log handlers, terminal input) reaches into it or out of it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from procrastinate.exceptions import JobAborted

from backend.runtime.isolation import ChildTaskError, TimeLimitExceeded, run_in_child
from backend.runtime.progress import Progress


def run(
    target: Callable[[], Any],
    time_limit: float = 30,
    should_abort: Callable[[], bool] = lambda: False,
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> Any:
    return run_in_child(
        target,
        time_limit=time_limit,
        prepare=lambda reporter: None,
        on_progress=on_progress,
        should_abort=should_abort,
    )


def busy() -> None:
    while True:
        pass


async def in_a_worker_like_loop(call: Callable[[], Any]) -> tuple[Any, list[int]]:
    """Run ``call`` in a thread of a loop that handles SIGINT, SIGTERM and SIGHUP as a
    worker's does; return its outcome and the signals the loop received meanwhile."""
    loop = asyncio.get_running_loop()
    received: list[int] = []
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in handled:
        loop.add_signal_handler(sig, received.append, sig)
    try:
        try:
            outcome: Any = await asyncio.to_thread(call)
        except Exception as exc:
            outcome = exc
        await asyncio.sleep(0.3)  # a forwarded signal would arrive by now
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    return outcome, received


def test_hard_limit_stops_the_child_and_leaves_the_worker_running() -> None:
    began = time.monotonic()
    outcome, received = asyncio.run(in_a_worker_like_loop(lambda: run(busy, time_limit=0.5)))
    assert isinstance(outcome, TimeLimitExceeded), outcome
    assert received == [], "the SIGTERM sent to the child reached the worker's loop"
    assert time.monotonic() - began - 0.3 < 1.0, "stopped within 0.5 s of the limit"


def test_abort_stops_the_child_and_leaves_the_worker_running() -> None:
    asked = time.monotonic() + 0.3
    outcome, received = asyncio.run(
        in_a_worker_like_loop(lambda: run(busy, should_abort=lambda: time.monotonic() > asked))
    )
    assert isinstance(outcome, JobAborted), outcome
    assert received == []


def signal_state() -> dict[str, Any]:
    return {
        "wakeup_fd": signal.set_wakeup_fd(-1),
        "SIGTERM": signal.getsignal(signal.SIGTERM),
        "SIGINT": signal.getsignal(signal.SIGINT),
        "SIGHUP": signal.getsignal(signal.SIGHUP),
        "blocked": sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    }


def test_the_child_drops_the_worker_signal_handlers_and_wakeup_descriptor() -> None:
    outcome, _ = asyncio.run(in_a_worker_like_loop(lambda: run(signal_state)))
    assert outcome == {
        "wakeup_fd": -1,
        "SIGTERM": signal.SIG_DFL,
        "SIGINT": signal.SIG_IGN,  # Ctrl-C is the worker's to act on
        "SIGHUP": signal.SIG_DFL,
        "blocked": [],
    }


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    yield ours, peer
    ours.close()
    peer.close()


def test_the_child_cannot_write_to_the_worker_sockets(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = socket_pair

    def write_to_the_worker_socket() -> str:
        try:
            ours.sendall(b"written by the child")
        except OSError as exc:
            return type(exc).__name__
        return "sent"

    assert run(write_to_the_worker_socket) == "OSError"
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(100)
    ours.sendall(b"still ours")
    assert peer.recv(100) == b"still ours"


def test_the_child_reads_no_terminal_input() -> None:
    def stdin_device() -> list[int]:
        stat = os.fstat(0)
        return [stat.st_rdev, int(os.read(0, 10) == b"")]

    assert run(stdin_device) == [os.stat(os.devnull).st_rdev, 1]


class Collect(logging.Handler):
    """Records as the worker's handler sees them, with the pid of the process emitting."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, logging.LogRecord]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((os.getpid(), record))


def test_log_records_of_the_child_are_emitted_once_by_the_worker(tmp_path: Path) -> None:
    collect = Collect()
    written = tmp_path / "worker.log"
    file_handler = logging.FileHandler(written)
    file_handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("tests.isolation.child")
    logger.addHandler(collect)
    logger.addHandler(file_handler)
    logger.setLevel(logging.INFO)
    try:

        def log_twice() -> int:
            logger.info("hello %s", "from the child", extra={"job_id": 7, "obj": object()})
            try:
                raise ValueError("bad row")
            except ValueError:
                logger.exception("import failed")
            return os.getpid()

        child_pid = run(log_twice)
    finally:
        logger.removeHandler(collect)
        logger.removeHandler(file_handler)
        file_handler.close()
    assert [(pid, record.getMessage()) for pid, record in collect.seen] == [
        (os.getpid(), "hello from the child"),
        (os.getpid(), "import failed"),
    ]
    info, error = (record for _, record in collect.seen)
    assert (info.levelname, info.process, getattr(info, "job_id", None)) == ("INFO", child_pid, 7)
    assert not hasattr(info, "obj"), "attributes that are not JSON stay behind"
    assert error.levelno == logging.ERROR
    assert error.exc_text is not None
    assert "ValueError: bad row" in error.exc_text
    lines = written.read_text().splitlines()
    assert lines[:2] == ["hello from the child", "import failed"]
    assert "ValueError: bad row" in written.read_text()


def test_progress_crosses_the_pipe() -> None:
    seen: list[Progress] = []
    reporters: list[Any] = []

    def child() -> int:
        for step in (1, 2):
            reporters[0].report(Progress(done=step, total=2, message=f"step {step}"))
        return 3

    result = run_in_child(
        child,
        time_limit=30,
        prepare=reporters.append,
        on_progress=seen.append,
        should_abort=lambda: False,
    )
    assert result == 3
    assert [(item.done, item.message) for item in seen] == [(1, "step 1"), (2, "step 2")]


def test_a_child_that_dies_fails_the_job_with_its_exit_code() -> None:
    def die() -> None:
        os._exit(3)

    with pytest.raises(ChildTaskError, match=r"died \(exit code 3\)"):
        run(die)


def test_the_child_dies_with_the_worker(tmp_path: Path) -> None:
    """A worker killed with SIGKILL takes its task's child along: the job is rescued and
    may run elsewhere, so the orphan must not run on."""
    pid_file = tmp_path / "child.pid"
    script = (
        "import os, time, sys\n"
        "from backend.runtime.isolation import run_in_child\n"
        "def target():\n"
        f"    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "run_in_child(target, time_limit=60, prepare=lambda r: None,\n"
        "             on_progress=lambda p: None, should_abort=lambda: False)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child = psutil.Process(int(pid_file.read_text()))
    finally:
        worker.kill()
        worker.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        assert time.monotonic() < deadline, "the task's child outlived its worker"
        time.sleep(0.05)
