"""Serve an ASGI app under uvicorn on a free local port, in a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn


def _free_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


class _QuietServer(uvicorn.Server):
    """No signal handlers: the thread's owner stops it."""

    def install_signal_handlers(self) -> None:
        return None


@contextlib.contextmanager
def serving(app: Any, host: str = "127.0.0.1", startup_timeout: float = 15) -> Iterator[str]:
    """Run ``app`` until the block ends; yields its base URL (``http://127.0.0.1:PORT``)."""
    sock = _free_socket(host)
    port = sock.getsockname()[1]
    server = _QuietServer(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"standin:{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the stand-in server on port {port} did not start")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the stand-in server on port {port} did not start in time")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
